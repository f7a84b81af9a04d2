package gic

// GIC CPU-interface system registers the backends save per vCPU, encoded as
// op0<<14 | op1<<11 | CRn<<7 | CRm<<3 | op2. KVM takes this value in the
// attr of KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS; HVF's hv_gic_icc_reg_t uses the
// same values. The (op0, op1, CRn, CRm, op2) tuples are from ARM IHI 0069,
// chapter 12 (GIC system registers).
//
// ICC_AP0R1-3 and ICC_AP1R1-3 exist only with 6 or 7 priority bits
// (ICC_CTLR_EL1.PRIbits + 1); HVF exposes only AP0R0 and AP1R0.
const (
	ICC_PMR_EL1     uint16 = 0xc230 // (3, 0, 4, 6, 0)
	ICC_BPR0_EL1    uint16 = 0xc643 // (3, 0, 12, 8, 3)
	ICC_AP0R0_EL1   uint16 = 0xc644 // (3, 0, 12, 8, 4)
	ICC_AP0R1_EL1   uint16 = 0xc645 // (3, 0, 12, 8, 5)
	ICC_AP0R2_EL1   uint16 = 0xc646 // (3, 0, 12, 8, 6)
	ICC_AP0R3_EL1   uint16 = 0xc647 // (3, 0, 12, 8, 7)
	ICC_AP1R0_EL1   uint16 = 0xc648 // (3, 0, 12, 9, 0)
	ICC_AP1R1_EL1   uint16 = 0xc649 // (3, 0, 12, 9, 1)
	ICC_AP1R2_EL1   uint16 = 0xc64a // (3, 0, 12, 9, 2)
	ICC_AP1R3_EL1   uint16 = 0xc64b // (3, 0, 12, 9, 3)
	ICC_BPR1_EL1    uint16 = 0xc663 // (3, 0, 12, 12, 3)
	ICC_CTLR_EL1    uint16 = 0xc664 // (3, 0, 12, 12, 4)
	ICC_SRE_EL1     uint16 = 0xc665 // (3, 0, 12, 12, 5)
	ICC_IGRPEN0_EL1 uint16 = 0xc666 // (3, 0, 12, 12, 6)
	ICC_IGRPEN1_EL1 uint16 = 0xc667 // (3, 0, 12, 12, 7)
)

// ICCRegs holds one vCPU's GIC CPU-interface registers, keyed by the ICC_*
// encodings above.
type ICCRegs map[uint16]uint64
