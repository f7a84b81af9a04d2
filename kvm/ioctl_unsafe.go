//go:build linux && arm64

package kvm

import (
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Layout checks: each mirror must have its C size (kvm-arm64.md §1.2). A
// wrong size fails to compile (negative array length or overflowing constant).
var (
	_ [32 - unsafe.Sizeof(userspaceMemoryRegion{})]byte
	_ [unsafe.Sizeof(userspaceMemoryRegion{}) - 32]byte
	_ [16 - unsafe.Sizeof(dirtyLog{})]byte
	_ [unsafe.Sizeof(dirtyLog{}) - 16]byte
	_ [32 - unsafe.Sizeof(vcpuInit{})]byte
	_ [unsafe.Sizeof(vcpuInit{}) - 32]byte
	_ [64 - unsafe.Sizeof(ioEventFD{})]byte
	_ [unsafe.Sizeof(ioEventFD{}) - 64]byte
	_ [8 - unsafe.Sizeof(irqLevel{})]byte
	_ [unsafe.Sizeof(irqLevel{}) - 8]byte
	_ [16 - unsafe.Sizeof(oneReg{})]byte
	_ [unsafe.Sizeof(oneReg{}) - 16]byte
	_ [12 - unsafe.Sizeof(createDevice{})]byte
	_ [unsafe.Sizeof(createDevice{}) - 12]byte
	_ [24 - unsafe.Sizeof(deviceAttr{})]byte
	_ [unsafe.Sizeof(deviceAttr{}) - 24]byte
	_ [24 - unsafe.Sizeof(smcccFilter{})]byte
	_ [unsafe.Sizeof(smcccFilter{}) - 24]byte
)

// ioctl issues an ioctl whose argument is an integer. An ioctl a signal
// interrupted (EINTR: the Go runtime preempts with SIGURG, and KVM's
// ioctls are not restarted) is issued again; KVM_RUN uses enter instead.
func ioctl(fd int, req, arg uintptr) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return int(r), e
	}
}

// enter issues KVM_RUN once: EINTR is its answer to a kick, not a
// failure to retry.
func enter(fd int) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmRun, 0)
	if e != 0 {
		return e
	}
	return nil
}

// ioctlPtr issues an ioctl whose argument points to *p, again after EINTR
// as ioctl does.
// SAFETY: p is a live Go pointer for the duration of the call; the syscall
// argument rule keeps it valid, and KVM does not retain it.
func ioctlPtr[T any](fd int, req uintptr, p *T) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(p)))
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return int(r), e
	}
}

// addrOf pins *p and returns its address, for a struct field that carries
// a user pointer (kvm_one_reg.addr, kvm_device_attr.addr, userspace_addr).
// SAFETY: the kernel sees a bare integer, which neither keeps *p alive nor
// follows it if it moves, and a goroutine's stack moves when it grows, so a
// buffer that escape analysis left on the stack could be read at its old
// place. Pinning makes *p escape to the heap, which never moves, and keeps
// it there until the caller's pin.Unpin, after the last ioctl that uses it.
// Pinning mmap'd memory does nothing, as it needs nothing.
func addrOf[T any](pin *runtime.Pinner, p *T) uint64 {
	pin.Pin(p)
	return uint64(uintptr(unsafe.Pointer(p)))
}

// setImmediateExit stores kvm_run.immediate_exit from any thread.
// SAFETY: run is the vCPU's kvm_run mapping (page-aligned, so the first word
// is aligned); byte 0 (request_interrupt_window) is unused on arm64, so the
// word store changes only immediate_exit at byte 1.
func setImmediateExit(run []byte, on bool) {
	var v uint32
	if on {
		v = 1 << (8 * runImmediateExit)
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&run[0])), v)
}
