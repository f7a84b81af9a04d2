package hv

import (
	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/snapshot"
)

// StateVCPU is implemented by vCPUs whose state can be saved and restored.
// Both methods run on the vCPU's own thread while it is not running (HVF
// allows nothing else). A backend saves every register it can name (KVM:
// every register KVM_GET_REG_LIST lists); one it names but cannot read is
// an error, never an omission.
type StateVCPU interface {
	// SaveState reads the vCPU's architectural state. A pending MMIO
	// completion is applied first, so the state is at an instruction
	// boundary. Power is the backend's view (KVM's MP state), which the
	// VMM replaces with its own PSCI state unless the VM's PSCI is in the
	// kernel (VM.InKernelPSCI).
	SaveState() (snapshot.VCPU, error)
	// RestoreState writes a saved state into a vCPU created for it (same
	// index, not yet run), including its timer and, VM-wide, the guest's
	// virtual counter, which continues from the saved Timer.Counter, and
	// its power (Power: the restore policy's, which the VMM sets; a vCPU
	// restored Off waits for CPU_ON). A state this host cannot hold
	// exactly (another CPU model, registers this hypervisor lacks) is
	// refused before anything is written.
	RestoreState(snapshot.VCPU) error
}

// StateVM is implemented by VMs whose interrupt controller can be saved and
// restored and whose RAM writes can be tracked for diff snapshots.
type StateVM interface {
	// SaveGIC reads the interrupt controller's state; every vCPU must be
	// stopped. The state is tagged with the backend's name and version.
	SaveGIC() (gic.State, error)
	// RestoreGIC writes it back, after every vCPU exists and has its state
	// restored, before any runs. A state from another backend, or one the
	// host refuses, is an error naming why.
	RestoreGIC(gic.State) error
	// TrackDirty starts recording which blocks of guest RAM the guest
	// writes, at the given block size (a multiple of the host page size).
	TrackDirty(blockSize uint64) error
	// CollectDirty returns one bit per block written since tracking
	// started or since the last call (bit i of word i/64: block i), and
	// starts a new interval.
	CollectDirty() ([]uint64, error)
}
