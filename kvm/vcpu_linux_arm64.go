package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/hv"
)

// VCPU is a KVM vCPU, owned by the locked OS thread that created it.
type VCPU struct {
	vm       *VM
	id       int
	fd       int
	tid      int    // owning thread, for kicks
	run      []byte // the mmap'd struct kvm_run
	init     vcpuInit
	mmioLen  int     // length of the pending MMIO read, 0 if none
	pending  bool    // KVM completes the last MMIO access on the next KVM_RUN
	reg      *uint64 // pinned buffer for ONE_REG transfers
	regIoctl *oneReg
	raw      *[maxRegBytes]byte // pinned buffer for ONE_REG transfers of any size
	rawIoctl *oneReg
	pin      runtime.Pinner // reg and raw, until Close
}

// NewVCPU creates and initializes vCPU id on the calling (locked) thread.
// vCPUs must be created in index order: KVM hands out the redistributor
// frames in creation order, and a restored guest finds its own where the
// saved VM had it.
func (vm *VM) NewVCPU(id int) (hv.VCPU, error) {
	vm.mu.Lock()
	next := vm.vcpus
	vm.mu.Unlock()
	if id != next {
		return nil, fmt.Errorf("vCPU %d created out of order (vCPU %d is next): KVM assigns redistributors in creation order", id, next)
	}
	fd, err := ioctl(vm.fd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	run, err := unix.Mmap(fd, 0, vm.h.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mapping kvm_run of vCPU %d: %w", id, err)
	}
	v := &VCPU{vm: vm, id: id, fd: fd, tid: unix.Gettid(), run: run, init: vm.target, reg: new(uint64)}
	v.regIoctl = &oneReg{Addr: addrOf(&v.pin, v.reg)}
	v.raw = new([maxRegBytes]byte)
	v.rawIoctl = &oneReg{Addr: addrOf(&v.pin, v.raw)}
	v.init.Features[0] |= featurePSCI02
	if vm.h.ptrAuth {
		v.init.Features[0] |= featurePtrAuthAddr | featurePtrAuthGen
	}
	if id > 0 && vm.inKernelPSCI {
		// KVM holds secondaries off until the guest's CPU_ON.
		v.init.Features[0] |= featurePowerOff
	}
	if err := v.reset(); err != nil {
		v.Close()
		return nil, err
	}
	vm.mu.Lock()
	vm.vcpus++
	vm.mu.Unlock()
	return v, nil
}

// reset is KVM_ARM_VCPU_INIT: it (re)initializes the vCPU to its reset state.
func (v *VCPU) reset() error {
	init := v.init
	if _, err := ioctlPtr(v.fd, kvmARMVCPUInit, &init); err != nil {
		return fmt.Errorf("KVM_ARM_VCPU_INIT vCPU %d: %w", v.id, err)
	}
	return nil
}

func (v *VCPU) getReg(id uint64) (uint64, error) {
	v.regIoctl.ID = id
	if _, err := ioctlPtr(v.fd, kvmGetOneReg, v.regIoctl); err != nil {
		return 0, fmt.Errorf("KVM_GET_ONE_REG %#x: %w", id, err)
	}
	return *v.reg, nil
}

func (v *VCPU) setReg(id, val uint64) error {
	v.regIoctl.ID = id
	*v.reg = val
	if _, err := ioctlPtr(v.fd, kvmSetOneReg, v.regIoctl); err != nil {
		return fmt.Errorf("KVM_SET_ONE_REG %#x: %w", id, err)
	}
	return nil
}

// settle makes KVM complete an MMIO access it holds for the next KVM_RUN
// (advance the PC; for a read, load the register) without running guest
// code: with immediate_exit set, KVM_RUN finishes the access and returns
// EINTR. Anything that resets or reads the vCPU's registers settles first.
func (v *VCPU) settle() error {
	if !v.pending {
		return nil
	}
	setImmediateExit(v.run, true)
	err := enter(v.fd)
	setImmediateExit(v.run, false)
	v.pending, v.mmioLen = false, 0
	if err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("vCPU %d: completing an MMIO access: %w", v.id, err)
	}
	return nil
}

