package hvf

import (
	"testing"

	"github.com/squibvm/squib/gic"
)

// Every system register squib names, with its (op0, op1, CRn, CRm, op2)
// from the Arm ARM and the hv_sys_reg_t value in hvf.md §3.5 (CNTPCT_EL0 and
// CNTPCTSS_EL0 are not hv_sys_reg_t values; their encodings are the Arm
// ARM's, packed the same way).
var sysRegTable = []struct {
	name  string
	reg   SysReg
	tuple [5]uint8
	doc   uint16
}{
	{"MPIDR_EL1", MPIDR_EL1, [5]uint8{3, 0, 0, 0, 5}, 0xc005},
	{"SCTLR_EL1", SCTLR_EL1, [5]uint8{3, 0, 1, 0, 0}, 0xc080},
	{"CPACR_EL1", CPACR_EL1, [5]uint8{3, 0, 1, 0, 2}, 0xc082},
	{"TTBR0_EL1", TTBR0_EL1, [5]uint8{3, 0, 2, 0, 0}, 0xc100},
	{"TTBR1_EL1", TTBR1_EL1, [5]uint8{3, 0, 2, 0, 1}, 0xc101},
	{"TCR_EL1", TCR_EL1, [5]uint8{3, 0, 2, 0, 2}, 0xc102},
	{"SPSR_EL1", SPSR_EL1, [5]uint8{3, 0, 4, 0, 0}, 0xc200},
	{"ELR_EL1", ELR_EL1, [5]uint8{3, 0, 4, 0, 1}, 0xc201},
	{"SP_EL0", SP_EL0, [5]uint8{3, 0, 4, 1, 0}, 0xc208},
	{"AFSR0_EL1", AFSR0_EL1, [5]uint8{3, 0, 5, 1, 0}, 0xc288},
	{"AFSR1_EL1", AFSR1_EL1, [5]uint8{3, 0, 5, 1, 1}, 0xc289},
	{"ESR_EL1", ESR_EL1, [5]uint8{3, 0, 5, 2, 0}, 0xc290},
	{"FAR_EL1", FAR_EL1, [5]uint8{3, 0, 6, 0, 0}, 0xc300},
	{"PAR_EL1", PAR_EL1, [5]uint8{3, 0, 7, 4, 0}, 0xc3a0},
	{"MAIR_EL1", MAIR_EL1, [5]uint8{3, 0, 10, 2, 0}, 0xc510},
	{"AMAIR_EL1", AMAIR_EL1, [5]uint8{3, 0, 10, 3, 0}, 0xc518},
	{"VBAR_EL1", VBAR_EL1, [5]uint8{3, 0, 12, 0, 0}, 0xc600},
	{"CONTEXTIDR_EL1", CONTEXTIDR_EL1, [5]uint8{3, 0, 13, 0, 1}, 0xc681},
	{"TPIDR_EL1", TPIDR_EL1, [5]uint8{3, 0, 13, 0, 4}, 0xc684},
	{"CNTKCTL_EL1", CNTKCTL_EL1, [5]uint8{3, 0, 14, 1, 0}, 0xc708},
	{"CSSELR_EL1", CSSELR_EL1, [5]uint8{3, 2, 0, 0, 0}, 0xd000},
	{"TPIDR_EL0", TPIDR_EL0, [5]uint8{3, 3, 13, 0, 2}, 0xde82},
	{"TPIDRRO_EL0", TPIDRRO_EL0, [5]uint8{3, 3, 13, 0, 3}, 0xde83},
	{"CNTV_CTL_EL0", CNTV_CTL_EL0, [5]uint8{3, 3, 14, 3, 1}, 0xdf19},
	{"CNTV_CVAL_EL0", CNTV_CVAL_EL0, [5]uint8{3, 3, 14, 3, 2}, 0xdf1a},
	{"SP_EL1", SP_EL1, [5]uint8{3, 4, 4, 1, 0}, 0xe208},
	{"MDSCR_EL1", MDSCR_EL1, [5]uint8{2, 0, 0, 2, 2}, 0x8012},
	{"APIAKEYLO_EL1", APIAKEYLO_EL1, [5]uint8{3, 0, 2, 1, 0}, 0xc108},
	{"APIAKEYHI_EL1", APIAKEYHI_EL1, [5]uint8{3, 0, 2, 1, 1}, 0xc109},
	{"APIBKEYLO_EL1", APIBKEYLO_EL1, [5]uint8{3, 0, 2, 1, 2}, 0xc10a},
	{"APIBKEYHI_EL1", APIBKEYHI_EL1, [5]uint8{3, 0, 2, 1, 3}, 0xc10b},
	{"APDAKEYLO_EL1", APDAKEYLO_EL1, [5]uint8{3, 0, 2, 2, 0}, 0xc110},
	{"APDAKEYHI_EL1", APDAKEYHI_EL1, [5]uint8{3, 0, 2, 2, 1}, 0xc111},
	{"APDBKEYLO_EL1", APDBKEYLO_EL1, [5]uint8{3, 0, 2, 2, 2}, 0xc112},
	{"APDBKEYHI_EL1", APDBKEYHI_EL1, [5]uint8{3, 0, 2, 2, 3}, 0xc113},
	{"APGAKEYLO_EL1", APGAKEYLO_EL1, [5]uint8{3, 0, 2, 3, 0}, 0xc118},
	{"APGAKEYHI_EL1", APGAKEYHI_EL1, [5]uint8{3, 0, 2, 3, 1}, 0xc119},
	{"SCXTNUM_EL1", SCXTNUM_EL1, [5]uint8{3, 0, 13, 0, 7}, 0xc687},
	{"SCXTNUM_EL0", SCXTNUM_EL0, [5]uint8{3, 3, 13, 0, 7}, 0xde87},
	{"MIDR_EL1", MIDR_EL1, [5]uint8{3, 0, 0, 0, 0}, 0xc000},
	{"ID_AA64PFR0_EL1", ID_AA64PFR0_EL1, [5]uint8{3, 0, 0, 4, 0}, 0xc020},
	{"ID_AA64PFR1_EL1", ID_AA64PFR1_EL1, [5]uint8{3, 0, 0, 4, 1}, 0xc021},
	{"ID_AA64ZFR0_EL1", ID_AA64ZFR0_EL1, [5]uint8{3, 0, 0, 4, 4}, 0xc024},
	{"ID_AA64SMFR0_EL1", ID_AA64SMFR0_EL1, [5]uint8{3, 0, 0, 4, 5}, 0xc025},
	{"ID_AA64DFR0_EL1", ID_AA64DFR0_EL1, [5]uint8{3, 0, 0, 5, 0}, 0xc028},
	{"ID_AA64DFR1_EL1", ID_AA64DFR1_EL1, [5]uint8{3, 0, 0, 5, 1}, 0xc029},
	{"ID_AA64ISAR0_EL1", ID_AA64ISAR0_EL1, [5]uint8{3, 0, 0, 6, 0}, 0xc030},
	{"ID_AA64ISAR1_EL1", ID_AA64ISAR1_EL1, [5]uint8{3, 0, 0, 6, 1}, 0xc031},
	{"ID_AA64MMFR0_EL1", ID_AA64MMFR0_EL1, [5]uint8{3, 0, 0, 7, 0}, 0xc038},
	{"ID_AA64MMFR1_EL1", ID_AA64MMFR1_EL1, [5]uint8{3, 0, 0, 7, 1}, 0xc039},
	{"ID_AA64MMFR2_EL1", ID_AA64MMFR2_EL1, [5]uint8{3, 0, 0, 7, 2}, 0xc03a},
	{"CNTPCT_EL0", CNTPCT_EL0, [5]uint8{3, 3, 14, 0, 1}, 0xdf01},
	{"CNTPCTSS_EL0", CNTPCTSS_EL0, [5]uint8{3, 3, 14, 0, 5}, 0xdf05},
}

