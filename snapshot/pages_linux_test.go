package snapshot

import "golang.org/x/sys/unix"

func init() {
	noHugePages = func(b []byte) { unix.Madvise(b, unix.MADV_NOHUGEPAGE) }
}
