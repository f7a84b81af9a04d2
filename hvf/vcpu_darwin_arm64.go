package hvf

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/squibvm/squib/hv"
)

// VCPU is a Hypervisor.framework vCPU. Every method except Kick must be
// called on the OS thread that created it, which stays locked to its
// goroutine (hv.VCPU's contract; hv_vcpu.h: "must be called by the owning
// thread").
type VCPU struct {
	vm   *VM
	id   int
	hv   uint64      // hv_vcpu_t
	exit *exitRecord // the framework's, rewritten by every hv_vcpu_run

	out        uint64   // out-parameter of register reads, so they allocate nothing
	resetVals  []uint64 // resetSysRegs as hv_vcpu_create left them
	offset     uint64   // vtimer offset set in the framework
	vtimerMask bool     // a VTIMER_ACTIVATED exit masked the vtimer

	mmio        mmioAccess // the load the last ExitMMIO reported
	mmioPending bool
}

// NewVCPU creates vCPU id on the calling thread, which must stay locked.
func (vm *VM) NewVCPU(id int) (hv.VCPU, error) {
	vm.mu.Lock()
	_, dup := vm.vcpus[id]
	vm.mu.Unlock()
	if id < 0 || id >= vm.cfg.VCPUs || dup {
		return nil, fmt.Errorf("vCPU %d: not a free vCPU index of this %d-vCPU VM", id, vm.cfg.VCPUs)
	}
	v := &VCPU{vm: vm, id: id}
	if err := check("hv_vcpu_create", hvVCPUCreate(&v.hv, &v.exit)); err != nil {
		return nil, fmt.Errorf("vCPU %d: %w", id, err)
	}
	if err := v.init(); err != nil {
		hvVCPUDestroy(v.hv)
		return nil, err
	}
	vm.mu.Lock()
	vm.vcpus[id] = v.hv
	vm.mu.Unlock()
	return v, nil
}

func (v *VCPU) init() error {
	// The GIC finds the vCPU's redistributor by this affinity, so it is
	// set before anything asks for it (hv_gic.h).
	if err := v.setSysReg(MPIDR_EL1, hv.MPIDR(v.id)); err != nil {
		return err
	}
	if err := v.hideFeatures(); err != nil {
		return err
	}
	v.resetVals = make([]uint64, len(resetSysRegs))
	for i, r := range resetSysRegs {
		x, err := v.sysReg(r)
		if err != nil {
			return err
		}
		v.resetVals[i] = x
	}
	return v.syncOffset()
}

// hideFeatures clears from the vCPU's ID registers the features whose state
// squib cannot save (hiddenFeatures), before the guest can read them. A
// register this macOS does not have (ZFR0, SMFR0 before 15.2) is skipped.
func (v *VCPU) hideFeatures() error {
	for _, h := range hiddenFeatures {
		x, err := v.sysReg(h.reg)
		if errors.Is(err, ErrBadArgument) {
			continue
		}
		if err != nil {
			return err
		}
		if y := sanitizeIDReg(h.reg, x); y != x {
			if err := v.setSysReg(h.reg, y); err != nil {
				return fmt.Errorf("%w (hiding SVE, SME and MTE from the guest)", err)
			}
		}
	}
	return nil
}

// idRegs reads the guest-visible ID registers a snapshot records, keyed by
// encoding: idSysRegs from the vCPU (one this macOS does not have is left
// out) and configIDRegs from the VM's default vCPU configuration.
func (v *VCPU) idRegs() (map[uint16]uint64, error) {
	ids := maps.Clone(v.vm.configIDs)
	for _, r := range idSysRegs {
		x, err := v.sysReg(r)
		if errors.Is(err, ErrBadArgument) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ids[uint16(r)] = x
	}
	return ids, nil
}

// wrap prefixes err, if any, with the vCPU.
func (v *VCPU) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("vCPU %d: %w", v.id, err)
}

func (v *VCPU) reg(r Reg) (uint64, error) {
	if err := check("hv_vcpu_get_reg", hvVCPUGetReg(v.hv, r, &v.out)); err != nil {
		return 0, v.wrap(fmt.Errorf("register %d: %w", r, err))
	}
	return v.out, nil
}

func (v *VCPU) setReg(r Reg, x uint64) error {
	if err := check("hv_vcpu_set_reg", hvVCPUSetReg(v.hv, r, x)); err != nil {
		return v.wrap(fmt.Errorf("register %d: %w", r, err))
	}
	return nil
}

func (v *VCPU) sysReg(r SysReg) (uint64, error) {
	if err := check("hv_vcpu_get_sys_reg", hvVCPUGetSysReg(v.hv, r, &v.out)); err != nil {
		return 0, v.wrap(fmt.Errorf("system register %#x: %w", uint16(r), err))
	}
	return v.out, nil
}

