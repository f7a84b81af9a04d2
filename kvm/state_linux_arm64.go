package kvm

import (
	"errors"
	"fmt"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/snapshot"
)

var (
	_ hv.StateVCPU = (*VCPU)(nil)
	_ hv.StateVM   = (*VM)(nil)
)

// getWide reads a U32 or U128 register into v.wide (zeroed first, so a
// 32-bit value is v.wide[0] on this little-endian host).
func (v *VCPU) getWide(id uint64) ([2]uint64, error) {
	*v.wide = [2]uint64{}
	v.wideIoctl.ID = id
	if _, err := ioctlPtr(v.fd, kvmGetOneReg, v.wideIoctl); err != nil {
		return [2]uint64{}, fmt.Errorf("KVM_GET_ONE_REG %#x: %w", id, err)
	}
	return *v.wide, nil
}

func (v *VCPU) setWide(id uint64, val [2]uint64) error {
	*v.wide = val
	v.wideIoctl.ID = id
	if _, err := ioctlPtr(v.fd, kvmSetOneReg, v.wideIoctl); err != nil {
		return fmt.Errorf("KVM_SET_ONE_REG %#x: %w", id, err)
	}
	return nil
}

// unreadable reports an error of a register this KVM does not have.
func unreadable(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL)
}

// SaveState reads the vCPU's registers (kvm-arm64.md §1.9): the core
// registers, V0-V31, FPSR/FPCR, savedSysRegs (a register this KVM rejects is
// left out), MPIDR_EL1 and the virtual timer with the guest's counter. A
// pending MMIO completion is applied first.
func (v *VCPU) SaveState() (snapshot.VCPU, error) {
	var s snapshot.VCPU
	if err := v.settle(); err != nil {
		return s, err
	}
	wrap := func(err error) (snapshot.VCPU, error) {
		return snapshot.VCPU{}, fmt.Errorf("vCPU %d: saving state: %w", v.id, err)
	}
	var err error
	for i := range s.X {
		if s.X[i], err = v.getReg(regX0 + 2*uint64(i)); err != nil {
			return wrap(err)
		}
	}
	for _, r := range []struct {
		id uint64
		p  *uint64
	}{
		{regSP, &s.SP_EL0}, {regPC, &s.PC}, {regPSTATE, &s.PSTATE}, {regSPEL1, &s.SP_EL1},
		{regELREL1, &s.ELR_EL1}, {regSPSREL1, &s.SPSR_EL1}, {regMPIDR, &s.MPIDR},
		{regTimerCTL, &s.Timer.CTL}, {regTimerCVAL, &s.Timer.CVAL}, {regTimerCNT, &s.Timer.Counter},
	} {
		if *r.p, err = v.getReg(r.id); err != nil {
			return wrap(err)
		}
	}
	for n := range s.V {
		if s.V[n], err = v.getWide(regV0 + 4*uint64(n)); err != nil {
			return wrap(err)
		}
	}
	for _, r := range []struct {
		id uint64
		p  *uint64
	}{{regFPSR, &s.FPSR}, {regFPCR, &s.FPCR}} {
		w, err := v.getWide(r.id)
		if err != nil {
			return wrap(err)
		}
		*r.p = uint64(uint32(w[0]))
	}
	s.Sys = make(map[uint16]uint64, len(savedSysRegs))
	for _, enc := range savedSysRegs {
		x, err := v.getReg(regSysBase | uint64(enc))
		if unreadable(err) {
			continue
		}
		if err != nil {
			return wrap(err)
		}
		s.Sys[enc] = x
	}
	return s, nil
}

