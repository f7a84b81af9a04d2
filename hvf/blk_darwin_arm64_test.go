//go:build darwin && arm64

package hvf_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/vmm"
)

var (
	rootfsRE   = regexp.MustCompile(`SQUIB-GUEST-ROOTFS dev=\S+ type=(\S+) opts=(\S+) cmdline=(\S+)`)
	writtenRE  = regexp.MustCompile(`SQUIB-GUEST-ROOTFS-WRITTEN md5=([0-9a-f]{32}) size=(\d+)`)
	diskloopRE = regexp.MustCompile(`SQUIB-GUEST-DISKLOOP n=(\d+) ok=(\d+) bad=(\d+)`)
)

// rootImage writes the lab's root filesystem image (lab/build-rootfs.sh's
// rootfs.ext4.gz, named by SQUIB_GUEST_ROOTFS) unpacked to a file of its
// own, or skips the test if the environment does not name it.
func rootImage(t *testing.T) string {
	t.Helper()
	src := os.Getenv("SQUIB_GUEST_ROOTFS")
	if src == "" {
		t.Skip("SQUIB_GUEST_ROOTFS is unset: point it at the lab's rootfs.ext4.gz")
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rootfs.ext4")
	out, err := os.Create(path)
	if err == nil {
		_, err = io.Copy(out, z)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// rootConfig boots the lab kernel from image alone, running guest-init's
// test name.
func rootConfig(t *testing.T, image, test string) vmm.Config {
	kernel, _ := guestFiles(t)
	return vmm.Config{
		Kernel: loader.Bytes(kernel), VCPUs: 1, MemoryMiB: 128,
		Cmdline: "console=ttyAMA0 panic=-1 squib.test=" + test,
		Drives:  []blk.Config{{ID: "rootfs", Path: image, Root: true}},
	}
}

// TestRootDrive boots the lab guest from its ext4 root drive (virtio-blk,
// every notify an MMIO exit, its interrupt through hv_gic_set_spi): the
// guest finds / on /dev/vda read-write, writes a file, syncs and remounts
// / read-only, and powers off; the image has changed.
func TestRootDrive(t *testing.T) {
	image := rootImage(t)
	before, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	h := openHVF(t)
	plan, err := vmm.Prepare(rootConfig(t, image, "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	out := runToPowerOff(t, h, plan)
	root, written := rootfsRE.FindStringSubmatch(out), writtenRE.FindStringSubmatch(out)
	switch {
	case root == nil || written == nil:
		t.Fatalf("the guest did not report its root and the file it wrote:\n%s", out)
	case root[1] != "ext4" || !strings.HasPrefix(root[2], "rw") || !strings.Contains(root[3], "root=/dev/vda,rw"):
		t.Errorf("the guest's root: %q, want the ext4 drive vda, read-write", root[0])
	case written[2] != "262144":
		t.Errorf("the guest wrote %s bytes, want 262144", written[2])
	}
	after, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before, after) {
		t.Error("the image is unchanged after the guest wrote a file to it")
	}
}

// TestDiskSnapshot snapshots a guest running guest-init's disk loop from
// its root drive, copies the image while the guest is paused, and
// restores the snapshot (in this process, once the first VM is gone) onto
// the copy, moved there before the restored VM starts, as PATCH /drives
// does: the loop goes on from where it stopped with every checksum right,
// and the image the snapshot named stays as it was.
func TestDiskSnapshot(t *testing.T) {
	image := rootImage(t)
	h := openHVF(t)
	plan, err := vmm.Prepare(rootConfig(t, image, "diskloop"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var console syncBuffer
	m, err := vmm.New(h, plan, &console, log)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(nil)
	waitConsole(t, &console, diskloopRE, 2)
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := snapshot.Files{State: filepath.Join(dir, "vm.state"), Memory: filepath.Join(dir, "vm.mem")}
	if _, err := m.Snapshot(f, false); err != nil {
		t.Fatal(err)
	}
	atSnapshot, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(dir, "clone.ext4")
	if err := os.WriteFile(clone, atSnapshot, 0o644); err != nil {
		t.Fatal(err)
	}
	last := diskloopRE.FindAllStringSubmatch(console.String(), -1)
	n, _ := strconv.Atoi(last[len(last)-1][1])
	m.Stop()
	m.Wait()

	var restored syncBuffer
	r, err := vmm.Restore(h, f, vmm.RestoreOptions{}, &restored, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.UpdateDrive("rootfs", clone); err != nil {
		t.Fatal(err)
	}
	r.Start(nil)
	waitConsole(t, &restored, diskloopRE, 3)
	r.Stop()
	r.Wait()
	for i, l := range diskloopRE.FindAllStringSubmatch(restored.String(), -1)[:3] {
		if got, _ := strconv.Atoi(l[1]); got != n+1+i || l[2] != "4" || l[3] != "0" {
			t.Errorf("restored loop line %d: %q; want round %d with 4 files right and none bad", i, l[0], n+1+i)
		}
	}
	if now, err := os.ReadFile(image); err != nil || !bytes.Equal(now, atSnapshot) {
		t.Errorf("the snapshot's own image changed after the restore moved to a copy (%v)", err)
	}
}