func (v *VCPU) setSysReg(r SysReg, x uint64) error {
	if err := check("hv_vcpu_set_sys_reg", hvVCPUSetSysReg(v.hv, r, x)); err != nil {
		return v.wrap(fmt.Errorf("system register %#x: %w", uint16(r), err))
	}
	return nil
}

// gp reads register number n of an instruction encoding; XZR reads as 0.
func (v *VCPU) gp(n uint8) (uint64, error) {
	r, ok := gpReg(n)
	if !ok {
		return 0, nil
	}
	return v.reg(r)
}

// setGP writes register number n of an instruction encoding; writes to XZR
// are discarded.
func (v *VCPU) setGP(n uint8, x uint64) error {
	r, ok := gpReg(n)
	if !ok {
		return nil
	}
	return v.setReg(r, x)
}

// advance steps the PC over the trapped instruction (AArch64: 4 bytes).
func (v *VCPU) advance() error {
	pc, err := v.reg(HV_REG_PC)
	if err != nil {
		return err
	}
	return v.setReg(HV_REG_PC, pc+4)
}

// syncOffset applies the VM's vtimer offset if it changed.
func (v *VCPU) syncOffset() error {
	off := v.vm.offset.Load()
	if off == v.offset {
		return nil
	}
	if err := check("hv_vcpu_set_vtimer_offset", hvVCPUSetVtimerOffset(v.hv, off)); err != nil {
		return v.wrap(err)
	}
	v.offset = off
	return nil
}

// unmaskVTimer clears the mask a VTIMER_ACTIVATED exit set once the guest
// has dealt with the timer (it no longer asserts its interrupt), as Apple's
// documentation of hv_vcpu_run advises; earlier would make every run exit.
func (v *VCPU) unmaskVTimer(always bool) error {
	if !v.vtimerMask {
		return nil
	}
	if !always {
		ctl, err := v.sysReg(CNTV_CTL_EL0)
		if err != nil || vtimerAsserted(ctl) {
			return err
		}
	}
	if err := check("hv_vcpu_set_vtimer_mask", hvVCPUSetVtimerMask(v.hv, false)); err != nil {
		return v.wrap(err)
	}
	v.vtimerMask = false
	return nil
}

// Run enters the guest until an exit squib's core must handle. Exits the
// backend handles itself (trapped system registers, WFE, dirty-page faults,
// timer exits) re-enter the guest here.
func (v *VCPU) Run() (hv.Exit, error) {
	v.mmioPending = false
	if err := v.restorePendingICC(); err != nil {
		return hv.Exit{}, err
	}
	for {
		if err := firstError(v.syncOffset(), v.unmaskVTimer(false)); err != nil {
			return hv.Exit{}, err
		}
		if err := check("hv_vcpu_run", hvVCPURun(v.hv)); err != nil {
			return hv.Exit{}, v.wrap(err)
		}
		a, err := decodeExit(v.exit.reason, syndrome(v.exit.syndrome), v.exit.physicalAddress, v.vm.inRAM)
		if err != nil {
			return hv.Exit{}, v.wrap(err)
		}
		if e, done, err := v.act(a); done || err != nil {
			return e, err
		}
	}
}

// act carries out a decoded exit; done reports that Run returns e.
func (v *VCPU) act(a action) (e hv.Exit, done bool, err error) {
	switch a.kind {
	case actKicked:
		return hv.Exit{Kind: hv.ExitKicked}, true, nil
	case actMMIO:
		e = hv.Exit{Kind: hv.ExitMMIO, Addr: a.addr, Size: a.mmio.size, Write: a.mmio.write}
		if !a.mmio.write {
			// CompleteMMIORead finishes the load and moves the PC.
			v.mmio, v.mmioPending = a.mmio, true
			return e, true, nil
		}
		x, err := v.gp(a.mmio.reg)
		if err != nil {
			return e, true, err
		}
		e.Data = a.mmio.stored(x)
		return e, true, v.advance()
	case actHypercall:
		var x [4]uint64
		for i := range x {
			if x[i], err = v.reg(HV_REG_X0 + Reg(i)); err != nil {
				return e, true, err
			}
		}
		if a.advancePC {
			err = v.advance()
		}
		return hv.Exit{Kind: hv.ExitHypercall, FID: uint32(x[0]), Args: [3]uint64(x[1:])}, true, err
	case actWFI:
		d, err := v.sleepTime()
		if err == nil {
			err = v.advance()
		}
		if d == 0 || err != nil {
			return e, err != nil, err
		}
		return hv.Exit{Kind: hv.ExitWFI, Sleep: d}, true, nil
	case actRAMFault:
		ok, err := v.vm.dirty.fault(a.addr)
		if err == nil && !ok {
			err = fmt.Errorf("write fault on RAM at IPA %#x, which squib did not write-protect", a.addr)
		}
		return e, err != nil, v.wrap(err)
	case actSysReg:
		if a.sysReg.read {
			err = v.setGP(a.sysReg.rt, v.trappedRead(a.sysReg.reg))
		}
		if err == nil {
			err = v.advance()
		}
		return e, err != nil, err
	case actStep:
		err = v.advance()
		return e, err != nil, err
	case actVTimer:
		// With the framework's GIC this exit is not expected (hvf.md
		// §4.7); should it come, the framework has masked the timer, so
		// make its PPI pending in the vCPU's redistributor and unmask
		// once the guest has handled it (unmaskVTimer).
		v.vtimerMask = true
		err = check("hv_gic_set_redistributor_reg", hvGICSetRedistributorReg(v.hv, GICR_ISPENDR0, 1<<HV_GIC_INT_EL1_VIRTUAL_TIMER))
		return e, err != nil, v.wrap(err)
	}
	return e, true, v.wrap(fmt.Errorf("unhandled exit action %d", a.kind))
}

