package memory

import "unsafe"

// word32 returns the host word backing RAM bytes [off, off+4) for sync/atomic,
// or nil when its host address is not 4-byte aligned (sync/atomic needs
// that; RAM from New is page aligned, an adopted mapping may not be). This
// is the package's only unsafe code: sync/atomic works on *uint32, and
// guest RAM is a []byte.
func (r *RAM) word32(off uint64) *uint32 {
	b := r.mem[off : off+4] // bounds-checked: the pointer stays inside RAM
	p := unsafe.Pointer(&b[0])
	if uintptr(p)%4 != 0 {
		return nil
	}
	return (*uint32)(p)
}
