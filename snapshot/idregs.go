package snapshot

import (
	"maps"
	"slices"
)

// The ID-register rule. A guest reads its CPU's identity and features once,
// at boot (Linux picks its code paths, alternatives and errata workarounds
// from them), and never again. A snapshot therefore restores only onto a
// host whose guest-visible ID registers are the ones the guest saw: a
// register that differs refuses the load, naming it. There is no exception:
// even a host with more features than the guest saw is refused, since the
// guest's view of the CPU must stay true after the restore (a feature it
// believes absent may trap or act differently once the host has it).

// IDReg reports whether the system register with encoding enc is a
// guest-visible identification register covered by the rule: the ID space
// op0=3, op1=0, CRn=0, CRm=0..7 (MIDR_EL1, REVIDR_EL1, ID_AA64*_EL1 and the
// AArch32 ID registers) except MPIDR_EL1, which is per vCPU and restored;
// and CTR_EL0, CLIDR_EL1, AIDR_EL1 and DCZID_EL0.
func IDReg(enc uint16) bool {
	switch enc {
	case SysReg(3, 0, 0, 0, 5): // MPIDR_EL1
		return false
	case SysReg(3, 3, 0, 0, 1), SysReg(3, 1, 0, 0, 1), SysReg(3, 1, 0, 0, 7), SysReg(3, 3, 0, 0, 7):
		return true
	}
	return enc>>14 == 3 && enc>>11&7 == 0 && enc>>7&15 == 0 && enc>>3&15 <= 7
}

// sysRegNames are the names error messages and describe use for the
// registers squib checks or cares about most; others are spelled by
// SysRegName alone.
var sysRegNames = map[uint16]string{
	SysReg(3, 0, 0, 0, 0):  "MIDR_EL1",
	SysReg(3, 0, 0, 0, 6):  "REVIDR_EL1",
	SysReg(3, 0, 0, 4, 0):  "ID_AA64PFR0_EL1",
	SysReg(3, 0, 0, 4, 1):  "ID_AA64PFR1_EL1",
	SysReg(3, 0, 0, 4, 4):  "ID_AA64ZFR0_EL1",
	SysReg(3, 0, 0, 4, 5):  "ID_AA64SMFR0_EL1",
	SysReg(3, 0, 0, 5, 0):  "ID_AA64DFR0_EL1",
	SysReg(3, 0, 0, 5, 1):  "ID_AA64DFR1_EL1",
	SysReg(3, 0, 0, 6, 0):  "ID_AA64ISAR0_EL1",
	SysReg(3, 0, 0, 6, 1):  "ID_AA64ISAR1_EL1",
	SysReg(3, 0, 0, 6, 2):  "ID_AA64ISAR2_EL1",
	SysReg(3, 0, 0, 7, 0):  "ID_AA64MMFR0_EL1",
	SysReg(3, 0, 0, 7, 1):  "ID_AA64MMFR1_EL1",
	SysReg(3, 0, 0, 7, 2):  "ID_AA64MMFR2_EL1",
	SysReg(3, 0, 0, 7, 3):  "ID_AA64MMFR3_EL1",
	SysReg(3, 3, 0, 0, 1):  "CTR_EL0",
	SysReg(3, 1, 0, 0, 1):  "CLIDR_EL1",
	SysReg(3, 1, 0, 0, 7):  "AIDR_EL1",
	SysReg(3, 3, 0, 0, 7):  "DCZID_EL0",
	SysReg(3, 0, 2, 1, 0):  "APIAKEYLO_EL1",
	SysReg(3, 0, 2, 1, 1):  "APIAKEYHI_EL1",
	SysReg(3, 0, 2, 1, 2):  "APIBKEYLO_EL1",
	SysReg(3, 0, 2, 1, 3):  "APIBKEYHI_EL1",
	SysReg(3, 0, 2, 2, 0):  "APDAKEYLO_EL1",
	SysReg(3, 0, 2, 2, 1):  "APDAKEYHI_EL1",
	SysReg(3, 0, 2, 2, 2):  "APDBKEYLO_EL1",
	SysReg(3, 0, 2, 2, 3):  "APDBKEYHI_EL1",
	SysReg(3, 0, 2, 3, 0):  "APGAKEYLO_EL1",
	SysReg(3, 0, 2, 3, 1):  "APGAKEYHI_EL1",
	SysReg(3, 0, 1, 0, 0):  "SCTLR_EL1",
	SysReg(3, 0, 13, 0, 7): "SCXTNUM_EL1",
	SysReg(3, 3, 13, 0, 7): "SCXTNUM_EL0",
	SysReg(3, 3, 14, 2, 1): "CNTP_CTL_EL0",
	SysReg(3, 3, 14, 2, 2): "CNTP_CVAL_EL0",
	SysReg(3, 3, 14, 0, 1): "CNTPCT_EL0",
}

// SysRegLabel names a register for a message: its architectural name where
// squib knows it, with the generic spelling beside it.
func SysRegLabel(enc uint16) string {
	if n, ok := sysRegNames[enc]; ok {
		return n + " (" + SysRegName(enc) + ")"
	}
	if n, ok := dedicatedSysRegs[enc]; ok {
		return n + " (" + SysRegName(enc) + ")"
	}
	return SysRegName(enc)
}

// CheckIDRegs applies the ID-register rule to one vCPU: every ID register in
// saved must be readable on this host (host returns ok) with the same value.
// The error is one line naming the first register that differs, in
// encoding order. Registers the host has and the snapshot lacks are not
// checked here: the backend decides whether a missing register is allowed.
func CheckIDRegs(vcpu int, saved map[uint16]uint64, host func(enc uint16) (uint64, bool)) error {
	for _, enc := range slices.Sorted(maps.Keys(saved)) {
		if !IDReg(enc) {
			continue
		}
		want := saved[enc]
		got, ok := host(enc)
		switch {
		case !ok:
			return problem(ErrHost, "vCPU %d: the snapshot has ID register %s, which this host does not have", vcpu, SysRegLabel(enc))
		case got != want:
			return problem(ErrHost, "vCPU %d: ID register %s is %#x in the snapshot and %#x on this host: the guest would run on a CPU other than the one it booted on", vcpu, SysRegLabel(enc), want, got)
		}
	}
	return nil
}