// trappedRead is the value of a trapped MRS: the counter for the physical
// counter registers, which squib presents as the virtual one, and zero for
// everything else (the OS lock, PMU and debug registers, ID registers the
// framework does not know).
func (v *VCPU) trappedRead(r SysReg) uint64 {
	if r == CNTPCT_EL0 || r == CNTPCTSS_EL0 {
		return guestCounter(machAbsoluteTime(), v.offset)
	}
	return 0
}

// sleepTime is how long the vCPU may sleep in the WFI it just executed.
func (v *VCPU) sleepTime() (time.Duration, error) {
	ctl, err := v.sysReg(CNTV_CTL_EL0)
	if err != nil {
		return 0, err
	}
	cval, err := v.sysReg(CNTV_CVAL_EL0)
	if err != nil {
		return 0, err
	}
	return wfiSleep(ctl, cval, guestCounter(machAbsoluteTime(), v.offset), v.vm.h.tb), nil
}

// CompleteMMIORead loads value, as the device returned it, into the
// register of the load the last exit reported (sign-extended and sized as
// the load says; nothing for XZR) and moves the PC past the load.
func (v *VCPU) CompleteMMIORead(value uint64) error {
	if !v.mmioPending {
		return v.wrap(errors.New("no MMIO read pending"))
	}
	v.mmioPending = false
	if err := v.setGP(v.mmio.reg, v.mmio.loaded(value)); err != nil {
		return err
	}
	return v.advance()
}

// CompleteHypercall writes the results to x0..x3. The PC is already past
// the HVC (the framework reports it so) or was moved past the SMC by Run.
func (v *VCPU) CompleteHypercall(x [4]uint64) error {
	for i, val := range x {
		if err := v.setReg(HV_REG_X0+Reg(i), val); err != nil {
			return err
		}
	}
	return nil
}

// PowerOn resets the vCPU's registers and points it at entry with x0 = arg,
// EL1h, D, A, I and F masked, MMU off. Hypervisor.framework has no vCPU
// reset, so squib writes back the general-purpose and FP control registers
// (zero) and resetSysRegs (as hv_vcpu_create left them).
func (v *VCPU) PowerOn(entry, arg uint64) error {
	v.mmioPending = false
	for i, r := range resetSysRegs {
		if err := v.setSysReg(r, v.resetVals[i]); err != nil {
			return err
		}
	}
	for n := range Reg(xzr) {
		if err := v.setReg(HV_REG_X0+n, 0); err != nil {
			return err
		}
	}
	for _, r := range []struct {
		reg Reg
		val uint64
	}{{HV_REG_FPCR, 0}, {HV_REG_FPSR, 0}, {HV_REG_X0, arg}, {HV_REG_PC, entry}, {HV_REG_CPSR, cpsrEL1hMasked}} {
		if err := v.setReg(r.reg, r.val); err != nil {
			return err
		}
	}
	return v.unmaskVTimer(true)
}

// Kick makes Run return ExitKicked soon: hv_vcpus_exit, the one call meant
// for other threads. A vCPU not inside hv_vcpu_run leaves its next one at
// once.
func (v *VCPU) Kick() { hvVCPUsExit(v.hv) }

// Close destroys the vCPU.
func (v *VCPU) Close() error {
	v.vm.mu.Lock()
	delete(v.vm.vcpus, v.id)
	v.vm.mu.Unlock()
	return v.wrap(check("hv_vcpu_destroy", hvVCPUDestroy(v.hv)))
}