func TestSysRegEncodings(t *testing.T) {
	for _, c := range sysRegTable {
		if uint16(c.reg) != c.doc {
			t.Errorf("%s = %#x, hvf.md says %#x", c.name, uint16(c.reg), c.doc)
		}
		if got := EncodeSysReg(c.tuple[0], c.tuple[1], c.tuple[2], c.tuple[3], c.tuple[4]); got != c.reg {
			t.Errorf("EncodeSysReg%v = %#x, want %s = %#x", c.tuple, uint16(got), c.name, uint16(c.reg))
		}
	}
}

// hvf.md §3.5 gives the debug registers as formulas: DBGBVR<n>_EL1 =
// 0x8004 + 8n = (2,0,0,n,4), and MDCCINT_EL1 = 0x8010 = (2,0,0,2,0).
func TestEncodeSysRegFormulas(t *testing.T) {
	for n := range uint8(16) {
		for op2, base := range map[uint8]uint16{4: 0x8004, 5: 0x8005, 6: 0x8006, 7: 0x8007} {
			if got, want := EncodeSysReg(2, 0, 0, n, op2), base+8*uint16(n); uint16(got) != want {
				t.Errorf("EncodeSysReg(2,0,0,%d,%d) = %#x, want %#x", n, op2, uint16(got), want)
			}
		}
	}
	if got := EncodeSysReg(2, 0, 0, 2, 0); got != 0x8010 {
		t.Errorf("MDCCINT_EL1 = %#x, want 0x8010", uint16(got))
	}
	if got := EncodeSysReg(3, 4, 12, 9, 5); got != 0xe64d {
		t.Errorf("ICC_SRE_EL2 = %#x, want 0xe64d", uint16(got))
	}
}

