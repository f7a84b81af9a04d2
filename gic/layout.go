// Package gic describes the GICv3 interrupt controller of a squib guest:
// where its distributor and redistributors sit in guest physical memory, how
// interrupts are numbered (GIC INTID, device-tree interrupt cells,
// KVM_IRQ_LINE), the controller's device-tree node, and the backend-tagged
// state kept in a snapshot. It does not emulate the GIC; KVM and
// Hypervisor.framework provide it in the host.
//
// Sources: ARM IHI 0069 (GICv3 and GICv4 architecture specification);
// Linux Documentation/virt/kvm/devices/arm-vgic-v3.rst and
// Documentation/virt/kvm/api.rst (KVM_IRQ_LINE);
// Documentation/devicetree/bindings/interrupt-controller/arm,gic-v3.yaml.
package gic

import "fmt"

// Guest physical memory map of the GIC, as on QEMU's virt board. There is
// no ITS.
//
//	0x0800_0000 +--------------------------------------+
//	            | GICD, distributor (64 KiB)           |
//	0x0801_0000 +--------------------------------------+
//	            | unused (QEMU puts its ITS here)      |
//	0x080A_0000 +--------------------------------------+
//	            | GICR vCPU 0: RD_base + SGI_base      |
//	            |              (2 x 64 KiB)            |
//	            | GICR vCPU 1 ...                      |
//	            | ... room for MaxVCPUs() = 123        |
//	0x0900_0000 +--------------------------------------+ UART
const (
	DistBase         = 0x08000000 // GICD base, 64 KiB aligned
	DistSize         = 0x10000    // KVM_VGIC_V3_DIST_SIZE
	RedistBase       = 0x080A0000 // first redistributor, 64 KiB aligned
	RedistSizePerCPU = 0x20000    // KVM_VGIC_V3_REDIST_SIZE: RD_base and SGI_base frames
	RedistLimit      = 0x09000000 // end of the redistributor region (exclusive)
)

// DefaultNumIRQs is the number of interrupts NewLayout configures: the 32
// private ones (SGIs and PPIs) and 96 SPIs, as Firecracker uses.
const DefaultNumIRQs = 128

// maxSPIINTID is one past the last SPI INTID; 1020-1023 are special
// (IHI 0069, §2.2 "INTIDs").
const maxSPIINTID = 1020

// MaxVCPUs returns how many redistributors, one per vCPU, fit between
// RedistBase and RedistLimit.
func MaxVCPUs() int {
	return (RedistLimit - RedistBase) / RedistSizePerCPU
}

// Layout is the GIC configuration of one VM.
type Layout struct {
	VCPUs int // number of vCPUs, hence of redistributors

	// NumIRQs is the number of interrupts including the 32 private ones:
	// 64 to 1024 in steps of 32 (KVM_DEV_ARM_VGIC_GRP_NR_IRQS).
	NumIRQs uint32

	nextSPI SPI // next SPI AllocSPI hands out
}

// NewLayout returns the layout for a VM with vcpus vCPUs and DefaultNumIRQs
// interrupts.
func NewLayout(vcpus int) (*Layout, error) {
	if vcpus < 1 || vcpus > MaxVCPUs() {
		return nil, fmt.Errorf("gic: %d vCPUs requested; the redistributor region %#x-%#x holds 1 to %d",
			vcpus, RedistBase, RedistLimit, MaxVCPUs())
	}
	return &Layout{VCPUs: vcpus, NumIRQs: DefaultNumIRQs}, nil
}

// RedistSize returns the size of the redistributor region actually used:
// one RedistSizePerCPU frame pair per vCPU, starting at RedistBase.
func (l *Layout) RedistSize() uint64 {
	return uint64(l.VCPUs) * RedistSizePerCPU
}

// AllocSPI hands out the next unused SPI, starting from SPI 0 (INTID 32).
// It fails once every SPI below NumIRQs is taken.
func (l *Layout) AllocSPI() (SPI, error) {
	limit := min(l.NumIRQs, maxSPIINTID)
	if l.nextSPI.INTID() >= limit {
		return 0, fmt.Errorf("gic: all SPIs below INTID %d are allocated", limit)
	}
	s := l.nextSPI
	l.nextSPI++
	return s, nil
}