// RestoreState writes s into this vCPU, which was created for it and has not
// run. The guest's virtual counter is VM-wide: writing KVM_REG_ARM_TIMER_CNT
// sets the VM's offset (§1.10), so each vCPU's write moves every vCPU. The
// vCPUs stopped one after another and saved slightly different counters; the
// VM keeps the largest, so no vCPU sees its counter go backwards.
func (v *VCPU) RestoreState(s snapshot.VCPU) error {
	if err := v.settle(); err != nil {
		return err
	}
	wrap := func(err error) error { return fmt.Errorf("vCPU %d: restoring state: %w", v.id, err) }
	for i, x := range s.X {
		if err := v.setReg(regX0+2*uint64(i), x); err != nil {
			return wrap(err)
		}
	}
	for _, r := range [][2]uint64{
		{regSP, s.SP_EL0}, {regPC, s.PC}, {regPSTATE, s.PSTATE}, {regSPEL1, s.SP_EL1},
		{regELREL1, s.ELR_EL1}, {regSPSREL1, s.SPSR_EL1},
	} {
		if err := v.setReg(r[0], r[1]); err != nil {
			return wrap(err)
		}
	}
	for n, q := range s.V {
		if err := v.setWide(regV0+4*uint64(n), q); err != nil {
			return wrap(err)
		}
	}
	for _, r := range [][2]uint64{{regFPSR, s.FPSR}, {regFPCR, s.FPCR}} {
		if err := v.setWide(r[0], [2]uint64{uint64(uint32(r[1]))}); err != nil {
			return wrap(err)
		}
	}
	encs := make([]uint16, 0, len(s.Sys))
	for enc := range s.Sys {
		encs = append(encs, enc)
	}
	slices.Sort(encs)
	for _, enc := range encs {
		if err := v.setReg(regSysBase|uint64(enc), s.Sys[enc]); err != nil {
			return wrap(fmt.Errorf("system register %s: %w", snapshot.SysRegName(enc), err))
		}
	}
	if s.MPIDR != 0 {
		cur, err := v.getReg(regMPIDR)
		if err != nil {
			return wrap(err)
		}
		if cur != s.MPIDR {
			if err := v.setReg(regMPIDR, s.MPIDR); err != nil {
				return wrap(fmt.Errorf("MPIDR_EL1 %#x (KVM gave %#x): %w", s.MPIDR, cur, err))
			}
		}
	}
	// Counter first, so that CVAL and CTL are judged against the restored
	// count, not KVM's fresh one.
	vm := v.vm
	vm.mu.Lock()
	setCounter := !vm.counterSet || s.Timer.Counter > vm.counter
	if setCounter {
		if err := v.setReg(regTimerCNT, s.Timer.Counter); err != nil {
			vm.mu.Unlock()
			return wrap(fmt.Errorf("guest virtual counter: %w", err))
		}
		vm.counterSet, vm.counter = true, s.Timer.Counter
	}
	vm.mu.Unlock()
	for _, r := range [][2]uint64{{regTimerCVAL, s.Timer.CVAL}, {regTimerCTL, s.Timer.CTL}} {
		if err := v.setReg(r[0], r[1]); err != nil {
			return wrap(fmt.Errorf("virtual timer: %w", err))
		}
	}
	return nil
}

// kernelRelease is the host kernel's release, gic.State.BackendVersion.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// gicAttr gets (set false) or sets one vGIC register through the device fd.
func (vm *VM) gicAttr(set bool, group uint32, attr uint64, val uint64) (uint64, error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	buf := new(uint64)
	*buf = val
	a := &deviceAttr{Group: group, Attr: attr, Addr: addrOf(&pin, buf)}
	req, name := uintptr(kvmGetDeviceAttr), "KVM_GET_DEVICE_ATTR"
	if set {
		req, name = kvmSetDeviceAttr, "KVM_SET_DEVICE_ATTR"
	}
	_, err := ioctlPtr(vm.gicFd, req, a)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return 0, fmt.Errorf("vGIC register %d/%#x: %s: %w (a vCPU is running)", group, attr, name, err)
		}
		return 0, fmt.Errorf("vGIC register %d/%#x: %s: %w", group, attr, name, err)
	}
	if group != vgicGrpCPUSysregs {
		return uint64(uint32(*buf)), nil // 32-bit registers: the low word
	}
	return *buf, nil
}

// gicRegs lists the blob's registers for this VM, in restore order:
// distributor, then each vCPU's redistributor (kvm-arm64.md §2.3; QEMU's
// order with the distributor's CTLR written ahead of the redistributors).
func (vm *VM) gicRegs() []gicReg {
	regs := distRegs(vm.cfg.GIC.NumIRQs, hv.MPIDR(0))
	// distRegs starts with IIDR and CTLR; the redistributors follow them,
	// the rest of the distributor after the redistributors.
	head, tail := regs[:2], regs[2:]
	out := slices.Clone(head)
	for i := range vm.cfg.VCPUs {
		out = append(out, redistRegs(hv.MPIDR(i))...)
	}
	return append(out, tail...)
}

// SaveGIC reads the vGICv3's state: the distributor's SPI registers and
// each redistributor's (in gic.State.Blob) and each vCPU's CPU-interface
// registers (gic.State.ICC). Every vCPU must be stopped (else EBUSY).
func (vm *VM) SaveGIC() (gic.State, error) {
	if vm.gicFd < 0 {
		return gic.State{}, errors.New("saving the vGIC: the VM is not Ready")
	}
	b := gicBlob{Version: gicBlobVersion, NrIRQs: vm.cfg.GIC.NumIRQs, VCPUs: vm.cfg.VCPUs, Regs: vm.gicRegs()}
	for i := range b.Regs {
		r := &b.Regs[i]
		x, err := vm.gicAttr(false, r.Group, r.Attr, 0)
		if err != nil {
			return gic.State{}, fmt.Errorf("saving the vGIC: %w", err)
		}
		r.Val = x
	}
	blob, err := b.marshal()
	if err != nil {
		return gic.State{}, fmt.Errorf("saving the vGIC: %w", err)
	}
	st := gic.State{Backend: gic.BackendKVM, BackendVersion: kernelRelease(), Blob: blob, ICC: make([]gic.ICCRegs, vm.cfg.VCPUs)}
	for i := range vm.cfg.VCPUs {
		aff := mpidrAttr(hv.MPIDR(i))
		icc := gic.ICCRegs{}
		read := func(enc uint16) error {
			x, err := vm.gicAttr(false, vgicGrpCPUSysregs, aff|uint64(enc), 0)
			if err != nil {
				return fmt.Errorf("saving vCPU %d's GIC CPU interface: %w", i, err)
			}
			icc[enc] = x
			return nil
		}
		for _, enc := range iccRegs {
			if err := read(enc); err != nil {
				return gic.State{}, err
			}
		}
		for _, enc := range apRegs(icc[gic.ICC_CTLR_EL1]) {
			if err := read(enc); err != nil {
				return gic.State{}, err
			}
		}
		st.ICC[i] = icc
	}
	return st, nil
}

