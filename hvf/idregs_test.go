package hvf

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/squibvm/squib/snapshot"
)

// Field values in, the values the guest may see out: SVE, SME and MTE go,
// everything else, pointer authentication included, stays.
func TestSanitizeIDReg(t *testing.T) {
	const (
		// ID_AA64PFR0_EL1: EL0-EL3 = 1, FP, AdvSIMD, GIC = 1, SVE = 1,
		// DIT = 1, CSV2 = 2, CSV3 = 1.
		pfr0 = 0x1 | 0x1<<4 | 0x1<<8 | 0x1<<12 | 0x1<<24 | 0x1<<32 | 0x1<<48 | 0x2<<56 | 0x1<<60
		// ID_AA64PFR1_EL1: BT = 1, SSBS = 2, MTE = 3, SME = 2,
		// CSV2_frac = 1, MTE_frac = 0xf, MTEX = 1.
		pfr1 = 0x1 | 0x2<<4 | 0x3<<8 | 0x2<<24 | 0x1<<32 | 0xf<<40 | 0x1<<52
		// ID_AA64ISAR1_EL1: DPB = 1, APA = 0, API = 5, JSCVT = 1,
		// FCMA = 1, LRCPC = 2, GPI = 1.
		isar1 = 0x1 | 0x5<<8 | 0x1<<12 | 0x1<<16 | 0x2<<20 | 0x1<<28
	)
	for _, c := range []struct {
		name    string
		reg     SysReg
		in, out uint64
	}{
		{"PFR0 without SVE", ID_AA64PFR0_EL1, pfr0, pfr0 &^ (0xf << 32)},
		{"PFR0 already clean", ID_AA64PFR0_EL1, pfr0 &^ (0xf << 32), pfr0 &^ (0xf << 32)},
		{"PFR1 keeps BT, SSBS, CSV2_frac", ID_AA64PFR1_EL1, pfr1, 0x1 | 0x2<<4 | 0x1<<32},
		{"ZFR0 all gone", ID_AA64ZFR0_EL1, 0x0110_0000_0011_0011, 0},
		{"SMFR0 all gone", ID_AA64SMFR0_EL1, 0x8000_0000_0000_0000 | 0xf<<32, 0},
		{"ISAR1 keeps pointer authentication", ID_AA64ISAR1_EL1, isar1, isar1},
		{"MIDR untouched", MIDR_EL1, 0x611f_0230, 0x611f_0230},
		{"MMFR0 untouched", ID_AA64MMFR0_EL1, ^uint64(0), ^uint64(0)},
	} {
		got := sanitizeIDReg(c.reg, c.in)
		if got != c.out {
			t.Errorf("%s: sanitizeIDReg(%#x) = %#x, want %#x", c.name, c.in, got, c.out)
		}
		if again := sanitizeIDReg(c.reg, got); again != got {
			t.Errorf("%s: not idempotent: %#x then %#x", c.name, got, again)
		}
	}
}

// The ID registers a snapshot records are hvf.md §3.5's hv_sys_reg_t values
// in the ID space and §3.7's feature registers that have none; all are ID
// registers to snapshot.CheckIDRegs, and none is written back.
func TestIDRegLists(t *testing.T) {
	doc := []uint16{0xc000, 0xc020, 0xc021, 0xc024, 0xc025, 0xc028, 0xc029, 0xc030, 0xc031, 0xc038, 0xc039, 0xc03a}
	var got []uint16
	for _, r := range idSysRegs {
		got = append(got, uint16(r))
		if !snapshot.IDReg(uint16(r)) {
			t.Errorf("%s is not an ID register to snapshot.IDReg", snapshot.SysRegLabel(uint16(r)))
		}
	}
	if !slices.Equal(got, doc) {
		t.Errorf("idSysRegs %#x, want hvf.md's %#x", got, doc)
	}
	if slices.Contains(idSysRegs, MPIDR_EL1) {
		t.Error("MPIDR_EL1 is per vCPU and restored, not an ID register")
	}
	want := map[uint32]uint16{9: snapshot.SysReg(3, 3, 0, 0, 1), 10: snapshot.SysReg(3, 1, 0, 0, 1), 11: snapshot.SysReg(3, 3, 0, 0, 7)}
	if len(configIDRegs) != len(want) {
		t.Errorf("%d configuration ID registers, want CTR_EL0, CLIDR_EL1, DCZID_EL0", len(configIDRegs))
	}
	for _, r := range configIDRegs {
		if want[r.feature] != r.enc || !snapshot.IDReg(r.enc) {
			t.Errorf("hv_feature_reg_t %d read as %s", r.feature, snapshot.SysRegLabel(r.enc))
		}
	}
	for _, h := range hiddenFeatures {
		if !slices.Contains(idSysRegs, h.reg) {
			t.Errorf("hidden features in %s, which snapshots do not record", snapshot.SysRegLabel(uint16(h.reg)))
		}
	}
}

func TestCheckCPUModel(t *testing.T) {
	midr, pfr0, zfr0, sctlr := uint16(MIDR_EL1), uint16(ID_AA64PFR0_EL1), uint16(ID_AA64ZFR0_EL1), uint16(SCTLR_EL1)
	host := map[uint16]uint64{midr: 0x611f0230, pfr0: 0x1101000011111111, zfr0: 0}
	saved := func(drop uint16, set map[uint16]uint64) map[uint16]uint64 {
		s := map[uint16]uint64{midr: 0x611f0230, pfr0: 0x1101000011111111, zfr0: 0, sctlr: 0x30d0198d}
		delete(s, drop)
		for k, v := range set {
			s[k] = v
		}
		return s
	}
	if err := checkCPUModel(0, saved(0, nil), host); err != nil {
		t.Errorf("same CPU: %v", err)
	}
	if err := checkCPUModel(0, saved(zfr0, nil), host); err != nil {
		t.Errorf("saved where ID_AA64ZFR0_EL1 did not exist, restored where it reads 0: %v", err)
	}
	for _, c := range []struct {
		name  string
		saved map[uint16]uint64
		want  string
	}{
		{"another CPU model", saved(0, map[uint16]uint64{midr: 0x611f0220}),
			"vCPU 1: ID register MIDR_EL1 (S3_0_C0_C0_0) is 0x611f0220 in the snapshot and 0x611f0230 on this host"},
		{"a feature more", saved(0, map[uint16]uint64{pfr0: 0x1101000111111111}), "ID_AA64PFR0_EL1"},
		{"no CPU model recorded", saved(midr, nil), "vCPU 1: the snapshot lacks ID register MIDR_EL1 (S3_0_C0_C0_0), which is 0x611f0230 on this host"},
		{"a register this framework lacks", saved(0, map[uint16]uint64{uint16(ID_AA64SMFR0_EL1): 0}), "ID_AA64SMFR0_EL1 (S3_0_C0_C4_5), which this host does not have"},
	} {
		err := checkCPUModel(1, c.saved, host)
		if !errors.Is(err, snapshot.ErrHost) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want snapshot.ErrHost with %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: the error is not one line: %q", c.name, err)
		}
	}
}
