package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/psci"
	"github.com/squibvm/squib/snapshot"
)

var (
	_ hv.StateVCPU = (*VCPU)(nil)
	_ hv.StateVM   = (*VM)(nil)
)

// getRaw reads register id, sized by its id, into a fresh slice.
func (v *VCPU) getRaw(id uint64) ([]byte, error) {
	if !validRegID(id) {
		return nil, fmt.Errorf("KVM_GET_ONE_REG: register id %#x has a size this squib does not handle", id)
	}
	*v.raw = [maxRegBytes]byte{}
	v.rawIoctl.ID = id
	if _, err := ioctlPtr(v.fd, kvmGetOneReg, v.rawIoctl); err != nil {
		return nil, fmt.Errorf("KVM_GET_ONE_REG %s: %w", regName(id), err)
	}
	return slices.Clone(v.raw[:regSize(id)]), nil
}

// setRaw writes register id; val has the id's size.
func (v *VCPU) setRaw(id uint64, val []byte) error {
	if !validRegID(id) || len(val) != regSize(id) {
		return fmt.Errorf("KVM_SET_ONE_REG: %d bytes for %s", len(val), regName(id))
	}
	copy(v.raw[:], val)
	v.rawIoctl.ID = id
	if _, err := ioctlPtr(v.fd, kvmSetOneReg, v.rawIoctl); err != nil {
		return fmt.Errorf("KVM_SET_ONE_REG %s = %#x: %w", regName(id), val, err)
	}
	return nil
}

// regList is KVM_GET_REG_LIST: every register id ONE_REG accepts for this
// vCPU, in KVM's order.
func (v *VCPU) regList() ([]uint64, error) {
	n := uint64(0)
	for {
		buf := make([]uint64, 1+n)
		buf[0] = n
		_, err := ioctlPtr(v.fd, kvmGetRegList, &buf[0])
		switch {
		case err == nil:
			return buf[1 : 1+buf[0]], nil
		case errors.Is(err, unix.E2BIG) && buf[0] > n && buf[0] <= maxRegsSaved*2:
			n = buf[0]
		default:
			return nil, fmt.Errorf("KVM_GET_REG_LIST (%d registers): %w", buf[0], err)
		}
	}
}

// mpState is KVM_GET_MP_STATE.
func (v *VCPU) mpState() (uint32, error) {
	st := new(uint32)
	if _, err := ioctlPtr(v.fd, kvmGetMPState, st); err != nil {
		return 0, fmt.Errorf("KVM_GET_MP_STATE: %w", err)
	}
	return *st, nil
}

func (v *VCPU) setMPState(st uint32) error {
	if _, err := ioctlPtr(v.fd, kvmSetMPState, &st); err != nil {
		return fmt.Errorf("KVM_SET_MP_STATE %d: %w", st, err)
	}
	return nil
}

// features are the KVM_ARM_VCPU_INIT features a snapshot records: this
// vCPU's, with POWER_OFF cleared (it says how the vCPU started, not what
// it is).
func (v *VCPU) features() [7]uint32 {
	f := v.init.Features
	f[0] &^= featurePowerOff
	return f
}

// SaveState reads every register KVM_GET_REG_LIST names (kvm-arm64.md
// §1.9, §6.1), each sized by its id: those snapshot.VCPU has a field for go
// there, the other 64-bit system registers into Sys, the rest into the
// backend blob with the vCPU's features. A listed register KVM refuses to
// read is an error. Power comes from KVM_GET_MP_STATE (RUNNABLE: On,
// STOPPED: Off); the VMM replaces it with its own PSCI state unless PSCI is
// in the kernel. A pending MMIO completion is applied first.
func (v *VCPU) SaveState() (snapshot.VCPU, error) {
	var s snapshot.VCPU
	if err := v.settle(); err != nil {
		return s, err
	}
	wrap := func(err error) (snapshot.VCPU, error) {
		return snapshot.VCPU{}, fmt.Errorf("vCPU %d: saving state: %w", v.id, err)
	}
	ids, err := v.regList()
	if err != nil {
		return wrap(err)
	}
	regs := make([]kvmReg, 0, len(ids))
	for _, id := range ids {
		val, err := v.getRaw(id)
		if err != nil {
			return wrap(fmt.Errorf("KVM lists a register it will not read: %w", err))
		}
		regs = append(regs, kvmReg{ID: id, Val: val})
	}
	blob := vcpuBlob{Version: vcpuBlobVersion, Features: v.features(), Regs: split(&s, regs)}
	if s.Backend, err = snapshot.Marshal(blob); err != nil {
		return wrap(err)
	}
	switch mp, err := v.mpState(); {
	case err != nil:
		return wrap(err)
	case mp == mpStateRunnable:
		s.Power = psci.On
	case mp == mpStateStopped:
		s.Power = psci.Off
	default:
		return wrap(fmt.Errorf("MP state %d, which squib does not save", mp))
	}
	return s, nil
}

