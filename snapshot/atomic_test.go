package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// names lists the files in dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// checkIntact verifies that f still holds the snapshot with ID id, and that
// dir holds nothing but f's two files.
func checkIntact(t *testing.T, dir string, f Files, id string) {
	t.Helper()
	r, err := Verify(f.State, f.Memory)
	if err != nil || r.Header.ID != id {
		t.Errorf("the earlier snapshot is damaged: %v (ID %s, want %s)", err, r.Header.ID, id)
	}
	if got, want := names(t, dir), []string{filepath.Base(f.Memory), filepath.Base(f.State)}; !slices.Equal(got, want) {
		t.Errorf("directory holds %q; want %q", got, want)
	}
}

// TestPublishFailure: a write that fails (here with ENOSPC, from a fake
// writer) leaves the earlier snapshot intact and no file behind.
func TestPublishFailure(t *testing.T) {
	dir := t.TempDir()
	f := files(dir, "vm")
	st := newState(t, "")
	if err := Create(f, st, make([]byte, 1<<20), CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	full := func(f *os.File) error {
		if _, err := f.Write([]byte("half a snapshot")); err != nil {
			return err
		}
		return &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	mem, err := stage(f.Memory, nil, func(*os.File) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stage(f.State, nil, full); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("stage() = %v; want ENOSPC", err)
	}
	discard(mem) // what Create does when the second file fails
	checkIntact(t, dir, f, st.Header.ID)
}