func TestResetSysRegs(t *testing.T) {
	seen := map[SysReg]bool{}
	for _, r := range resetSysRegs {
		if seen[r] {
			t.Errorf("%#x listed twice", uint16(r))
		}
		seen[r] = true
	}
	if seen[MPIDR_EL1] {
		t.Error("PowerOn must keep MPIDR_EL1, which the GIC relies on")
	}
	for _, r := range []SysReg{SCTLR_EL1, VBAR_EL1, TTBR0_EL1, TTBR1_EL1, TCR_EL1, CNTV_CTL_EL0, MDSCR_EL1} {
		if !seen[r] {
			t.Errorf("%#x is not reset by PowerOn", uint16(r))
		}
	}
}

// hv_gic_icc_reg_t values (hvf.md §3.8) equal the gic package's encodings.
func TestICCRegs(t *testing.T) {
	doc := map[uint16]uint16{
		gic.ICC_PMR_EL1: 0xc230, gic.ICC_BPR0_EL1: 0xc643, gic.ICC_AP0R0_EL1: 0xc644,
		gic.ICC_AP1R0_EL1: 0xc648, gic.ICC_BPR1_EL1: 0xc663, gic.ICC_CTLR_EL1: 0xc664,
		gic.ICC_SRE_EL1: 0xc665, gic.ICC_IGRPEN0_EL1: 0xc666, gic.ICC_IGRPEN1_EL1: 0xc667,
	}
	if len(iccRegs) != len(doc) {
		t.Errorf("%d ICC registers saved, want the %d of hvf.md (RPR is read-only)", len(iccRegs), len(doc))
	}
	for _, r := range iccRegs {
		if want, ok := doc[r]; !ok || r != want {
			t.Errorf("ICC register %#x is not one of hvf.md's", r)
		}
	}
	if iccRegs[0] != gic.ICC_SRE_EL1 {
		t.Error("ICC_SRE_EL1 must be restored first")
	}
}