// RestoreState writes s into this vCPU, which was created for it and has not
// run. It refuses, before writing anything, a state saved with other vCPU
// features, one holding a register this host's KVM does not list, and one
// whose ID registers differ from this host's (snapshot.CheckIDRegs). Then
// it writes every saved register in KVM's list order, the counters and
// timers last (restoreOrder), and sets the MP state from s.Power (On:
// RUNNABLE, else STOPPED). The guest's counters are VM-wide: writing
// KVM_REG_ARM_TIMER_CNT sets the VM's offset (§1.10), so each vCPU's write
// moves every vCPU. The vCPUs stopped one after another and saved slightly
// different counters; the VM keeps the largest, so no vCPU sees its counter
// go backwards.
func (v *VCPU) RestoreState(s snapshot.VCPU) error {
	if err := v.settle(); err != nil {
		return err
	}
	wrap := func(err error) error { return fmt.Errorf("vCPU %d: restoring state: %w", v.id, err) }
	if len(s.Backend) == 0 {
		return wrap(fmt.Errorf("%w: the snapshot has no KVM register list (saved by a squib older than format 1.1)", snapshot.ErrCorrupt))
	}
	var b vcpuBlob
	if err := snapshot.Unmarshal(s.Backend, &b); err != nil {
		return wrap(fmt.Errorf("%w: KVM register blob: %v", snapshot.ErrCorrupt, err))
	}
	if err := checkBlob(&b); err != nil {
		return wrap(fmt.Errorf("%w: %v", snapshot.ErrCorrupt, err))
	}
	if b.Features != v.features() {
		return wrap(fmt.Errorf("%w: saved with KVM vCPU features %#x, this host gives %#x (pointer authentication is bits 5 and 6)", snapshot.ErrHost, b.Features[0], v.features()[0]))
	}
	host, err := v.regList()
	if err != nil {
		return wrap(err)
	}
	saved := join(&s, b.Regs)
	order, err := restoreOrder(host, saved)
	if err != nil {
		return wrap(err)
	}
	hostID := func(id uint64) ([]byte, bool) {
		val, err := v.getRaw(id)
		return val, err == nil
	}
	err = snapshot.CheckIDRegs(v.id, s.Sys, func(enc uint16) (uint64, bool) {
		val, ok := hostID(regSysBase | uint64(enc))
		if !ok {
			return 0, false
		}
		return binary.LittleEndian.Uint64(val), true
	})
	if err != nil {
		return err
	}
	for _, r := range b.Regs {
		if isIDReg(r.ID) {
			if val, ok := hostID(r.ID); !ok || !slices.Equal(val, r.Val) {
				return wrap(fmt.Errorf("%w: %s is %#x in the snapshot and %#x on this host", snapshot.ErrHost, regName(r.ID), r.Val, val))
			}
		}
	}
	for _, id := range order {
		val := saved[id]
		if slices.Contains(counterIDs, id) {
			if err := v.setCounter(id, val); err != nil {
				return wrap(err)
			}
			continue
		}
		if err := v.setRaw(id, val); err != nil {
			return wrap(err)
		}
	}
	mp := uint32(mpStateStopped)
	if s.Power == psci.On {
		mp = mpStateRunnable
	}
	if err := v.setMPState(mp); err != nil {
		return wrap(err)
	}
	return nil
}

// setCounter writes a saved counter register unless a vCPU restored
// earlier set a larger value into the VM-wide counter already.
func (v *VCPU) setCounter(id uint64, val []byte) error {
	vm := v.vm
	vm.mu.Lock()
	defer vm.mu.Unlock()
	x := binary.LittleEndian.Uint64(val)
	if last, ok := vm.counters[id]; ok && last >= x {
		return nil
	}
	if err := v.setRaw(id, val); err != nil {
		return fmt.Errorf("guest counter: %w", err)
	}
	if vm.counters == nil {
		vm.counters = map[uint64]uint64{}
	}
	vm.counters[id] = x
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
