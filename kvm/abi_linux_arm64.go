package kvm

// ioctl numbers (include/uapi/linux/kvm.h; asm-generic encoding
// dir<<30 | size<<16 | 0xAE<<8 | nr). Checked against kvm-arm64.md §1.1.
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmCheckExtension      = 0xAE03
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmGetDirtyLog         = 0x4010AE42
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmIRQLine             = 0x4008AE61
	kvmIOEventFD           = 0x4040AE79
	kvmGetMPState          = 0x8004AE98
	kvmSetMPState          = 0x4004AE99
	kvmRun                 = 0xAE80
	kvmGetOneReg           = 0x4010AEAB
	kvmSetOneReg           = 0x4010AEAC
	kvmARMVCPUInit         = 0x4020AEAE
	kvmARMPreferredTarget  = 0x8020AEAF
	kvmGetRegList          = 0xC008AEB0
	kvmCreateDevice        = 0xC00CAEE0
	kvmSetDeviceAttr       = 0x4018AEE1
	kvmGetDeviceAttr       = 0x4018AEE2 // _IOW, like SET
	kvmHasDeviceAttr       = 0x4018AEE3
)

// kvmAPIVersion is the only KVM API version there has ever been.
const kvmAPIVersion = 12

// Capabilities (KVM_CHECK_EXTENSION).
const (
	capNrVCPUs       = 9
	capMaxVCPUs      = 66
	capARMPSCI02     = 102
	capImmediateExit = 136
	capARMVMIPASize  = 165
	capPtrAuthAddr   = 171 // KVM_CAP_ARM_PTRAUTH_ADDRESS
	capPtrAuthGen    = 172 // KVM_CAP_ARM_PTRAUTH_GENERIC
)

// kvm_run layout (§1.6): byte offsets into the mmap'd vCPU page.
const (
	runImmediateExit = 1
	runExitReason    = 8
	runMMIOPhysAddr  = 32
	runMMIOData      = 40
	runMMIOLen       = 48
	runMMIOIsWrite   = 52
	runHypercallNr   = 32
	runSysEventType  = 32
	runFailReason    = 32
	runInternalSub   = 32
)

// Exit reasons.
const (
	exitHypercall     = 3
	exitMMIO          = 6
	exitFailEntry     = 9
	exitIntr          = 10
	exitInternalError = 17
	exitSystemEvent   = 24
	exitARMNISV       = 28
)

// KVM_EXIT_SYSTEM_EVENT types.
const (
	systemEventShutdown = 1
	systemEventReset    = 2
)

// kvm_vcpu_init features[0] bits (§1.8).
const (
	featurePowerOff    = 1 << 0
	featurePSCI02      = 1 << 2
	featurePtrAuthAddr = 1 << 5 // requested together with featurePtrAuthGen (api.rst)
	featurePtrAuthGen  = 1 << 6
)

// KVM_GET/SET_MP_STATE values (§1.11).
const (
	mpStateRunnable = 0
	mpStateStopped  = 5
)

// Device types and vGICv3 attributes (arch/arm64/include/uapi/asm/kvm.h).
const (
	devTypeARMVGICv3     = 7
	vgicGrpAddr          = 0
	vgicGrpNrIRQs        = 3
	vgicGrpCtrl          = 4
	vgicV3AddrTypeDist   = 2
	vgicV3AddrTypeRedist = 3
	vgicCtrlInit         = 0
)

// SMCCC filter (Linux 6.4+, Documentation/virt/kvm/devices/vm.rst).
const (
	vmSMCCCCtrl          = 0 // attribute group on the VM fd
	vmSMCCCFilter        = 0 // attribute
	smcccFilterFwdToUser = 2
)

// pstateEL1hMasked is EL1h with D, A, I and F masked (booting.rst).
const pstateEL1hMasked = 0x3c5

// C struct mirrors; their sizes are asserted in ioctl_unsafe.go.

type userspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// memLogDirtyPages is KVM_MEM_LOG_DIRTY_PAGES, a memory-slot flag (§1.12).
const memLogDirtyPages = 1 << 0

type dirtyLog struct {
	Slot   uint32
	_      uint32
	Bitmap uint64 // user pointer to ALIGN(npages, 64)/8 bytes
}

type vcpuInit struct {
	Target   uint32
	Features [7]uint32
}

// ioEventFD is struct kvm_ioeventfd (virtio.md §8.1).
type ioEventFD struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]byte
}

const ioEventFDDatamatch = 1 // KVM_IOEVENTFD_FLAG_DATAMATCH

type irqLevel struct {
	IRQ   uint32
	Level uint32
}

type oneReg struct {
	ID   uint64
	Addr uint64
}

type createDevice struct {
	Type  uint32
	Fd    uint32
	Flags uint32
}

type deviceAttr struct {
	Flags uint32
	Group uint32
	Attr  uint64
	Addr  uint64
}

type smcccFilter struct {
	Base        uint32
	NrFunctions uint32
	Action      uint8
	_           [15]uint8
}
