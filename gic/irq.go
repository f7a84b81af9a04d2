package gic

import "fmt"

// Interrupt numbering. A GIC INTID is the architectural interrupt number
// (IHI 0069, §2.2): SGIs 0-15, PPIs 16-31, SPIs 32-1019. Device trees name
// SPIs and PPIs relative to their first INTID (arm,gic-v3.yaml), and
// KVM_IRQ_LINE takes the INTID with a type and a vCPU index. This file is the
// one place that converts between them.

// SPI is a shared peripheral interrupt numbered as in a device tree's
// interrupt cell: INTID = 32 + SPI.
type SPI uint32

// INTID returns the GIC interrupt ID of s.
func (s SPI) INTID() uint32 { return 32 + uint32(s) }

// FDTCells returns the three "interrupts" cells for s: {0 (SPI), s, flags}.
func (s SPI) FDTCells(flags uint32) [3]uint32 { return [3]uint32{0, uint32(s), flags} }

func (s SPI) String() string { return fmt.Sprintf("SPI %d (INTID %d)", uint32(s), s.INTID()) }

// PPI is a private peripheral interrupt numbered as in a device tree's
// interrupt cell: INTID = 16 + PPI.
type PPI uint32

// INTID returns the GIC interrupt ID of p.
func (p PPI) INTID() uint32 { return 16 + uint32(p) }

// FDTCells returns the three "interrupts" cells for p: {1 (PPI), p, flags}.
// GICv3 has no CPU mask in the flags cell.
func (p PPI) FDTCells(flags uint32) [3]uint32 { return [3]uint32{1, uint32(p), flags} }

func (p PPI) String() string { return fmt.Sprintf("PPI %d (INTID %d)", uint32(p), p.INTID()) }

// Trigger types for the flags cell (dt-bindings/interrupt-controller/irq.h).
const (
	IRQEdgeRising = 1 // IRQ_TYPE_EDGE_RISING
	IRQLevelHigh  = 4 // IRQ_TYPE_LEVEL_HIGH
)

// PPIs of the architected timers and the GIC maintenance interrupt, as Linux
// and QEMU's virt board use them (Arm Base System Architecture, "PPI
// assignments"; HVF reserves the same INTIDs).
const (
	PPIMaintenance     PPI = 9  // GIC virtual CPU interface maintenance, INTID 25
	PPIHypTimer        PPI = 10 // EL2 physical timer (CNTHP), INTID 26
	PPIVirtTimer       PPI = 11 // EL1 virtual timer (CNTV), INTID 27
	PPISecurePhysTimer PPI = 13 // secure EL1 physical timer (CNTPS), INTID 29
	PPIPhysTimer       PPI = 14 // non-secure EL1 physical timer (CNTP), INTID 30
)

// TimerPPIs returns the timer PPIs in the order the "arm,armv8-timer"
// binding lists them in "interrupts": secure physical, non-secure physical,
// virtual, hypervisor physical.
func TimerPPIs() [4]PPI {
	return [4]PPI{PPISecurePhysTimer, PPIPhysTimer, PPIVirtTimer, PPIHypTimer}
}

// KVM_IRQ_LINE irq field layout (arch/arm64/include/uapi/asm/kvm.h):
// vcpu2_index[31:28] | irq_type[27:24] | vcpu_index[23:16] | irq_id[15:0].
// squib's devices raise SPIs only; the in-kernel vGIC drives the PPIs
// (timers) itself.
const (
	kvmARMIRQTypeShift = 24 // KVM_ARM_IRQ_TYPE_SHIFT
	kvmARMIRQTypeSPI   = 1  // KVM_ARM_IRQ_TYPE_SPI
)

// KVMIRQLineSPI returns the KVM_IRQ_LINE irq field that drives the SPI with
// GIC INTID intid (32-1019, not the SPI number).
func KVMIRQLineSPI(intid uint32) uint32 {
	return kvmARMIRQTypeSPI<<kvmARMIRQTypeShift | intid
}
