package api

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/hv/hvtest"
)

// TestDrives configures drives as Firecracker's clients do: PUT
// /drives/{drive_id} bodies parsed as Firecracker parses them, the id in
// the path and body the same, one root device, GET /vm/config showing
// them with their defaults in the order the guest gets them (the root
// drive first, before and after the start); the microVM starts with them
// (root first, on the command line), and PUT /drives is refused after the
// start.
func TestDrives(t *testing.T) {
	ctl := newTestController(t, &hvtest.Hypervisor{})
	c := serve(t, ctl)
	dir := t.TempDir()
	disk, ro := filepath.Join(dir, "disk.img"), filepath.Join(dir, "ro.img")
	for _, p := range []string{disk, ro} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(disk)+`}`, deser+"missing field `is_root_device`.")
	refuse(t, c, "PUT", "/drives/data", `{"path_on_host": `+jsonString(disk)+`, "is_root_device": false}`, deser+"missing field `drive_id`.")
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "other", "path_on_host": `+jsonString(disk)+`, "is_root_device": false}`, "The id from the path does not match the id from the body!")
	refuse(t, c, "PUT", "/drives/da-ta", `{"drive_id": "da-ta", "path_on_host": `+jsonString(disk)+`, "is_root_device": false}`, `invalid drive id "da-ta"`)
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "is_root_device": false}`, "Drive config error: path_on_host is required")
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": "/nonexistent", "is_root_device": false}`, "Unable to open the block device backing file")
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(dir)+`, "is_root_device": false}`, "is neither a regular file nor a block device")
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(disk)+`, "is_root_device": false, "cache_type": "Writethrough"}`, deser+"unknown variant `Writethrough`, expected `Unsafe` or `Writeback`")
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(disk)+`, "is_root_device": false, "io_engine": "Uring"}`, deser+"unknown variant `Uring`, expected `Sync` or `Async`")
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(disk)+`, "is_root_device": false, "colour": 1}`, deser+`json: unknown field "colour"`)
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "socket": "/tmp/vhost", "is_root_device": false}`, "vhost-user")
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(disk)+`, "is_root_device": false, "rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}`, "squibd does not rate-limit drives")

	mustDo(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(ro)+`, "is_root_device": false, "is_read_only": true, "io_engine": "Async"}`)
	mustDo(t, c, "PUT", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": `+jsonString(disk)+`, "is_root_device": true, "cache_type": "Writeback", "partuuid": "0eaa91a0-01"}`)
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(ro)+`, "is_root_device": true}`, "Drive config error: A root block device already exists!")
	mustDo(t, c, "PUT", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": `+jsonString(disk)+`, "is_root_device": true, "cache_type": "Writeback"}`) // replaces it
	drives := func() string {
		t.Helper()
		var full struct{ Drives []map[string]any }
		if err := within(c, "GET", "/vm/config", nil, &full); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(full.Drives)
	}
	want := fmt.Sprintf("[map[cache_type:Writeback drive_id:rootfs io_engine:Sync is_read_only:false is_root_device:true path_on_host:%s] "+
		"map[cache_type:Unsafe drive_id:data io_engine:Async is_read_only:true is_root_device:false path_on_host:%s]]", disk, ro)
	if got := drives(); got != want {
		t.Errorf("GET /vm/config drives:\n%s\nwant\n%s", got, want)
	}

	kernel := writeImage(t, dir)
	mustDo(t, c, "PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 64}`)
	mustDo(t, c, "PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path": %q, "boot_args": "console=ttyAMA0"}`, kernel))
	mustDo(t, c, "PUT", "/actions", `{"action_type": "InstanceStart"}`)
	ctl.mu.Lock()
	cfg := ctl.m.Config()
	ctl.mu.Unlock()
	if len(cfg.Drives) != 2 || cfg.Drives[0] != (blk.Config{ID: "rootfs", Path: disk, Root: true, Cache: blk.Writeback}) ||
		cfg.Drives[1] != (blk.Config{ID: "data", Path: ro, ReadOnly: true}) || cfg.Cmdline != "console=ttyAMA0 root=/dev/vda rw" {
		t.Errorf("started with drives %+v, command line %q", cfg.Drives, cfg.Cmdline)
	}
	refuse(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(ro)+`, "is_root_device": false}`, errAfterStart.Error())
	if got := drives(); got != want {
		t.Errorf("GET /vm/config drives after the start:\n%s\nwant\n%s", got, want)
	}
}

// TestDrivesConfigFile: --config-file's drives (GET /vm/config's schema)
// configure the drives it starts with.
func TestDrivesConfigFile(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(fmt.Appendf(nil, `{"boot-source": {"kernel_image_path": %q, "boot_args": "quiet"},
		"machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
		"drives": [{"drive_id": "rootfs", "path_on_host": %q, "is_root_device": true, "is_read_only": true, "partuuid": "1234-01"}]}`,
		writeImage(t, dir), disk))
	if err != nil {
		t.Fatal(err)
	}
	ctl := newTestController(t, &hvtest.Hypervisor{})
	if err := ctl.Configure(cfg); err != nil {
		t.Fatal(err)
	}
	ctl.mu.Lock()
	got := ctl.m.Config()
	ctl.mu.Unlock()
	if len(got.Drives) != 1 || got.Drives[0] != (blk.Config{ID: "rootfs", Path: disk, Root: true, ReadOnly: true, PartUUID: "1234-01"}) ||
		got.Cmdline != "quiet root=PARTUUID=1234-01 ro" {
		t.Errorf("started with drives %+v, command line %q", got.Drives, got.Cmdline)
	}
}

// TestPatchDrive changes a drive's file as Firecracker's clients do, with
// PATCH /drives/{drive_id}: refused before the start; after it, bodies
// parsed as Firecracker parses them, an unknown drive, a missing file, a
// FIFO and a rate limiter that would limit refused with the drive left as
// it was, and a new file swapped in: GET /vm/config names it (io_engine
// kept), the old file's lock is gone, and it can be changed again while
// paused. A snapshot then names the new file: a squibd that loads it shows
// the drives in the guest's order, and can change them too.
func TestPatchDrive(t *testing.T) {
	h := &hvtest.Hypervisor{}
	ctl, c := serveTestController(t, h)
	dir := t.TempDir()
	img := func(name string, size int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root, data, next, last := img("root.img", 1<<20), img("data.img", 1<<20), img("next.img", 2<<20), img("last.img", 3<<20)
	// drives is GET /vm/config's drives: id, file and io_engine each.
	drives := func(c *Client) string {
		t.Helper()
		var full FullConfig
		if err := within(c, "GET", "/vm/config", nil, &full); err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, d := range full.Drives {
			s = append(s, *d.DriveID+" "+*d.PathOnHost+" "+*d.IOEngine)
		}
		return strings.Join(s, ", ")
	}
	mustDo(t, c, "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(data)+`, "is_root_device": false, "io_engine": "Async"}`)
	mustDo(t, c, "PUT", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": `+jsonString(root)+`, "is_root_device": true}`)
	refuse(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(next)+`}`, errBeforeStart.Error())
	mustDo(t, c, "PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 64}`)
	mustDo(t, c, "PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path": %q}`, writeImage(t, dir)))
	mustDo(t, c, "PUT", "/actions", `{"action_type": "InstanceStart"}`)

	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	refuse(t, c, "PATCH", "/drives/data", `{"path_on_host": `+jsonString(next)+`}`, deser+"missing field `drive_id`.")
	refuse(t, c, "PATCH", "/drives/data", `{"drive_id": "rootfs", "path_on_host": `+jsonString(next)+`}`, "The id from the path does not match the id from the body!")
	refuse(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(next)+`, "is_read_only": true}`, deser+`json: unknown field "is_read_only"`)
	refuse(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(next)+`, "rate_limiter": {"bandwidth": {"size": 1024, "refill_time": 100}}}`,
		"Drive config error: squibd does not rate-limit drives")
	refuse(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "rate_limiter": {"ops": {"size": 1}}}`, deser+"missing field `refill_time`.")
	refuse(t, c, "PATCH", "/drives/scratch", `{"drive_id": "scratch", "path_on_host": `+jsonString(next)+`}`, `Unable to patch the block device: the microVM has no drive "scratch"`)
	refuse(t, c, "PATCH", "/drives/data", `{"drive_id": "data"}`, "Unable to patch the block device: drive data has no vhost-user backend to refresh")
	refuse(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(filepath.Join(dir, "missing"))+`}`, "Unable to open the block device backing file")
	refuse(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(fifo)+`}`, "is neither a regular file nor a block device")
	if locked, err := blk.Open(blk.Config{ID: "x", Path: next}, nil); err != nil {
		t.Fatal(err)
	} else {
		refuse(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(next)+`}`, "drive data: "+next+" is locked by another process")
		locked.Close()
	}
	// A rate limiter that does not limit leaves the drive as it is.
	mustDo(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "rate_limiter": {"ops": {"size": 0, "refill_time": 100}}}`)
	want := "rootfs " + root + " Sync, data " + data + " Async"
	if got := drives(c); got != want {
		t.Errorf("drives after the refused patches: %s, want %s", got, want)
	}

	mustDo(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(next)+`}`)
	want = "rootfs " + root + " Sync, data " + next + " Async"
	if got := drives(c); got != want {
		t.Errorf("drives after the patch: %s, want %s", got, want)
	}
	ctl.mu.Lock()
	cfg := ctl.m.Config()
	ctl.mu.Unlock()
	if cfg.Drives[1].Path != next {
		t.Errorf("the machine's drives %+v, want data on %s", cfg.Drives, next)
	}
	if d, err := blk.Open(blk.Config{ID: "x", Path: data}, nil); err != nil {
		t.Errorf("the old file is still locked: %v", err)
	} else {
		d.Close()
	}
	mustDo(t, c, "PATCH", "/vm", `{"state": "Paused"}`)
	mustDo(t, c, "PATCH", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(last)+`}`)
	state, mem := filepath.Join(dir, "vm.state"), filepath.Join(dir, "vm.mem")
	mustDo(t, c, "PUT", "/snapshot/create", `{"snapshot_path": `+jsonString(state)+`, "mem_file_path": `+jsonString(mem)+`}`)
	ctl.Stop()

	_, c2 := serveTestController(t, h)
	mustDo(t, c2, "PUT", "/snapshot/load", `{"snapshot_path": `+jsonString(state)+`, "mem_backend": {"backend_type": "File", "backend_path": `+jsonString(mem)+`}}`)
	if got, want := drives(c2), "rootfs "+root+" Sync, data "+last+" Sync"; got != want {
		t.Errorf("drives of the loaded snapshot: %s, want %s", got, want)
	}
	mustDo(t, c2, "PATCH", "/drives/data", `{"drive_id": "data", "path_on_host": `+jsonString(next)+`}`)
	mustDo(t, c2, "PATCH", "/vm", `{"state": "Resumed"}`)
	if got, want := drives(c2), "rootfs "+root+" Sync, data "+next+" Sync"; got != want {
		t.Errorf("drives of the loaded snapshot after a patch: %s, want %s", got, want)
	}
}

// writeImage writes an arm64 Image header into dir: placed, never run.
func writeImage(t *testing.T, dir string) string {
	t.Helper()
	kernel := filepath.Join(dir, "Image")
	image := make([]byte, 4096)
	binary.LittleEndian.PutUint64(image[0x10:], 8<<20)
	binary.LittleEndian.PutUint32(image[0x38:], 0x644D5241)
	if err := os.WriteFile(kernel, image, 0o644); err != nil {
		t.Fatal(err)
	}
	return kernel
}
