package kvm

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
)

// Hypervisor is an open /dev/kvm.
type Hypervisor struct {
	fd       int
	mmapSize int
	maxVCPUs int
	maxIPA   int  // 0: the host only offers the default 40-bit IPA
	ptrAuth  bool // address and generic pointer authentication for guests
}

// Open opens /dev/kvm and checks that it is usable.
func Open() (*Hypervisor, error) {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("%w: /dev/kvm does not exist (is KVM enabled in this kernel, and is the kernel running at EL2?)", hv.ErrNoHypervisor)
	case errors.Is(err, unix.EACCES):
		return nil, fmt.Errorf("%w: /dev/kvm: permission denied (add this user to the kvm group)", hv.ErrNoHypervisor)
	case err != nil:
		return nil, fmt.Errorf("%w: opening /dev/kvm: %v", hv.ErrNoHypervisor, err)
	}
	h := &Hypervisor{fd: fd}
	if v, err := ioctl(fd, kvmGetAPIVersion, 0); err != nil || v != kvmAPIVersion {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: /dev/kvm API version %d (%v), want %d", hv.ErrNoHypervisor, v, err, kvmAPIVersion)
	}
	if h.mmapSize, err = ioctl(fd, kvmGetVCPUMmapSize, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	for _, c := range []int{capImmediateExit, capARMPSCI02} {
		if n, _ := ioctl(fd, kvmCheckExtension, uintptr(c)); n <= 0 {
			unix.Close(fd)
			return nil, fmt.Errorf("%w: KVM lacks capability %d", hv.ErrNoHypervisor, c)
		}
	}
	h.maxVCPUs, _ = ioctl(fd, kvmCheckExtension, capMaxVCPUs)
	if h.maxVCPUs <= 0 {
		h.maxVCPUs, _ = ioctl(fd, kvmCheckExtension, capNrVCPUs)
	}
	h.maxVCPUs = min(max(h.maxVCPUs, 1), gic.MaxVCPUs())
	h.maxIPA, _ = ioctl(fd, kvmCheckExtension, capARMVMIPASize)
	// Both or neither: KVM refuses a vCPU asking for one of the two.
	addr, _ := ioctl(fd, kvmCheckExtension, capPtrAuthAddr)
	gen, _ := ioctl(fd, kvmCheckExtension, capPtrAuthGen)
	h.ptrAuth = addr > 0 && gen > 0
	return h, nil
}

// Name returns "kvm".
func (h *Hypervisor) Name() string { return "kvm" }

// MaxVCPUs is the smaller of KVM's limit and what the GIC layout holds.
func (h *Hypervisor) MaxVCPUs() int { return h.maxVCPUs }

// VM is a KVM virtual machine.
type VM struct {
	h            *Hypervisor
	fd           int
	cfg          hv.Config
	target       vcpuInit // from KVM_ARM_PREFERRED_TARGET
	inKernelPSCI bool
	gicFd        int // the vGICv3 device, -1 before Ready

	mu         sync.Mutex
	vcpus      int               // created so far
	counters   map[uint64]uint64 // counter register id -> the largest saved value a restore has set
	dirtyBlock uint64            // TrackDirty's block size, 0 when not tracking
}

// NewVM creates the VM, maps guest RAM and installs the SMCCC filter.
func (h *Hypervisor) NewVM(cfg hv.Config) (hv.VM, error) {
	if cfg.VCPUs < 1 || cfg.VCPUs > h.maxVCPUs {
		return nil, fmt.Errorf("%d vCPUs: KVM here supports 1 to %d", cfg.VCPUs, h.maxVCPUs)
	}
	vmType, err := h.ipaType(cfg.RAMBase + uint64(len(cfg.RAM)))
	if err != nil {
		return nil, err
	}
	fd, err := ioctl(h.fd, kvmCreateVM, vmType)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	vm := &VM{h: h, fd: fd, cfg: cfg, gicFd: -1}
	if err := vm.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return vm, nil
}

// ipaType picks the KVM_CREATE_VM machine type: the default 40-bit IPA when
// the host offers no choice, else the smallest width covering guest memory
// and the device region (kvm-arm64.md §1.3).
func (h *Hypervisor) ipaType(top uint64) (uintptr, error) {
	need := max(bits.Len64(top-1), 32)
	if h.maxIPA == 0 {
		if need > 40 {
			return 0, fmt.Errorf("guest memory ends at %#x, beyond the 40-bit IPA space this host supports", top)
		}
		return 0, nil
	}
	if need > h.maxIPA {
		return 0, fmt.Errorf("guest memory ends at %#x, beyond this host's %d-bit IPA space", top, h.maxIPA)
	}
	return uintptr(need), nil
}

