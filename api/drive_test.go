package api

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/hv/hvtest"
)

// TestDrives configures drives as Firecracker's clients do: PUT
// /drives/{drive_id} bodies parsed as Firecracker parses them, the id in
// the path and body the same, one root device, GET /vm/config showing
// them with their defaults; the microVM starts with them (root first, on
// the command line), and PUT /drives is refused after the start.
func TestDrives(t *testing.T) {
	ctl := NewController(Options{Log: io.Discard, Console: io.Discard,
		OpenHypervisor: func() (hv.Hypervisor, error) { return &hvtest.Hypervisor{}, nil }})
	t.Cleanup(ctl.Close)
	t.Cleanup(ctl.Stop)
	c := serve(t, ctl)
	dir := t.TempDir()
	disk, ro := filepath.Join(dir, "disk.img"), filepath.Join(dir, "ro.img")
	for _, p := range []string{disk, ro} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const deser = "An error occurred when deserializing the json body of a request: "
	refuse := func(path, body, want string) {
		t.Helper()
		err := within(c, "PUT", path, json.RawMessage(body), nil)
		if f, ok := err.(*Fault); !ok || !strings.Contains(f.Message, want) {
			t.Errorf("PUT %s %s: %v, want a fault with %q", path, body, err, want)
		}
	}
	put := func(path, body string) {
		t.Helper()
		if err := within(c, "PUT", path, json.RawMessage(body), nil); err != nil {
			t.Fatalf("PUT %s %s: %v", path, body, err)
		}
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	refuse("/drives/data", `{"drive_id": "data", "path_on_host": `+q(disk)+`}`, deser+"missing field `is_root_device`.")
	refuse("/drives/data", `{"path_on_host": `+q(disk)+`, "is_root_device": false}`, deser+"missing field `drive_id`.")
	refuse("/drives/data", `{"drive_id": "other", "path_on_host": `+q(disk)+`, "is_root_device": false}`, "The id from the path does not match the id from the body!")
	refuse("/drives/da-ta", `{"drive_id": "da-ta", "path_on_host": `+q(disk)+`, "is_root_device": false}`, `invalid drive id "da-ta"`)
	refuse("/drives/data", `{"drive_id": "data", "is_root_device": false}`, "Drive config error: path_on_host is required")
	refuse("/drives/data", `{"drive_id": "data", "path_on_host": "/nonexistent", "is_root_device": false}`, "Unable to open the block device backing file")
	refuse("/drives/data", `{"drive_id": "data", "path_on_host": `+q(dir)+`, "is_root_device": false}`, "is neither a regular file nor a block device")
	refuse("/drives/data", `{"drive_id": "data", "path_on_host": `+q(disk)+`, "is_root_device": false, "cache_type": "Writethrough"}`, deser+"unknown variant `Writethrough`, expected `Unsafe` or `Writeback`")
	refuse("/drives/data", `{"drive_id": "data", "path_on_host": `+q(disk)+`, "is_root_device": false, "io_engine": "Uring"}`, deser+"unknown variant `Uring`, expected `Sync` or `Async`")
	refuse("/drives/data", `{"drive_id": "data", "path_on_host": `+q(disk)+`, "is_root_device": false, "colour": 1}`, deser+`json: unknown field "colour"`)
	refuse("/drives/data", `{"drive_id": "data", "socket": "/tmp/vhost", "is_root_device": false}`, "vhost-user")
	refuse("/drives/data", `{"drive_id": "data", "path_on_host": `+q(disk)+`, "is_root_device": false, "rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}`, "squibd does not rate-limit drives")

	put("/drives/data", `{"drive_id": "data", "path_on_host": `+q(ro)+`, "is_root_device": false, "is_read_only": true, "io_engine": "Async"}`)
	put("/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": `+q(disk)+`, "is_root_device": true, "cache_type": "Writeback", "partuuid": "0eaa91a0-01"}`)
	refuse("/drives/data", `{"drive_id": "data", "path_on_host": `+q(ro)+`, "is_root_device": true}`, "Drive config error: A root block device already exists!")
	put("/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": `+q(disk)+`, "is_root_device": true, "cache_type": "Writeback"}`) // replaces it
	var full struct{ Drives []map[string]any }
	if err := within(c, "GET", "/vm/config", nil, &full); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(full.Drives)
	want := fmt.Sprintf("[map[cache_type:Unsafe drive_id:data io_engine:Async is_read_only:true is_root_device:false path_on_host:%s] "+
		"map[cache_type:Writeback drive_id:rootfs io_engine:Sync is_read_only:false is_root_device:true path_on_host:%s]]", ro, disk)
	if got != want {
		t.Errorf("GET /vm/config drives:\n%s\nwant\n%s", got, want)
	}

	kernel := writeImage(t, dir)
	put("/machine-config", `{"vcpu_count": 1, "mem_size_mib": 64}`)
	put("/boot-source", fmt.Sprintf(`{"kernel_image_path": %q, "boot_args": "console=ttyAMA0"}`, kernel))
	put("/actions", `{"action_type": "InstanceStart"}`)
	ctl.mu.Lock()
	cfg := ctl.m.Config()
	ctl.mu.Unlock()
	if len(cfg.Drives) != 2 || cfg.Drives[0] != (blk.Config{ID: "rootfs", Path: disk, Root: true, Cache: blk.Writeback}) ||
		cfg.Drives[1] != (blk.Config{ID: "data", Path: ro, ReadOnly: true}) || cfg.Cmdline != "console=ttyAMA0 root=/dev/vda rw" {
		t.Errorf("started with drives %+v, command line %q", cfg.Drives, cfg.Cmdline)
	}
	refuse("/drives/data", `{"drive_id": "data", "path_on_host": `+q(ro)+`, "is_root_device": false}`, errAfterStart.Error())
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
	ctl := NewController(Options{Log: io.Discard, Console: io.Discard,
		OpenHypervisor: func() (hv.Hypervisor, error) { return &hvtest.Hypervisor{}, nil }})
	t.Cleanup(ctl.Close)
	t.Cleanup(ctl.Stop)
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
