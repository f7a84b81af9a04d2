package gic

import (
	"errors"
	"strings"
	"testing"
)

// sysreg encodes (op0, op1, CRn, CRm, op2) as KVM and HVF do.
func sysreg(op0, op1, crn, crm, op2 uint16) uint16 {
	return op0<<14 | op1<<11 | crn<<7 | crm<<3 | op2
}

// The tuples of kvm-arm64.md §2.2, and the values of hvf.md §3.8.
func TestICCEncodings(t *testing.T) {
	for _, tt := range []struct {
		name string
		got  uint16
		want uint16
		hvf  uint16 // hv_gic_icc_reg_t value, where HVF has the register
	}{
		{"ICC_PMR_EL1", ICC_PMR_EL1, sysreg(3, 0, 4, 6, 0), 0xc230},
		{"ICC_BPR0_EL1", ICC_BPR0_EL1, sysreg(3, 0, 12, 8, 3), 0xc643},
		{"ICC_AP0R0_EL1", ICC_AP0R0_EL1, sysreg(3, 0, 12, 8, 4), 0xc644},
		{"ICC_AP0R1_EL1", ICC_AP0R1_EL1, sysreg(3, 0, 12, 8, 5), 0},
		{"ICC_AP0R2_EL1", ICC_AP0R2_EL1, sysreg(3, 0, 12, 8, 6), 0},
		{"ICC_AP0R3_EL1", ICC_AP0R3_EL1, sysreg(3, 0, 12, 8, 7), 0},
		{"ICC_AP1R0_EL1", ICC_AP1R0_EL1, sysreg(3, 0, 12, 9, 0), 0xc648},
		{"ICC_AP1R1_EL1", ICC_AP1R1_EL1, sysreg(3, 0, 12, 9, 1), 0},
		{"ICC_AP1R2_EL1", ICC_AP1R2_EL1, sysreg(3, 0, 12, 9, 2), 0},
		{"ICC_AP1R3_EL1", ICC_AP1R3_EL1, sysreg(3, 0, 12, 9, 3), 0},
		{"ICC_BPR1_EL1", ICC_BPR1_EL1, sysreg(3, 0, 12, 12, 3), 0xc663},
		{"ICC_CTLR_EL1", ICC_CTLR_EL1, sysreg(3, 0, 12, 12, 4), 0xc664},
		{"ICC_SRE_EL1", ICC_SRE_EL1, sysreg(3, 0, 12, 12, 5), 0xc665},
		{"ICC_IGRPEN0_EL1", ICC_IGRPEN0_EL1, sysreg(3, 0, 12, 12, 6), 0xc666},
		{"ICC_IGRPEN1_EL1", ICC_IGRPEN1_EL1, sysreg(3, 0, 12, 12, 7), 0xc667},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %#04x, want %#04x", tt.name, tt.got, tt.want)
		}
		if tt.hvf != 0 && tt.got != tt.hvf {
			t.Errorf("%s = %#04x, HVF uses %#04x", tt.name, tt.got, tt.hvf)
		}
	}
}

func TestStateCheck(t *testing.T) {
	two := &State{Backend: BackendKVM, BackendVersion: "6.8.0", ICC: []ICCRegs{{ICC_PMR_EL1: 0xf0}, {}}}
	if err := two.Check(BackendKVM, 2); err != nil {
		t.Errorf("Check(kvm, 2) = %v, want nil", err)
	}
	for _, tt := range []struct {
		name    string
		s       *State
		backend string
		vcpus   int
		want    string
	}{
		{"other backend", two, BackendHVF, 2, `saved by the "kvm" backend, cannot be restored by "hvf"`},
		{"fewer vCPUs", two, BackendKVM, 1, "saved with 2 vCPUs, VM has 1"},
		{"more vCPUs", two, BackendKVM, 3, "saved with 2 vCPUs, VM has 3"},
		{"untagged", &State{ICC: make([]ICCRegs, 1)}, BackendHVF, 1, `saved by the "" backend`},
		{"missing", nil, BackendKVM, 1, "no GIC state"},
	} {
		err := tt.s.Check(tt.backend, tt.vcpus)
		if !errors.Is(err, ErrIncompatibleState) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Check() = %v; want ErrIncompatibleState mentioning %q", tt.name, err, tt.want)
		}
	}
}