func (vm *VM) setup() error {
	if _, err := ioctlPtr(vm.fd, kvmARMPreferredTarget, &vm.target); err != nil {
		return fmt.Errorf("KVM_ARM_PREFERRED_TARGET: %w", err)
	}
	if err := vm.setSlotFlags(0); err != nil {
		return err
	}
	// Forward the PSCI function ranges (SMC32 and SMC64) to userspace.
	probe := &deviceAttr{Group: vmSMCCCCtrl, Attr: vmSMCCCFilter}
	if _, err := ioctlPtr(vm.fd, kvmHasDeviceAttr, probe); err != nil {
		vm.inKernelPSCI = true
		return nil
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	for _, base := range []uint32{0x84000000, 0xC4000000} {
		f := &smcccFilter{Base: base, NrFunctions: 0x20, Action: smcccFilterFwdToUser}
		attr := &deviceAttr{Group: vmSMCCCCtrl, Attr: vmSMCCCFilter, Addr: addrOf(&pin, f)}
		if _, err := ioctlPtr(vm.fd, kvmSetDeviceAttr, attr); err != nil {
			return fmt.Errorf("installing the SMCCC filter for %#x: %w", base, err)
		}
	}
	return nil
}

// setSlotFlags sets the guest RAM slot (slot 0), or rewrites its flags
// (KVM_MR_FLAGS_ONLY) once it exists.
func (vm *VM) setSlotFlags(flags uint32) error {
	ram := vm.cfg.RAM
	var pin runtime.Pinner // a no-op for mmap'd RAM, which never moves
	defer pin.Unpin()
	region := &userspaceMemoryRegion{
		Flags:         flags,
		GuestPhysAddr: vm.cfg.RAMBase,
		MemorySize:    uint64(len(ram)),
		UserspaceAddr: addrOf(&pin, &ram[0]),
	}
	if _, err := ioctlPtr(vm.fd, kvmSetUserMemoryRegion, region); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION (%d MiB at %#x, flags %#x): %w", len(ram)>>20, vm.cfg.RAMBase, flags, err)
	}
	return nil
}

// InKernelPSCI reports whether KVM handles PSCI itself (no SMCCC filter).
func (vm *VM) InKernelPSCI() bool { return vm.inKernelPSCI }

// Ready creates and initializes the vGICv3; KVM requires every vCPU to exist first.
func (vm *VM) Ready() error {
	vm.mu.Lock()
	n := vm.vcpus
	vm.mu.Unlock()
	if n != vm.cfg.VCPUs {
		return fmt.Errorf("vGIC: %d of %d vCPUs created", n, vm.cfg.VCPUs)
	}
	dev := &createDevice{Type: devTypeARMVGICv3}
	if _, err := ioctlPtr(vm.fd, kvmCreateDevice, dev); err != nil {
		return fmt.Errorf("creating the vGICv3 (KVM needs a GICv3 host): %w", err)
	}
	gicFd := int(dev.Fd)
	vm.gicFd = gicFd // kept for SaveGIC and RestoreGIC; Close closes it
	dist, redist := uint64(gic.DistBase), uint64(gic.RedistBase)
	nrIRQs := vm.cfg.GIC.NumIRQs
	var pin runtime.Pinner
	defer pin.Unpin()
	steps := []struct {
		what       string
		group      uint32
		attr, addr uint64
	}{
		{"distributor address", vgicGrpAddr, vgicV3AddrTypeDist, addrOf(&pin, &dist)},
		{"redistributor address", vgicGrpAddr, vgicV3AddrTypeRedist, addrOf(&pin, &redist)},
		{"interrupt count", vgicGrpNrIRQs, 0, addrOf(&pin, &nrIRQs)},
		{"init", vgicGrpCtrl, vgicCtrlInit, 0},
	}
	for _, s := range steps {
		attr := &deviceAttr{Group: s.group, Attr: s.attr, Addr: s.addr}
		if _, err := ioctlPtr(gicFd, kvmSetDeviceAttr, attr); err != nil {
			return fmt.Errorf("vGICv3 %s: %w", s.what, err)
		}
	}
	return nil
}

// SetSPI sets the level of the SPI with the given INTID.
func (vm *VM) SetSPI(intid uint32, level bool) error {
	l := &irqLevel{IRQ: gic.KVMIRQLineSPI(intid)}
	if level {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd, kvmIRQLine, l); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE INTID %d: %w", intid, err)
	}
	return nil
}

// Doorbell implements hv.DoorbellVM with an ioeventfd: a guest's 32-bit
// write of value to addr signals an eventfd inside KVM, with no exit to
// squibd; the returned file reads its 8-byte count. Only with
// SQUIB_KVM_IOEVENTFD=on in the environment: in the lab, which is all
// squib has measured on, ioeventfds removed a third of the MMIO exits but
// did not make virtio-blk faster (kvm's package documentation), so every
// QueueNotify stays an MMIO exit, as on Hypervisor.framework, unless asked.
func (vm *VM) Doorbell(addr uint64, value uint32) (io.ReadCloser, error) {
	if os.Getenv("SQUIB_KVM_IOEVENTFD") != "on" {
		return nil, errors.ErrUnsupported
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	e := &ioEventFD{Datamatch: uint64(value), Addr: addr, Len: 4, FD: int32(fd), Flags: ioEventFDDatamatch}
	if _, err := ioctlPtr(vm.fd, kvmIOEventFD, e); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("KVM_IOEVENTFD at %#x for %d: %w", addr, value, err)
	}
	// Non-blocking, so a Read waits in Go's poller and Close ends it.
	return os.NewFile(uintptr(fd), "ioeventfd"), nil
}

// Close closes the VM; its vCPUs must be closed already.
func (vm *VM) Close() error {
	if vm.gicFd >= 0 {
		unix.Close(vm.gicFd)
		vm.gicFd = -1
	}
	return unix.Close(vm.fd)
}

// pid is used to direct kicks at vCPU threads.
var pid = os.Getpid()
