// Package memory holds a VM's guest RAM: one host mapping at a guest physical
// base address, with bounds-checked access by guest address.
//
// Every write squib itself makes into guest RAM (loading aside, which
// happens before the guest runs) goes through Mutable, Write or
// AtomicStore16. Those record the blocks they touch in RAM's own write log
// (TrackWrites, TakeWrites): the hypervisors' dirty logs see only the
// guest's writes, so a diff snapshot needs both. Slice and Bytes are views
// for reading; writes through them are not logged.
//
// AtomicLoad16 and AtomicStore16 are the ring accessors of virtio's split
// queues, whose index fields are 16 bits wide (see atomic.go).
package memory

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// RAM is guest RAM mapped into the host. The mapping is never moved, so
// backends may hand its address to the hypervisor. Its methods may be
// called from any goroutine, except Close.
type RAM struct {
	base   uint64
	mem    []byte
	unmap  func([]byte) error
	writes atomic.Pointer[writeLog] // nil until TrackWrites
}

// Adopt makes RAM of an existing host mapping (such as a snapshot's memory
// file mapped copy-on-write); Close releases it with unmap.
func Adopt(base uint64, mem []byte, unmap func([]byte) error) *RAM {
	return &RAM{base: base, mem: mem, unmap: unmap}
}

// New maps size bytes of anonymous, zeroed memory as guest RAM at base.
// Pages are allocated on first touch.
func New(base, size uint64) (*RAM, error) {
	if size == 0 || size%uint64(unix.Getpagesize()) != 0 {
		return nil, fmt.Errorf("guest RAM size %#x is not a positive multiple of the host page size", size)
	}
	if base+size < base {
		return nil, fmt.Errorf("guest RAM [%#x, +%#x) overflows", base, size)
	}
	mem, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mapping %d MiB of guest RAM: %w", size>>20, err)
	}
	return &RAM{base: base, mem: mem, unmap: unix.Munmap}, nil
}

// Base is the guest physical address of the first byte of RAM.
func (r *RAM) Base() uint64 { return r.base }

// Size is the RAM size in bytes.
func (r *RAM) Size() uint64 { return uint64(len(r.mem)) }

// Bytes is the whole host mapping.
func (r *RAM) Bytes() []byte { return r.mem }

// Contains reports whether [gpa, gpa+n) lies inside RAM.
func (r *RAM) Contains(gpa, n uint64) bool {
	return gpa >= r.base && n <= r.Size() && gpa-r.base <= r.Size()-n
}

// Slice returns the host bytes backing [gpa, gpa+n), or an error when the
// range is not entirely inside RAM. It is for reading: writes through it
// are not in the write log (use Mutable).
func (r *RAM) Slice(gpa, n uint64) ([]byte, error) {
	if !r.Contains(gpa, n) {
		return nil, fmt.Errorf("guest range [%#x, +%#x) is outside RAM [%#x, +%#x)", gpa, n, r.base, r.Size())
	}
	off := gpa - r.base
	return r.mem[off : off+n : off+n], nil
}

// Mutable returns the host bytes backing [gpa, gpa+n) for squib to write
// into, as Slice does, and records the range in the write log.
func (r *RAM) Mutable(gpa, n uint64) ([]byte, error) {
	b, err := r.Slice(gpa, n)
	if err != nil {
		return nil, err
	}
	r.logWrite(gpa-r.base, n)
	return b, nil
}

// Write copies b into guest RAM at gpa and records the range in the write
// log.
func (r *RAM) Write(gpa uint64, b []byte) error {
	dst, err := r.Mutable(gpa, uint64(len(b)))
	if err != nil {
		return err
	}
	copy(dst, b)
	return nil
}

// Close unmaps RAM. The RAM must no longer be in use by a hypervisor.
func (r *RAM) Close() error {
	if r.mem == nil {
		return nil
	}
	err := r.unmap(r.mem)
	r.mem = nil
	return err
}
