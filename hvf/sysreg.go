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
