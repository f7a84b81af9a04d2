package vmm

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/hv/hvtest"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/virtio/virtiotest"
)

// TestRootDrive: the root drive goes first and onto the command line as
// Firecracker puts it; a second root device and a repeated id are refused.
func TestRootDrive(t *testing.T) {
	for _, c := range []struct {
		drives  []blk.Config
		cmdline string
		first   string
		err     string
	}{
		{[]blk.Config{{ID: "data"}, {ID: "rootfs", Root: true}}, "x root=/dev/vda rw", "rootfs", ""},
		{[]blk.Config{{ID: "rootfs", Root: true, ReadOnly: true, PartUUID: "0eaa91a0-01"}}, "x root=PARTUUID=0eaa91a0-01 ro", "rootfs", ""},
		{[]blk.Config{{ID: "data", PartUUID: "ignored"}}, "x", "data", ""},
		{[]blk.Config{{ID: "a", Root: true}, {ID: "b", Root: true}}, "", "", "drive b: drive a is already the root device"},
		{[]blk.Config{{ID: "a"}, {ID: "a"}}, "", "", `drive "a": drive ids must be given and unique`},
	} {
		cfg := Config{Cmdline: "x", Drives: c.drives}
		err := cfg.rootDrive()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: error %v, want %q", c.drives, err, c.err)
			}
			continue
		}
		if err != nil || cfg.Cmdline != c.cmdline || cfg.Drives[0].ID != c.first {
			t.Errorf("%+v: command line %q, first drive %s, %v; want %q, %s", c.drives, cfg.Cmdline, cfg.Drives[0].ID, err, c.cmdline, c.first)
		}
	}
}

// TestDriveSnapshotRestore: a drive's configuration and file size are in
// its snapshot entry; a restore reopens the file, and refuses it resized
// or missing, naming the drive.
func TestDriveSnapshotRestore(t *testing.T) {
	h := &hvtest.Hypervisor{}
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	drives := []blk.Config{{ID: "rootfs", Path: img, Root: true, Cache: blk.Writeback}}
	plan, err := Prepare(Config{Kernel: loader.Bytes(testKernel(8 << 20)), Cmdline: "x", VCPUs: 1, MemoryMiB: 64, Drives: drives})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(h, plan, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(h, plan, io.Discard, log); err == nil || !strings.Contains(err.Error(), "drive rootfs: "+img+" is locked") {
		t.Errorf("a second machine on the image: %v, want it refused as locked", err)
	}
	m.Start(nil)
	files := snapshot.Files{State: filepath.Join(dir, "vm.state"), Memory: filepath.Join(dir, "vm.mem")}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Snapshot(files, false); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if _, err := m.Wait(); err != nil {
		t.Fatal(err)
	}

	m2, err := Restore(h, files, RestoreOptions{}, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := m2.Config().Drives; len(got) != 1 || got[0] != drives[0] {
		t.Errorf("restored drives %+v, want %+v", got, drives)
	}
	m2.Stop()
	m2.Wait()

	if err := os.Truncate(img, 2<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(h, files, RestoreOptions{}, io.Discard, log); err == nil || !strings.Contains(err.Error(), "drive rootfs: "+img+" is 2097152 bytes, but it was 1048576 bytes") {
		t.Errorf("restore with the image resized: %v", err)
	}
	os.Remove(img)
	if _, err := Restore(h, files, RestoreOptions{}, io.Discard, log); err == nil || !strings.Contains(err.Error(), "drive rootfs: open "+img) {
		t.Errorf("restore with the image missing: %v", err)
	}
}

// TestUpdateDrive swaps a drive's image on a running machine, as PATCH
// /drives does: the guest's driver sees the new capacity under a new
// ConfigGeneration, with a configuration change interrupt on the drive's
// SPI; the old image's lock is gone, and Config names the new file. An
// unknown drive and a missing file are refused, the drive kept as it was.
// On a paused machine the device stays quiesced (a snapshot can be taken
// at once), and the snapshot names the new file at its size.
func TestUpdateDrive(t *testing.T) {
	h := &hvtest.Hypervisor{}
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	img := func(name string, size int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root, data, next, last := img("root.img", 1<<20), img("data.img", 1<<20), img("next.img", 2<<20), img("last.img", 3<<20)
	plan, err := Prepare(Config{Kernel: loader.Bytes(testKernel(8 << 20)), Cmdline: "x", VCPUs: 1, MemoryMiB: 64,
		Drives: []blk.Config{{ID: "data", Path: data}, {ID: "rootfs", Path: root, Root: true}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(h, plan, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { m.Stop(); m.Wait() }()
	m.Start(nil)
	var v *virtioDevice
	for _, d := range m.devices {
		if d.Name() == driveName("data") {
			v = d.(*virtioDevice)
		}
	}
	drv := virtiotest.Start(t, v.Transport, m.ram, m.ram.Bytes(), 2)
	gen := drv.R(0x0fc)
	if err := m.UpdateDrive("data", next); err != nil {
		t.Fatal(err)
	}
	if c := v.Read(0x100, 8); c != 2<<20/512 || drv.R(0x0fc) == gen || drv.R(0x060)&2 == 0 {
		t.Errorf("after the update: capacity %d, generation %d (was %d), interrupt status %#x", c, drv.R(0x0fc), gen, drv.R(0x060))
	}
	if !slices.Contains(h.Events(), fmt.Sprintf("spi %d true", v.spi.INTID())) {
		t.Errorf("no interrupt on the drive's SPI %d: %v", v.spi.INTID(), h.Events())
	}
	if d, err := blk.Open(blk.Config{ID: "x", Path: data}, nil); err != nil {
		t.Errorf("the old image is still locked: %v", err)
	} else {
		d.Close()
	}
	if got := m.Config().Drives; got[0].Path != root || got[1].Path != next {
		t.Errorf("Config().Drives = %+v, want data on %s", got, next)
	}
	if err := m.UpdateDrive("nope", next); err == nil || !strings.Contains(err.Error(), `no drive "nope"`) {
		t.Errorf("UpdateDrive of an unknown drive: %v", err)
	}
	gen = drv.R(0x0fc)
	if err := m.UpdateDrive("data", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "drive data: open ") {
		t.Errorf("UpdateDrive to a missing file: %v", err)
	}
	if c := v.Read(0x100, 8); c != 2<<20/512 || drv.R(0x0fc) != gen || m.Config().Drives[1].Path != next {
		t.Errorf("after a failed update: capacity %d, generation %d (was %d), drives %+v", c, drv.R(0x0fc), gen, m.Config().Drives)
	}

	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := m.UpdateDrive("data", last); err != nil {
		t.Fatal(err)
	}
	files := snapshot.Files{State: filepath.Join(dir, "vm.state"), Memory: filepath.Join(dir, "vm.mem")}
	if _, err := m.Snapshot(files, false); err != nil {
		t.Fatalf("snapshot after an update while paused: %v", err)
	}
	m.Stop()
	m.Wait()
	m2, err := Restore(h, files, RestoreOptions{}, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { m2.Stop(); m2.Wait() }()
	if got := m2.Config().Drives; len(got) != 2 || got[1].Path != last {
		t.Errorf("restored drives %+v, want data on %s", got, last)
	}
	// A restored machine, not started: its drives can change too.
	if err := m2.UpdateDrive("data", next); err != nil || m2.Config().Drives[1].Path != next {
		t.Errorf("update on a restored machine: %v, drives %+v", err, m2.Config().Drives)
	}
}
