package snapshot

import (
	"errors"
	"strings"
	"testing"
)

func TestIDReg(t *testing.T) {
	for enc, want := range map[uint16]bool{
		SysReg(3, 0, 0, 0, 0):  true,  // MIDR_EL1
		SysReg(3, 0, 0, 0, 5):  false, // MPIDR_EL1: per vCPU, restored
		SysReg(3, 0, 0, 6, 1):  true,  // ID_AA64ISAR1_EL1
		SysReg(3, 0, 0, 7, 7):  true,  // the last of the ID space
		SysReg(3, 3, 0, 0, 1):  true,  // CTR_EL0
		SysReg(3, 1, 0, 0, 1):  true,  // CLIDR_EL1
		SysReg(3, 0, 1, 0, 0):  false, // SCTLR_EL1
		SysReg(3, 0, 2, 1, 0):  false, // APIAKEYLO_EL1
		SysReg(3, 2, 0, 0, 0):  false, // CSSELR_EL1
		SysReg(3, 3, 14, 0, 0): false, // CNTFRQ_EL0
	} {
		if IDReg(enc) != want {
			t.Errorf("IDReg(%s) = %v", SysRegLabel(enc), !want)
		}
	}
}

func TestCheckIDRegs(t *testing.T) {
	midr, isar1, sctlr := SysReg(3, 0, 0, 0, 0), SysReg(3, 0, 0, 6, 1), SysReg(3, 0, 1, 0, 0)
	host := map[uint16]uint64{midr: 0x410fd4f0, isar1: 0x1111, sctlr: 5}
	read := func(enc uint16) (uint64, bool) { x, ok := host[enc]; return x, ok }
	if err := CheckIDRegs(0, map[uint16]uint64{midr: 0x410fd4f0, isar1: 0x1111, sctlr: 7}, read); err != nil {
		t.Errorf("equal ID registers, other SCTLR: %v", err)
	}
	err := CheckIDRegs(1, map[uint16]uint64{midr: 0x610f0000, isar1: 0x1111}, read)
	if !errors.Is(err, ErrHost) || !strings.Contains(err.Error(), "vCPU 1: ID register MIDR_EL1 (S3_0_C0_C0_0) is 0x610f0000 in the snapshot and 0x410fd4f0 on this host") {
		t.Errorf("other MIDR: %v", err)
	}
	delete(host, isar1)
	if err := CheckIDRegs(0, map[uint16]uint64{isar1: 0x1111}, read); !errors.Is(err, ErrHost) || !strings.Contains(err.Error(), "ID_AA64ISAR1_EL1") {
		t.Errorf("register the host lacks: %v", err)
	}
}
