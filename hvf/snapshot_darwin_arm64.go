package hvf

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/snapshot"
)

var (
	_ hv.StateVCPU = (*VCPU)(nil)
	_ hv.StateVM   = (*VM)(nil)
)

// SaveState reads the vCPU's state (hv.StateVCPU) on its own thread: the
// general registers, PC, PSTATE, FPCR/FPSR, V0-V31, SP_EL0/SP_EL1,
// ELR_EL1/SPSR_EL1, savedSysRegs with the pointer-authentication keys (one
// the framework rejects is left out), MPIDR_EL1, the guest-visible ID
// registers that name the CPU model (idRegs), the virtual timer with the
// guest's counter, and, for SaveGIC, the vCPU's GIC CPU-interface
// registers. MMIO writes are complete when Run reports them; a read whose
// value CompleteMMIORead has not supplied leaves the PC at the load, which
// then runs again after a restore.
func (v *VCPU) SaveState() (snapshot.VCPU, error) {
	var s snapshot.VCPU
	var err error
	for i := range s.X {
		if s.X[i], err = v.reg(HV_REG_X0 + Reg(i)); err != nil {
			return snapshot.VCPU{}, err
		}
	}
	for _, r := range []struct {
		reg Reg
		p   *uint64
	}{{HV_REG_PC, &s.PC}, {HV_REG_CPSR, &s.PSTATE}, {HV_REG_FPCR, &s.FPCR}, {HV_REG_FPSR, &s.FPSR}} {
		if *r.p, err = v.reg(r.reg); err != nil {
			return snapshot.VCPU{}, err
		}
	}
	for _, r := range []struct {
		reg SysReg
		p   *uint64
	}{
		{SP_EL0, &s.SP_EL0}, {SP_EL1, &s.SP_EL1}, {ELR_EL1, &s.ELR_EL1}, {SPSR_EL1, &s.SPSR_EL1},
		{MPIDR_EL1, &s.MPIDR}, {CNTV_CTL_EL0, &s.Timer.CTL}, {CNTV_CVAL_EL0, &s.Timer.CVAL},
	} {
		if *r.p, err = v.sysReg(r.reg); err != nil {
			return snapshot.VCPU{}, err
		}
	}
	for n := range s.V {
		if s.V[n], err = v.SIMD(n); err != nil {
			return snapshot.VCPU{}, err
		}
	}
	s.Sys = make(map[uint16]uint64, len(savedSysRegs))
	for _, r := range savedSysRegs {
		x, err := v.sysReg(r)
		if errors.Is(err, ErrBadArgument) {
			continue // not a register this framework version has
		}
		if err != nil {
			return snapshot.VCPU{}, err
		}
		s.Sys[uint16(r)] = x
	}
	ids, err := v.idRegs()
	if err != nil {
		return snapshot.VCPU{}, err
	}
	maps.Copy(s.Sys, ids)
	icc, err := v.SaveICC()
	if err != nil {
		return snapshot.VCPU{}, err
	}
	s.Timer.Counter = guestCounter(machAbsoluteTime(), v.vm.offset.Load())
	v.vm.mu.Lock()
	if v.vm.savedICC == nil {
		v.vm.savedICC = make(map[int]gic.ICCRegs)
	}
	v.vm.savedICC[v.id] = icc
	v.vm.mu.Unlock()
	return s, nil
}

// RestoreState writes s into this vCPU, created for it and not yet run
// (hv.StateVCPU). The guest's virtual counter is VM-wide (one vtimer offset
// for every vCPU): the vCPUs stopped one after another and saved slightly
// different counters, so the VM continues from the largest, and no vCPU
// sees its counter go backwards. MPIDR_EL1 must be the one squib gave the
// vCPU (the GIC found its redistributor by it at creation).
//
// Before writing anything it refuses a state saved on another CPU model
// (checkCPUModel: the saved ID registers against this vCPU's) or holding
// a register this framework does not have. ID registers are checked, never
// written: the guest read them at boot.
func (v *VCPU) RestoreState(s snapshot.VCPU) error {
	if s.MPIDR != 0 && s.MPIDR != hv.MPIDR(v.id) {
		return v.wrap(fmt.Errorf("saved MPIDR_EL1 %#x is not vCPU %d's %#x", s.MPIDR, v.id, hv.MPIDR(v.id)))
	}
	ids, err := v.idRegs()
	if err != nil {
		return err
	}
	if err := checkCPUModel(v.id, s.Sys, ids); err != nil {
		return err
	}
	encs := make([]uint16, 0, len(s.Sys))
	for _, enc := range slices.Sorted(maps.Keys(s.Sys)) {
		if snapshot.IDReg(enc) {
			continue
		}
		_, err := v.sysReg(SysReg(enc))
		if errors.Is(err, ErrBadArgument) {
			return &snapshot.FormatError{Err: snapshot.ErrHost, Problem: fmt.Sprintf(
				"vCPU %d: the snapshot has system register %s, which Hypervisor.framework on macOS %s does not have", v.id, snapshot.SysRegLabel(enc), v.vm.h.macOS)}
		}
		if err != nil {
			return err
		}
		encs = append(encs, enc)
	}
	v.mmioPending = false
	for i, x := range s.X {
		if err := v.setReg(HV_REG_X0+Reg(i), x); err != nil {
			return err
		}
	}
	for _, r := range []struct {
		reg Reg
		val uint64
	}{{HV_REG_PC, s.PC}, {HV_REG_CPSR, s.PSTATE}, {HV_REG_FPCR, s.FPCR}, {HV_REG_FPSR, s.FPSR}} {
		if err := v.setReg(r.reg, r.val); err != nil {
			return err
		}
	}
	for _, r := range []struct {
		reg SysReg
		val uint64
	}{{SP_EL0, s.SP_EL0}, {SP_EL1, s.SP_EL1}, {ELR_EL1, s.ELR_EL1}, {SPSR_EL1, s.SPSR_EL1}} {
		if err := v.setSysReg(r.reg, r.val); err != nil {
			return err
		}
	}
	for n, q := range s.V {
		if err := v.SetSIMD(n, q); err != nil {
			return err
		}
	}
	for _, enc := range encs {
		if err := v.setSysReg(SysReg(enc), s.Sys[enc]); err != nil {
			return err
		}
	}
	vm := v.vm
	vm.mu.Lock()
	if !vm.counterSet || s.Timer.Counter > vm.counter {
		vm.SetGuestCounter(s.Timer.Counter)
		vm.counterSet, vm.counter = true, s.Timer.Counter
	}
	vm.mu.Unlock()
	if err := v.syncOffset(); err != nil {
		return err
	}
	for _, r := range []struct {
		reg SysReg
		val uint64
	}{{CNTV_CVAL_EL0, s.Timer.CVAL}, {CNTV_CTL_EL0, s.Timer.CTL}} {
		if err := v.setSysReg(r.reg, r.val); err != nil {
			return err
		}
	}
	return v.unmaskVTimer(true)
}
