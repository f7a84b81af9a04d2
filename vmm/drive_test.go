package vmm

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/hv/hvtest"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/snapshot"
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
