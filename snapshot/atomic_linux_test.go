package snapshot

import (
	"errors"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
)

// TestCreateDiskFull fills a real 1 MiB tmpfs (root only): the snapshot that
// does not fit fails with ENOSPC and leaves the one before it intact.
func TestCreateDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	f := files(dir, "vm")
	rng := rand.New(rand.NewPCG(9, 10))
	ram := make([]byte, 1<<20)
	fillRandom(rng, ram[:256<<10]) // fits
	st := newState(t, "")
	if err := Create(f, st, ram, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fillRandom(rng, ram) // does not fit beside the first
	if err := Create(f, newState(t, ""), ram, CreateOptions{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Create() on a full disk = %v; want ENOSPC", err)
	}
	checkIntact(t, dir, f, st.Header.ID)
}