// Run enters the guest and decodes the exit.
func (v *VCPU) Run() (hv.Exit, error) {
	v.mmioLen, v.pending = 0, false
	if err := enter(v.fd); err != nil {
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			setImmediateExit(v.run, false)
			return hv.Exit{Kind: hv.ExitKicked}, nil
		}
		if errors.Is(err, unix.ENOSYS) {
			return hv.Exit{}, fmt.Errorf("vCPU %d: KVM_RUN: the guest made an MMIO access without a valid syndrome (e.g. LDP/STP to a device)", v.id)
		}
		return hv.Exit{}, fmt.Errorf("vCPU %d: KVM_RUN: %w", v.id, err)
	}
	le := binary.LittleEndian
	switch reason := le.Uint32(v.run[runExitReason:]); reason {
	case exitMMIO:
		e := hv.Exit{
			Kind:  hv.ExitMMIO,
			Addr:  le.Uint64(v.run[runMMIOPhysAddr:]),
			Size:  int(le.Uint32(v.run[runMMIOLen:])),
			Write: v.run[runMMIOIsWrite] != 0,
		}
		if e.Size < 1 || e.Size > 8 {
			return hv.Exit{}, fmt.Errorf("vCPU %d: MMIO exit with length %d", v.id, e.Size)
		}
		v.pending = true
		var buf [8]byte
		copy(buf[:], v.run[runMMIOData:runMMIOData+e.Size])
		if e.Write {
			e.Data = le.Uint64(buf[:])
		} else {
			v.mmioLen = e.Size
		}
		return e, nil
	case exitHypercall:
		// The function ID is in hypercall.nr; arguments are not copied
		// into kvm_run on arm64, so read x1..x3. The PC is already past
		// the HVC/SMC.
		e := hv.Exit{Kind: hv.ExitHypercall, FID: uint32(le.Uint64(v.run[runHypercallNr:]))}
		for i := range e.Args {
			x, err := v.getReg(regX0 + 2*uint64(i+1))
			if err != nil {
				return hv.Exit{}, err
			}
			e.Args[i] = x
		}
		return e, nil
	case exitSystemEvent:
		switch t := le.Uint32(v.run[runSysEventType:]); t {
		case systemEventShutdown:
			return hv.Exit{Kind: hv.ExitSystemOff}, nil
		case systemEventReset:
			return hv.Exit{Kind: hv.ExitSystemReset}, nil
		default:
			return hv.Exit{}, fmt.Errorf("vCPU %d: unhandled KVM system event %d", v.id, t)
		}
	case exitIntr:
		setImmediateExit(v.run, false)
		return hv.Exit{Kind: hv.ExitKicked}, nil
	case exitFailEntry:
		return hv.Exit{}, fmt.Errorf("vCPU %d: KVM failed to enter the guest (reason %#x)", v.id, le.Uint64(v.run[runFailReason:]))
	case exitInternalError:
		return hv.Exit{}, fmt.Errorf("vCPU %d: KVM internal error (suberror %d)", v.id, le.Uint32(v.run[runInternalSub:]))
	case exitARMNISV:
		return hv.Exit{}, fmt.Errorf("vCPU %d: MMIO access without a valid syndrome", v.id)
	default:
		return hv.Exit{}, fmt.Errorf("vCPU %d: unexpected KVM exit reason %d", v.id, reason)
	}
}

// Kick interrupts Run from another thread: immediate_exit covers a vCPU
// about to enter, the signal one already inside KVM_RUN. Go treats SIGURG as
// a (harmless) preemption request.
func (v *VCPU) Kick() {
	setImmediateExit(v.run, true)
	unix.Tgkill(pid, v.tid, unix.SIGURG)
}

// CompleteMMIORead stores the value KVM loads into the target register when
// the vCPU next runs.
func (v *VCPU) CompleteMMIORead(value uint64) error {
	if v.mmioLen == 0 {
		return fmt.Errorf("vCPU %d: no MMIO read pending", v.id)
	}
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], value)
	copy(v.run[runMMIOData:runMMIOData+v.mmioLen], buf[:v.mmioLen])
	return nil
}

// CompleteHypercall writes the results to x0..x3.
func (v *VCPU) CompleteHypercall(x [4]uint64) error {
	for i, val := range x {
		if err := v.setReg(regX0+2*uint64(i), val); err != nil {
			return err
		}
	}
	return nil
}

// PowerOn resets the vCPU and points it at entry with x0 = arg.
func (v *VCPU) PowerOn(entry, arg uint64) error {
	if err := v.settle(); err != nil {
		return err
	}
	if err := v.reset(); err != nil {
		return err
	}
	for _, r := range [][2]uint64{{regPC, entry}, {regX0, arg}, {regPSTATE, pstateEL1hMasked}} {
		if err := v.setReg(r[0], r[1]); err != nil {
			return err
		}
	}
	return nil
}

// Close unmaps kvm_run and closes the vCPU.
func (v *VCPU) Close() error {
	v.pin.Unpin()
	err := unix.Munmap(v.run)
	if cerr := unix.Close(v.fd); err == nil {
		err = cerr
	}
	return err
}
