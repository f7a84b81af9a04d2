package blk

import (
	"os"

	"golang.org/x/sys/unix"
)

// zero makes n bytes at off read as zeros: the file-system blocks wholly
// inside the range become a hole (F_PUNCHHOLE, which takes only
// block-aligned ranges; the file keeps its size), and the unaligned ends,
// or the whole range where the file system or device cannot punch, are
// written as zeros.
func zero(f *os.File, off, n int64) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err == nil && st.Bsize > 0 {
		bs := int64(st.Bsize)
		start, end := (off+bs-1)/bs*bs, (off+n)/bs*bs
		// fpunchhole_t is {fp_flags u32, reserved u32, fp_offset off_t,
		// fp_length off_t}: Fstore_t's first 24 bytes, all the kernel
		// reads for F_PUNCHHOLE.
		if start < end && unix.FcntlFstore(f.Fd(), unix.F_PUNCHHOLE, &unix.Fstore_t{Offset: start, Length: end - start}) == nil {
			if err := zeroFallback(f, off, start-off); err != nil {
				return err
			}
			return zeroFallback(f, end, off+n-end)
		}
	}
	return zeroFallback(f, off, n)
}

// fdatasync is Sync: on macOS, F_FULLFSYNC, as Go's File.Sync does.
func fdatasync(f *os.File) error { return f.Sync() }
