package hvf

import "github.com/squibvm/squib/snapshot"

// SysReg is hv_sys_reg_t, a 16-bit system-register number packed as in the
// MRS/MSR instruction's bits [20:5]: op0<<14 | op1<<11 | CRn<<7 | CRm<<3 | op2
// (hv_vcpu_types.h; hvf.md §3.5). The same packing names registers in traps
// (see sysRegTrap) and is gic's ICC_* encoding.
type SysReg uint16

// EncodeSysReg packs an (op0, op1, CRn, CRm, op2) register name.
func EncodeSysReg(op0, op1, crn, crm, op2 uint8) SysReg {
	return SysReg(snapshot.SysReg(op0, op1, crn, crm, op2))
}

// System registers squib reads or writes (hv_sys_reg_t values, which are
// the architectural encodings of Arm ARM D19).
const (
	MPIDR_EL1      SysReg = 0xc005 // (3,0,0,0,5)
	SCTLR_EL1      SysReg = 0xc080 // (3,0,1,0,0)
	CPACR_EL1      SysReg = 0xc082 // (3,0,1,0,2)
	TTBR0_EL1      SysReg = 0xc100 // (3,0,2,0,0)
	TTBR1_EL1      SysReg = 0xc101 // (3,0,2,0,1)
	TCR_EL1        SysReg = 0xc102 // (3,0,2,0,2)
	SPSR_EL1       SysReg = 0xc200 // (3,0,4,0,0)
	ELR_EL1        SysReg = 0xc201 // (3,0,4,0,1)
	SP_EL0         SysReg = 0xc208 // (3,0,4,1,0)
	AFSR0_EL1      SysReg = 0xc288 // (3,0,5,1,0)
	AFSR1_EL1      SysReg = 0xc289 // (3,0,5,1,1)
	ESR_EL1        SysReg = 0xc290 // (3,0,5,2,0)
	FAR_EL1        SysReg = 0xc300 // (3,0,6,0,0)
	PAR_EL1        SysReg = 0xc3a0 // (3,0,7,4,0)
	MAIR_EL1       SysReg = 0xc510 // (3,0,10,2,0)
	AMAIR_EL1      SysReg = 0xc518 // (3,0,10,3,0)
	VBAR_EL1       SysReg = 0xc600 // (3,0,12,0,0)
	CONTEXTIDR_EL1 SysReg = 0xc681 // (3,0,13,0,1)
	TPIDR_EL1      SysReg = 0xc684 // (3,0,13,0,4)
	CNTKCTL_EL1    SysReg = 0xc708 // (3,0,14,1,0)
	CSSELR_EL1     SysReg = 0xd000 // (3,2,0,0,0)
	TPIDR_EL0      SysReg = 0xde82 // (3,3,13,0,2)
	TPIDRRO_EL0    SysReg = 0xde83 // (3,3,13,0,3)
	CNTV_CTL_EL0   SysReg = 0xdf19 // (3,3,14,3,1)
	CNTV_CVAL_EL0  SysReg = 0xdf1a // (3,3,14,3,2)
	SP_EL1         SysReg = 0xe208 // (3,4,4,1,0)
	MDSCR_EL1      SysReg = 0x8012 // (2,0,0,2,2)

	// Pointer-authentication keys, 128 bits each as LO (bits 63:0) and HI.
	APIAKEYLO_EL1 SysReg = 0xc108 // (3,0,2,1,0)
	APIAKEYHI_EL1 SysReg = 0xc109 // (3,0,2,1,1)
	APIBKEYLO_EL1 SysReg = 0xc10a // (3,0,2,1,2)
	APIBKEYHI_EL1 SysReg = 0xc10b // (3,0,2,1,3)
	APDAKEYLO_EL1 SysReg = 0xc110 // (3,0,2,2,0)
	APDAKEYHI_EL1 SysReg = 0xc111 // (3,0,2,2,1)
	APDBKEYLO_EL1 SysReg = 0xc112 // (3,0,2,2,2)
	APDBKEYHI_EL1 SysReg = 0xc113 // (3,0,2,2,3)
	APGAKEYLO_EL1 SysReg = 0xc118 // (3,0,2,3,0)
	APGAKEYHI_EL1 SysReg = 0xc119 // (3,0,2,3,1)

	// Software context numbers (FEAT_CSV2_2), macOS 15.2 and later.
	SCXTNUM_EL1 SysReg = 0xc687 // (3,0,13,0,7)
	SCXTNUM_EL0 SysReg = 0xde87 // (3,3,13,0,7)

	// ID registers (read-only to the guest). ZFR0 and SMFR0 are macOS
	// 15.2 additions.
	MIDR_EL1         SysReg = 0xc000 // (3,0,0,0,0)
	ID_AA64PFR0_EL1  SysReg = 0xc020 // (3,0,0,4,0)
	ID_AA64PFR1_EL1  SysReg = 0xc021 // (3,0,0,4,1)
	ID_AA64ZFR0_EL1  SysReg = 0xc024 // (3,0,0,4,4)
	ID_AA64SMFR0_EL1 SysReg = 0xc025 // (3,0,0,4,5)
	ID_AA64DFR0_EL1  SysReg = 0xc028 // (3,0,0,5,0)
	ID_AA64DFR1_EL1  SysReg = 0xc029 // (3,0,0,5,1)
	ID_AA64ISAR0_EL1 SysReg = 0xc030 // (3,0,0,6,0)
	ID_AA64ISAR1_EL1 SysReg = 0xc031 // (3,0,0,6,1)
	ID_AA64MMFR0_EL1 SysReg = 0xc038 // (3,0,0,7,0)
	ID_AA64MMFR1_EL1 SysReg = 0xc039 // (3,0,0,7,1)
	ID_AA64MMFR2_EL1 SysReg = 0xc03a // (3,0,0,7,2)
)

// Registers that are not hv_sys_reg_t values but that a guest may trap on.
const (
	CNTPCT_EL0   SysReg = 0xdf01 // (3,3,14,0,1), physical counter
	CNTPCTSS_EL0 SysReg = 0xdf05 // (3,3,14,0,5), self-synchronised physical counter
)

// resetSysRegs are the EL1 registers PowerOn puts back to the values
// hv_vcpu_create gave them, so that a vCPU started again by PSCI CPU_ON after
// CPU_OFF enters with its MMU off, no stale exception state, a disabled timer
// and debug off, as after a reset (DEN0022 §6.4, "CPU_ON"). MPIDR_EL1 keeps
// the value squib assigned.
var resetSysRegs = []SysReg{
	SCTLR_EL1, CPACR_EL1, TTBR0_EL1, TTBR1_EL1, TCR_EL1, SPSR_EL1, ELR_EL1,
	SP_EL0, SP_EL1, AFSR0_EL1, AFSR1_EL1, ESR_EL1, FAR_EL1, PAR_EL1, MAIR_EL1,
	AMAIR_EL1, VBAR_EL1, CONTEXTIDR_EL1, TPIDR_EL1, CNTKCTL_EL1, CSSELR_EL1,
	TPIDR_EL0, TPIDRRO_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, MDSCR_EL1,
}
