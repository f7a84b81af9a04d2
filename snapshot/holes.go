package snapshot

import (
	"errors"
	"os"
	"syscall"
)

// Memory files are sparse: blocks of zeros are holes, and a snapshot of a
// large, mostly idle guest is mostly holes. What walks a memory file's
// blocks asks the file system where the data is (lseek SEEK_DATA and
// SEEK_HOLE) and takes a block lying wholly in a hole as zeros without
// reading it, so its work grows with the data the file holds, not with the
// RAM size it declares. Where the file system cannot tell (or the platform
// has no such lseek), the whole file counts as data and is read; the result
// is the same, only slower.

// extents finds the data and the holes of a file of a known size. It asks
// the file system as little as it can (one lseek to know whether a byte is
// in a hole, a second for where data ends), and remembers the last hole and
// the last run of data it found.
type extents struct {
	f    *os.File
	size int64
	// [holeLo, holeHi) is a hole; [dataLo, dataHi) is data, dataHi < 0 while
	// the run's end is unknown (data then known at dataLo only).
	holeLo, holeHi int64
	dataLo, dataHi int64
	unknown        bool // the file system cannot tell: everything is data
}

// holeEnd returns off when the byte at off (0 <= off < size) is data, else
// the end of the hole it lies in (at most size).
func (e *extents) holeEnd(off int64) int64 {
	switch {
	case e.unknown || off >= e.dataLo && (off < e.dataHi || e.dataHi < 0 && off == e.dataLo):
		return off
	case off >= e.holeLo && off < e.holeHi:
		return e.holeHi
	}
	d, err := seekData(e.f, off)
	switch {
	case errors.Is(err, syscall.ENXIO): // no data from off to the end
		e.holeLo, e.holeHi = off, e.size
	case err != nil || d < off:
		e.unknown = true
		return off
	case d > off:
		e.holeLo, e.holeHi = off, min(d, e.size)
	default:
		e.dataLo, e.dataHi = off, -1
		return off
	}
	return e.holeHi
}

// dataEnd returns the end of the run of data the byte at off, which is data,
// lies in (at most size).
func (e *extents) dataEnd(off int64) int64 {
	if e.unknown {
		return e.size
	}
	if off >= e.dataLo && off < e.dataHi {
		return e.dataHi
	}
	h, err := seekHole(e.f, off)
	if err != nil || h <= off {
		e.unknown = true
		return e.size
	}
	e.dataLo, e.dataHi = off, min(h, e.size)
	return e.dataHi
}

// at reports whether the byte at off is in data or in a hole, and where that
// run of data or hole ends.
func (e *extents) at(off int64) (data bool, end int64) {
	if h := e.holeEnd(off); h > off {
		return false, h
	}
	return true, e.dataEnd(off)
}
