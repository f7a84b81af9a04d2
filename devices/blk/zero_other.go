//go:build !linux

package blk

import "os"

// zero makes n bytes at off read as zeros by writing zeros. (macOS's
// F_PUNCHHOLE needs block-aligned ranges; writing zeros is the portable
// first cut.)
func zero(f *os.File, off, n int64) error { return zeroFallback(f, off, n) }

// fdatasync is Sync: on macOS, F_FULLFSYNC, as Go's File.Sync does.
func fdatasync(f *os.File) error { return f.Sync() }
