package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Snapshot files travel, so every file this package reads is treated as
// hostile, its type included: only a regular file is read. A FIFO would block
// the open until some writer appeared (and then feed anything), a directory
// or device is no snapshot, and opening some devices has effects of its own
// (a tape rewinds, a terminal becomes the controlling one). So an input is
// looked at before it is opened, opened without blocking (O_NONBLOCK, in case
// a FIFO took its place in between) and without becoming a controlling
// terminal, and looked at again once open.

// openInput opens the regular file at path for reading and returns it with
// its FileInfo. Anything else is refused with an ErrNotSnapshot
// *FormatError naming path, without being opened; a path that does not exist
// gives an error wrapping fs.ErrNotExist.
func openInput(path string) (*os.File, fs.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	if fi, err = f.Stat(); err == nil {
		err = regular(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	// A regular file reads alike either way, but the rest of the package
	// expects the ordinary blocking mode; Fd puts the descriptor back in it.
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("snapshot: %s: %w", path, err)
	}
	return f, fi, nil
}

// regular returns an ErrNotSnapshot *FormatError unless fi is a regular
// file's.
func regular(path string, fi fs.FileInfo) error {
	if fi.Mode().IsRegular() {
		return nil
	}
	return &FormatError{Path: path, Err: ErrNotSnapshot, Problem: kindOf(fi.Mode()) + ", not a regular file"}
}

// kindOf names the type of a file that is not a regular one.
func kindOf(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "a special file"
}

// checkOutput returns an error unless path may receive a file this package
// writes: it does not exist, or is a regular file (or a symbolic link, which
// the final rename replaces, leaving its target alone). A directory, FIFO,
// device or socket is refused before anything is written: the rename would
// fail only after all the work, or replace a device node.
func checkOutput(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("snapshot: %w", err)
	case fi.Mode().IsRegular() || fi.Mode()&fs.ModeSymlink != 0:
		return nil
	}
	return fmt.Errorf("snapshot: %s: %s, not a regular file: refusing to replace it", path, kindOf(fi.Mode()))
}
