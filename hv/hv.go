// Package hv is the boundary between squib's backend-neutral VMM core and
// the hypervisor backends (kvm on Linux, hvf on macOS). It declares the small
// interface every backend implements and the value types that cross it; it
// holds no platform code.
//
// Threading contract: a VCPU is created, run and closed on one OS thread that
// stays locked (runtime.LockOSThread) for the vCPU's whole life, as
// Hypervisor.framework requires. Only Kick may be called from other threads.
// VM methods may be called from any thread.
package hv

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/squibvm/squib/gic"
)

// ErrNoHypervisor reports that no usable hypervisor exists on this host.
var ErrNoHypervisor = errors.New("no usable hypervisor")

// Hypervisor is an opened backend.
type Hypervisor interface {
	// Name is the backend's short name ("kvm", "hvf"); snapshots are tagged with it.
	Name() string
	// MaxVCPUs is the largest vCPU count this backend and host support.
	MaxVCPUs() int
	// NewVM creates a VM with guest RAM mapped at cfg.RAMBase.
	NewVM(cfg Config) (VM, error)
}

// Config describes the VM a backend creates.
type Config struct {
	VCPUs   int
	RAMBase uint64 // guest physical address of RAM
	RAM     []byte // host mapping of guest RAM, host-page aligned, never moved
	GIC     *gic.Layout
}

// VM is one virtual machine. Creation order differs between backends (HVF
// creates its GIC before any vCPU, KVM after all of them); the interface hides
// it: the core calls NewVCPU for every vCPU, then Ready, then runs them.
type VM interface {
	// NewVCPU creates vCPU id. It must be called on the locked OS thread
	// that will run the vCPU for its whole life.
	NewVCPU(id int) (VCPU, error)
	// Ready completes VM setup once every vCPU exists and before any runs.
	Ready() error
	// SetSPI drives the level of a shared peripheral interrupt (by GIC INTID).
	SetSPI(intid uint32, level bool) error
	// InKernelPSCI reports that PSCI calls are handled inside the hypervisor
	// (KVM before Linux 6.4) rather than delivered as ExitHypercall. Then
	// every vCPU must be run from the start; secondaries wait inside the
	// hypervisor for CPU_ON.
	InKernelPSCI() bool
	// Close releases the VM. All vCPUs must be closed first.
	Close() error
}

// DoorbellVM is a VM that can take a guest's 32-bit write of one value to
// one address without an exit to the VMM (KVM's ioeventfd): the write only
// wakes a reader. Hypervisor.framework has nothing like it; there every
// such write is an MMIO exit, which the VMM handles the same way.
type DoorbellVM interface {
	// Doorbell returns a reader whose Read returns an 8-byte count once
	// at least one such write happened since the previous Read; Close
	// ends a Read in progress. errors.ErrUnsupported says the backend
	// takes no doorbells as configured: the writes stay MMIO exits.
	Doorbell(addr uint64, value uint32) (io.ReadCloser, error)
}

// VCPU is one virtual CPU, owned by one locked OS thread (see the package doc).
type VCPU interface {
	// Run enters the guest until the next exit that needs the VMM.
	Run() (Exit, error)
	// Kick makes a running or about-to-run Run return ExitKicked soon. It is
	// the only method that may be called from another thread.
	Kick()
	// CompleteMMIORead supplies the value of the MMIO read that the last
	// exit reported; it takes effect on the next Run.
	CompleteMMIORead(value uint64) error
	// CompleteHypercall sets x0..x3 as the results of the last ExitHypercall.
	CompleteHypercall(x [4]uint64) error
	// PowerOn resets the vCPU architecturally and sets it up to start at
	// entry with x0 = arg, EL1h, interrupts masked, MMU off (PSCI CPU_ON and
	// the boot CPU's kernel entry).
	PowerOn(entry, arg uint64) error
	// Close destroys the vCPU.
	Close() error
}

// ExitKind says why Run returned.
type ExitKind int

const (
	ExitKicked      ExitKind = iota // Kick, or a signal: check for commands, then run again
	ExitMMIO                        // access to an address outside RAM
	ExitHypercall                   // HVC/SMC carrying an SMCCC function ID
	ExitWFI                         // the guest waits for an interrupt (backends that do not handle WFI themselves)
	ExitSystemOff                   // in-kernel PSCI: SYSTEM_OFF
	ExitSystemReset                 // in-kernel PSCI: SYSTEM_RESET
)

func (k ExitKind) String() string {
	switch k {
	case ExitKicked:
		return "kicked"
	case ExitMMIO:
		return "mmio"
	case ExitHypercall:
		return "hypercall"
	case ExitWFI:
		return "wfi"
	case ExitSystemOff:
		return "system-off"
	case ExitSystemReset:
		return "system-reset"
	}
	return fmt.Sprintf("ExitKind(%d)", int(k))
}

// Exit is a decoded vCPU exit.
type Exit struct {
	Kind ExitKind

	// ExitMMIO
	Addr  uint64 // guest physical address
	Size  int    // 1, 2, 4 or 8 bytes
	Write bool
	Data  uint64 // value written, little-endian, for writes

	// ExitHypercall
	FID  uint32    // SMCCC function ID (x0)
	Args [3]uint64 // x1..x3

	// ExitWFI: how long the guest's virtual timer allows it to sleep;
	// zero means until an interrupt or a kick.
	Sleep time.Duration
}

// MPIDR returns the MPIDR_EL1 value of vCPU id: Aff0 = id mod 16, Aff1 = id / 16,
// with the RES1 bit 31 set. It is the value KVM assigns by default; the hvf
// backend programs the same, so the device tree does not depend on the backend.
func MPIDR(id int) uint64 {
	return 1<<31 | uint64(id%16) | uint64(id/16&0xff)<<8
}
