package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// specialFiles makes, in dir, files that are not regular ones: a FIFO with
// no writer or reader, a directory, and, where the test may create device
// nodes, a character device like /dev/zero. /dev/zero itself is added when
// it exists. It returns them by name.
func specialFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{"FIFO": filepath.Join(dir, "fifo"), "directory": filepath.Join(dir, "dir")}
	if err := unix.Mkfifo(files["FIFO"], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(files["directory"], 0o700); err != nil {
		t.Fatal(err)
	}
	if dev := filepath.Join(dir, "zero"); unix.Mknod(dev, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5))) == nil {
		files["character device"] = dev
	} else {
		t.Log("cannot make a device node here; testing /dev/zero only")
	}
	if fi, err := os.Stat("/dev/zero"); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		files["/dev/zero"] = "/dev/zero"
	}
	// Should an open wait on the FIFO after all, a reader and a writer
	// release it, so the test fails rather than hangs.
	t.Cleanup(func() {
		if f, err := os.OpenFile(files["FIFO"], os.O_RDWR|unix.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	return files
}

// promptly runs f and fails the test if it does not return within limit.
func promptly(t *testing.T, limit time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("%s: still running after %v", what, limit)
		return nil
	}
}

// TestInputsMustBeRegular: every reader of snapshot files, the restore's
// (Load, MapMemory, LoadMemory) included, refuses anything but a regular
// file at once, in one line naming it, and never waits on a FIFO; Merge and
// Create refuse such outputs before writing anything, and leave them alone.
func TestInputsMustBeRegular(t *testing.T) {
	dir := t.TempDir()
	base, d1, _, _, _, _ := chain(t, dir)
	special := specialFiles(t, t.TempDir())
	for kind, path := range special {
		refused := func(what string, f func() error) {
			t.Helper()
			err := promptly(t, 5*time.Second, kind+": "+what, f)
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrNotSnapshot) || fe.Path != path ||
				!strings.Contains(err.Error(), "not a regular file") || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: %s = %v; want one line, an ErrNotSnapshot *FormatError naming %s: not a regular file", kind, what, err, path)
			}
		}
		refused("ReadState", func() error { _, err := ReadState(path); return err })
		refused("Describe", func() error { _, err := Describe(path); return err })
		refused("Verify, state", func() error { _, err := Verify(path, base.Memory); return err })
		refused("Verify, memory", func() error { _, err := Verify(base.State, path); return err })
		refused("Load, state", func() error { _, err := Load(kvm, Files{path, base.Memory}); return err })
		refused("Load, memory", func() error { _, err := Load(kvm, Files{base.State, path}); return err })
		refused("Load, diff memory", func() error { _, err := Load(kvm, base, Files{d1.State, path}); return err })
		refused("MapMemory", func() error { _, err := MapMemory(path); return err })
		refused("LoadMemory", func() error { return LoadMemory(path, make([]byte, 1<<20)) })
		out := files(t.TempDir(), "out")
		refused("Merge, base state", func() error { _, err := Merge(Files{path, base.Memory}, []Files{d1}, out); return err })
		refused("Merge, base memory", func() error { _, err := Merge(Files{base.State, path}, []Files{d1}, out); return err })
		refused("Merge, diff state", func() error { _, err := Merge(base, []Files{{path, d1.Memory}}, out); return err })
		refused("Merge, diff memory", func() error { _, err := Merge(base, []Files{{d1.State, path}}, out); return err })
		if ents, _ := os.ReadDir(filepath.Dir(out.State)); len(ents) != 0 {
			t.Errorf("%s: refused merges wrote %d files", kind, len(ents))
		}

		if strings.HasPrefix(path, "/dev/") {
			continue // not a place to write into, even to see it refused
		}
		before, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		outDir := t.TempDir()
		outputs := map[string]Files{
			"state":  {State: path, Memory: filepath.Join(outDir, "m.mem")},
			"memory": {State: filepath.Join(outDir, "m.state"), Memory: path},
		}
		for which, out := range outputs {
			for what, f := range map[string]func() error{
				"Merge":  func() error { _, err := Merge(base, []Files{d1}, out); return err },
				"Create": func() error { return Create(out, newState(t, ""), make([]byte, 1<<20), CreateOptions{}) },
			} {
				err := promptly(t, 5*time.Second, kind+": "+what, f)
				if err == nil || !strings.Contains(err.Error(), path+": ") || !strings.Contains(err.Error(), "not a regular file") {
					t.Errorf("%s: %s with it as the %s file = %v; want a refusal naming it", kind, what, which, err)
				}
			}
		}
		if after, err := os.Lstat(path); err != nil || !os.SameFile(before, after) || after.Mode() != before.Mode() {
			t.Errorf("%s: refused outputs replaced it: %v, %v", kind, after, err)
		}
		if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
			t.Errorf("%s: refused outputs left %d files behind", kind, len(ents))
		}
	}
	// Regular files behind symbolic links are fine, for input and output.
	link := filepath.Join(t.TempDir(), "link.state")
	if err := os.Symlink(base.State, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(link, base.Memory); err != nil {
		t.Errorf("Verify through a symbolic link: %v", err)
	}
}
