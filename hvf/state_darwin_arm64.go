package hvf

import (
	"errors"
	"fmt"

	"github.com/squibvm/squib/gic"
)

// Pieces of VM and vCPU state for snapshots. vCPU methods must run on the
// vCPU's thread; VM methods may run on any thread.

// SIMD returns SIMD&FP register Vn (0..31) as {bits 63:0, bits 127:64}.
func (v *VCPU) SIMD(n int) ([2]uint64, error) {
	var q [2]uint64
	if n < 0 || n > 31 {
		return q, v.wrap(fmt.Errorf("no SIMD register V%d", n))
	}
	err := check("hv_vcpu_get_simd_fp_reg", hvVCPUGetSIMDFPReg(v.hv, uint32(n), &q))
	return q, v.wrap(err)
}

// SetSIMD sets SIMD&FP register Vn (0..31) to {bits 63:0, bits 127:64}.
func (v *VCPU) SetSIMD(n int, q [2]uint64) error {
	if n < 0 || n > 31 {
		return v.wrap(fmt.Errorf("no SIMD register V%d", n))
	}
	return v.wrap(check("hv_vcpu_set_simd_fp_reg", hvVCPUSetSIMDFPReg(v.hv, uint32(n), &q)))
}

// SaveICC reads the vCPU's GIC CPU-interface registers, which the GIC state
// blob does not hold (hv_gic_state.h).
func (v *VCPU) SaveICC() (gic.ICCRegs, error) {
	r := make(gic.ICCRegs, len(iccRegs))
	for _, reg := range iccRegs {
		if err := check("hv_gic_get_icc_reg", hvGICGetICCReg(v.hv, reg, &v.out)); err != nil {
			return nil, v.wrap(fmt.Errorf("ICC register %#x: %w", reg, err))
		}
		r[reg] = v.out
	}
	return r, nil
}

// RestoreICC writes back registers SaveICC returned, before the vCPU first runs.
func (v *VCPU) RestoreICC(r gic.ICCRegs) error {
	if err := checkICC(r); err != nil {
		return v.wrap(err)
	}
	for _, reg := range iccRegs {
		if err := check("hv_gic_set_icc_reg", hvGICSetICCReg(v.hv, reg, r[reg])); err != nil {
			return v.wrap(fmt.Errorf("ICC register %#x: %w", reg, err))
		}
	}
	return nil
}

// saveGIC returns the GIC's state: the framework's opaque blob, tagged with
// this macOS version, and icc, the vCPUs' SaveICC results by index. No vCPU
// may be running.
func (vm *VM) saveGIC(icc []gic.ICCRegs) (gic.State, error) {
	if len(icc) != vm.cfg.VCPUs {
		return gic.State{}, fmt.Errorf("GIC state: CPU-interface registers of %d vCPUs, the VM has %d", len(icc), vm.cfg.VCPUs)
	}
	st := hvGICStateCreate()
	if st == 0 {
		return gic.State{}, errors.New("hv_gic_state_create returned no state (is a vCPU still running?)")
	}
	defer osRelease(st)
	var n uint64
	if err := check("hv_gic_state_get_size", hvGICStateGetSize(st, &n)); err != nil {
		return gic.State{}, err
	}
	if n == 0 {
		return gic.State{}, errors.New("hv_gic_state_get_size: empty GIC state")
	}
	blob := make([]byte, n)
	if err := check("hv_gic_state_get_data", hvGICStateGetData(st, blob)); err != nil {
		return gic.State{}, err
	}
	return gic.State{Backend: gic.BackendHVF, BackendVersion: vm.h.macOS, Blob: blob, ICC: icc}, nil
}

// SaveGIC returns the GIC's state (hv.StateVM): the framework's blob and
// the CPU-interface registers every vCPU read in its SaveState, which must
// have run on each since it last ran (the ICC registers can only be read on
// the vCPU's own thread). No vCPU may be running.
func (vm *VM) SaveGIC() (gic.State, error) {
	icc := make([]gic.ICCRegs, vm.cfg.VCPUs)
	vm.mu.Lock()
	for i := range icc {
		icc[i] = vm.savedICC[i]
	}
	vm.mu.Unlock()
	for i, r := range icc {
		if r == nil {
			return gic.State{}, fmt.Errorf("GIC state: vCPU %d has not saved its state (SaveState reads its GIC CPU interface)", i)
		}
	}
	return vm.saveGIC(icc)
}

// RestoreGIC loads the blob of s into the GIC (hv.StateVM). Every vCPU must
// exist and none may have run. The vCPUs' ICC registers are written by each
// vCPU on its own thread as it first runs.
func (vm *VM) RestoreGIC(s gic.State) error {
	if err := s.Check(gic.BackendHVF, vm.cfg.VCPUs); err != nil {
		return err
	}
	if len(s.Blob) == 0 {
		return fmt.Errorf("gic: %w: the snapshot has no GIC state blob", gic.ErrIncompatibleState)
	}
	for i, r := range s.ICC {
		if err := checkICC(r); err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
	}
	if err := check("hv_gic_set_state", hvGICSetState(s.Blob)); err != nil {
		return gicRefused(s.BackendVersion, vm.h.macOS, err)
	}
	vm.mu.Lock()
	vm.restoreICC = make(map[int]gic.ICCRegs, len(s.ICC))
	for i, r := range s.ICC {
		vm.restoreICC[i] = r
	}
	vm.mu.Unlock()
	return nil
}

// restorePendingICC writes the ICC registers RestoreGIC left for this vCPU,
// on its own thread, before it runs.
func (v *VCPU) restorePendingICC() error {
	v.vm.mu.Lock()
	r, ok := v.vm.restoreICC[v.id]
	delete(v.vm.restoreICC, v.id)
	v.vm.mu.Unlock()
	if !ok {
		return nil
	}
	return v.RestoreICC(r)
}

// GuestCounter is the guest's virtual counter (CNTVCT_EL0) now; a snapshot
// records it when the vCPUs are paused.
func (vm *VM) GuestCounter() uint64 { return guestCounter(machAbsoluteTime(), vm.offset.Load()) }

// SetGuestCounter makes the guest's virtual counter read c now and run on
// from there, on every vCPU from its next Run: a restored guest sees its
// counter continue from the snapshot's value.
func (vm *VM) SetGuestCounter(c uint64) { vm.offset.Store(offsetFor(machAbsoluteTime(), c)) }

// TrackDirty write-protects guest RAM to record the pages the guest
// writes, reported per block of blockSize bytes (a multiple of 16 KiB).
func (vm *VM) TrackDirty(blockSize uint64) error {
	if err := checkBlockSize(blockSize); err != nil {
		return err
	}
	if err := vm.dirty.start(); err != nil {
		return err
	}
	vm.mu.Lock()
	vm.dirtyBlock = blockSize
	vm.mu.Unlock()
	return nil
}

// CollectDirty returns a bitmap of the blocks the guest wrote since
// TrackDirty or the previous CollectDirty (bit i: the block at RAM base +
// i*blockSize) and write-protects them again. Writes squib makes through its
// own mapping of RAM are not in it.
func (vm *VM) CollectDirty() ([]uint64, error) {
	pages, err := vm.dirty.collect()
	if err != nil {
		return nil, err
	}
	vm.mu.Lock()
	block := vm.dirtyBlock
	vm.mu.Unlock()
	return blockBitmap(pages, block, uint64(len(vm.cfg.RAM)))
}

// StopDirtyTracking makes all of guest RAM writable again.
func (vm *VM) StopDirtyTracking() error { return vm.dirty.stop() }
