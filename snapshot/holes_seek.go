//go:build linux || darwin

package snapshot

import (
	"os"

	"golang.org/x/sys/unix"
)

// seekData returns the offset of the first data at or after off; an error
// wrapping ENXIO when there is none.
func seekData(f *os.File, off int64) (int64, error) { return f.Seek(off, unix.SEEK_DATA) }

// seekHole returns the offset of the first hole at or after off (the end of
// the file counts as one).
func seekHole(f *os.File, off int64) (int64, error) { return f.Seek(off, unix.SEEK_HOLE) }