// RestoreGIC writes a SaveGIC state back, after every vCPU exists, the VM is
// Ready and the vCPUs' states are restored, before any runs. Each
// set-register (ISENABLER, ISPENDR, ISACTIVER) is preceded by all ones
// written to its clear-register.
func (vm *VM) RestoreGIC(s gic.State) error {
	if err := s.Check(gic.BackendKVM, vm.cfg.VCPUs); err != nil {
		return err
	}
	if vm.gicFd < 0 {
		return errors.New("restoring the vGIC: the VM is not Ready")
	}
	b, err := parseGICBlob(s.Blob, vm.cfg.GIC.NumIRQs, vm.cfg.VCPUs)
	if err != nil {
		return err
	}
	refused := func(err error) error {
		return fmt.Errorf("restoring the vGIC (saved on Linux %s, this is %s): %w", s.BackendVersion, kernelRelease(), err)
	}
	for _, r := range b.Regs {
		if isSetReg(r.Group, uint32(r.Attr)) {
			if _, err := vm.gicAttr(true, r.Group, r.Attr+clearOffset, 0xffffffff); err != nil {
				return refused(err)
			}
		}
		if _, err := vm.gicAttr(true, r.Group, r.Attr, r.Val); err != nil {
			return refused(err)
		}
	}
	for i, icc := range s.ICC {
		aff := mpidrAttr(hv.MPIDR(i))
		regs := append(slices.Clone(iccRegs), apRegs(icc[gic.ICC_CTLR_EL1])...)
		if len(icc) != len(regs) {
			return fmt.Errorf("gic: %w: vCPU %d has %d CPU-interface registers, want %d", gic.ErrIncompatibleState, i, len(icc), len(regs))
		}
		for _, enc := range regs {
			x, ok := icc[enc]
			if !ok {
				return fmt.Errorf("gic: %w: vCPU %d lacks CPU-interface register %s", gic.ErrIncompatibleState, i, snapshot.SysRegName(enc))
			}
			if _, err := vm.gicAttr(true, vgicGrpCPUSysregs, aff|uint64(enc), x); err != nil {
				return refused(fmt.Errorf("vCPU %d: %w", i, err))
			}
		}
	}
	return nil
}

// dirtyPages is KVM_GET_DIRTY_LOG: one bit per host page of the RAM slot
// written since the last call, which clears the log and write-protects the
// pages again (§1.12).
func (vm *VM) dirtyPages() ([]uint64, error) {
	npages := (uint64(len(vm.cfg.RAM)) + uint64(unix.Getpagesize()) - 1) / uint64(unix.Getpagesize())
	bm := make([]uint64, (npages+63)/64)
	var pin runtime.Pinner
	defer pin.Unpin()
	log := &dirtyLog{Bitmap: addrOf(&pin, &bm[0])}
	_, err := ioctlPtr(vm.fd, kvmGetDirtyLog, log)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_DIRTY_LOG: %w", err)
	}
	return bm, nil
}

// TrackDirty turns on KVM's dirty log for guest RAM (KVM_MEM_LOG_DIRTY_PAGES)
// and reports it per block of blockSize bytes, a multiple of the host page
// size.
func (vm *VM) TrackDirty(blockSize uint64) error {
	page := uint64(unix.Getpagesize())
	if blockSize < page || blockSize%page != 0 {
		return fmt.Errorf("dirty block size %d is not a multiple of the host page size %d", blockSize, page)
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.dirtyBlock != 0 {
		return errors.New("dirty-page tracking is already on")
	}
	if err := vm.setSlotFlags(memLogDirtyPages); err != nil {
		return fmt.Errorf("starting dirty-page tracking: %w", err)
	}
	vm.dirtyBlock = blockSize
	return nil
}

// CollectDirty returns the blocks of guest RAM written since TrackDirty or
// the previous call (bit i of word i/64: block i). Writes squib makes
// through its own mapping of RAM are not in it.
func (vm *VM) CollectDirty() ([]uint64, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.dirtyBlock == 0 {
		return nil, errors.New("dirty-page tracking is off")
	}
	pages, err := vm.dirtyPages()
	if err != nil {
		return nil, err
	}
	return blockBitmap(pages, uint64(unix.Getpagesize()), vm.dirtyBlock, uint64(len(vm.cfg.RAM)))
}

// StopDirtyTracking turns KVM's dirty log off again.
func (vm *VM) StopDirtyTracking() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.dirtyBlock == 0 {
		return nil
	}
	if err := vm.setSlotFlags(0); err != nil {
		return fmt.Errorf("stopping dirty-page tracking: %w", err)
	}
	vm.dirtyBlock = 0
	return nil
}
