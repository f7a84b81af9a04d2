package blk

import (
	"os"

	"golang.org/x/sys/unix"
)

// zero makes n bytes at off read as zeros by punching a hole (the file
// keeps its size), or, where the file system or block device cannot,
// by writing zeros.
func zero(f *os.File, off, n int64) error {
	if unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n) == nil {
		return nil
	}
	return zeroFallback(f, off, n)
}

func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
