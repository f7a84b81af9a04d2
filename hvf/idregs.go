package hvf

import (
	"fmt"
	"maps"
	"slices"

	"github.com/squibvm/squib/snapshot"
)

// The guest's view of its CPU, in pure code tested on any host: which
// features squib hides because it cannot save their state, which ID
// registers a snapshot records, and the check a restore makes with them.

// hv_feature_reg_t values (hv_vcpu_types.h; hvf.md §3.7) of the ID registers
// that are not hv_sys_reg_t values, read from a vCPU configuration.
const (
	HV_FEATURE_REG_CTR_EL0   uint32 = 9
	HV_FEATURE_REG_CLIDR_EL1 uint32 = 10
	HV_FEATURE_REG_DCZID_EL0 uint32 = 11
)

// idSysRegs are the ID registers a snapshot records that hv_vcpu_get_sys_reg
// reads (hvf.md §3.5): every hv_sys_reg_t value for which snapshot.IDReg
// holds. ID_AA64ZFR0_EL1 and ID_AA64SMFR0_EL1 exist from macOS 15.2.
var idSysRegs = []SysReg{
	MIDR_EL1, ID_AA64PFR0_EL1, ID_AA64PFR1_EL1, ID_AA64ZFR0_EL1, ID_AA64SMFR0_EL1,
	ID_AA64DFR0_EL1, ID_AA64DFR1_EL1, ID_AA64ISAR0_EL1, ID_AA64ISAR1_EL1,
	ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1,
}

// configIDRegs are the ID registers a snapshot records that only the vCPU
// configuration gives (hv_vcpu_config_get_feature_reg): their
// hv_feature_reg_t and their encoding, the key in snapshot.VCPU.Sys.
var configIDRegs = []struct {
	feature uint32
	enc     uint16
}{
	{HV_FEATURE_REG_CTR_EL0, snapshot.SysReg(3, 3, 0, 0, 1)},
	{HV_FEATURE_REG_CLIDR_EL1, snapshot.SysReg(3, 1, 0, 0, 1)},
	{HV_FEATURE_REG_DCZID_EL0, snapshot.SysReg(3, 3, 0, 0, 7)},
}

// ID register fields (Arm ARM D19.2), 4 bits each.
const (
	pfr0SVE     uint64 = 0xf << 32 // ID_AA64PFR0_EL1.SVE
	pfr1MTE     uint64 = 0xf << 8  // ID_AA64PFR1_EL1.MTE
	pfr1SME     uint64 = 0xf << 24 // ID_AA64PFR1_EL1.SME
	pfr1MTEfrac uint64 = 0xf << 40 // ID_AA64PFR1_EL1.MTE_frac
	pfr1MTEX    uint64 = 0xf << 52 // ID_AA64PFR1_EL1.MTEX
)

// hiddenFeatures are the ID register fields squib sets to 0 ("not
// implemented") before a vCPU first runs, because squib cannot save the
// state they bring: it saves V0-V31 but no SVE Z/P registers or ZCR_EL1,
// no SME state (ZA, ZT0, streaming mode, SMCR_EL1, SMPRI_EL1, TPIDR2_EL0),
// and Hypervisor.framework has no MTE registers at all (hvf.md §3.5).
var hiddenFeatures = []struct {
	reg  SysReg
	mask uint64
}{
	{ID_AA64PFR0_EL1, pfr0SVE},
	{ID_AA64PFR1_EL1, pfr1MTE | pfr1SME | pfr1MTEfrac | pfr1MTEX},
	{ID_AA64ZFR0_EL1, ^uint64(0)},  // every SVE feature
	{ID_AA64SMFR0_EL1, ^uint64(0)}, // every SME feature
}

// sanitizeIDReg returns the value ID register r shows the guest: x, the
// framework's value, with hiddenFeatures cleared. Other registers and
// fields, pointer authentication's among them, are left as they are.
func sanitizeIDReg(r SysReg, x uint64) uint64 {
	for _, h := range hiddenFeatures {
		if h.reg == r {
			x &^= h.mask
		}
	}
	return x
}

// checkCPUModel refuses to restore vCPU vcpu's saved registers onto a vCPU
// whose ID registers are host (encoding → value, as idRegs reads them):
// every ID register in saved must be the host's (snapshot.CheckIDRegs), and
// every one the host shows must be in saved, unless it is 0 here (a
// register the saving framework did not have, such as ID_AA64ZFR0_EL1
// before macOS 15.2, whose features squib hides anyway).
func checkCPUModel(vcpu int, saved, host map[uint16]uint64) error {
	err := snapshot.CheckIDRegs(vcpu, saved, func(enc uint16) (uint64, bool) {
		x, ok := host[enc]
		return x, ok
	})
	if err != nil {
		return err
	}
	for _, enc := range slices.Sorted(maps.Keys(host)) {
		if _, ok := saved[enc]; !ok && host[enc] != 0 {
			return &snapshot.FormatError{Err: snapshot.ErrHost, Problem: fmt.Sprintf(
				"vCPU %d: the snapshot lacks ID register %s, which is %#x on this host", vcpu, snapshot.SysRegLabel(enc), host[enc])}
		}
	}
	return nil
}
