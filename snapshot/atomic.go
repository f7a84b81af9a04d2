package snapshot

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// staged is a complete, synced file under a temporary name in the directory
// of its final path, waiting to be published.
type staged struct{ tmp, final string }

// stage writes a file that is to appear at final. It creates a temporary file
// (mode 0600: snapshots hold guest secrets) in final's directory, lets write
// fill it, then syncs and closes it, adding the time the sync took to synced
// (when not nil). On any error, the temporary file is removed and nothing at
// final has changed.
func stage(final string, synced *time.Duration, write func(f *os.File) error) (*staged, error) {
	f, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("snapshot: creating %s: %w", final, err)
	}
	err = write(f)
	if err == nil {
		t := time.Now()
		err = f.Sync()
		if synced != nil {
			*synced += time.Since(t)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("snapshot: writing %s: %w", final, err)
	}
	return &staged{tmp: f.Name(), final: final}, nil
}

// publish renames staged files to their final names, in order, and syncs
// their directories so the names survive a crash. Files it could not rename
// are removed. Callers stage every file of a snapshot before publishing any,
// so a failed write leaves an earlier snapshot at the same paths untouched.
func publish(files ...*staged) error {
	dirs := map[string]bool{}
	for i, s := range files {
		if err := os.Rename(s.tmp, s.final); err != nil {
			discard(files[i:]...)
			return fmt.Errorf("snapshot: publishing %s: %w", s.final, err)
		}
		dirs[filepath.Dir(s.final)] = true
	}
	for dir := range dirs {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

// discard removes staged files that will not be published.
func discard(files ...*staged) {
	for _, s := range files {
		if s != nil {
			os.Remove(s.tmp)
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("snapshot: syncing directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapshot: syncing directory %s: %w", dir, err)
	}
	return nil
}
