package hvf

import "testing"

// esr builds an ESR_EL2 value: EC, IL = 1 (32-bit instruction) and ISS.
func esr(ec exceptionClass, iss uint32) syndrome {
	return syndrome(uint64(ec)<<26 | 1<<25 | uint64(iss&0x1ffffff))
}

func TestSyndromeFields(t *testing.T) {
	s := syndrome(0x93810046) // str w1, [x0] to an unmapped IPA, as Linux guests produce
	if s.ec() != ecDataAbortLower || s.iss() != 0x1810046 {
		t.Errorf("EC %#x ISS %#x, want 0x24 0x1810046", uint8(s.ec()), s.iss())
	}
	if s := esr(ecBRK64, 0x1ffffff) | 0xffffffff_00000000; s.ec() != ecBRK64 || s.iss() != 0x1ffffff {
		t.Errorf("upper bits leak into EC/ISS: %#x %#x", uint8(s.ec()), s.iss())
	}
	if got := ecHVC64.String(); got != "HVC (EC 0x16)" {
		t.Errorf("ecHVC64 = %q", got)
	}
	if got := exceptionClass(0x2f).String(); got != "EC 0x2f" {
		t.Errorf("unnamed EC = %q", got)
	}
}

// Each data-abort ISS field alone, then a combination (layout of QEMU's
// syn_data_abort_with_iss and the Arm ARM).
func TestDecodeDataAbort(t *testing.T) {
	for _, c := range []struct {
		iss  uint32
		want dataAbort
	}{
		{1 << 24, dataAbort{isv: true}},
		{3 << 22, dataAbort{sas: 3}},
		{1 << 22, dataAbort{sas: 1}},
		{1 << 21, dataAbort{sse: true}},
		{31 << 16, dataAbort{srt: 31}},
		{5 << 16, dataAbort{srt: 5}},
		{1 << 15, dataAbort{sf: true}},
		{1 << 14, dataAbort{ar: true}},
		{1 << 10, dataAbort{fnv: true}},
		{1 << 9, dataAbort{ea: true}},
		{1 << 8, dataAbort{cm: true}},
		{1 << 7, dataAbort{s1ptw: true}},
		{1 << 6, dataAbort{wnr: true}},
		{0x3f, dataAbort{dfsc: 0x3f}},
		{0x1810046, dataAbort{isv: true, sas: 2, srt: 1, wnr: true, dfsc: 0x06}},
		// ldrsb x3, [x0]: byte, sign-extended into a 64-bit register.
		{1<<24 | 0<<22 | 1<<21 | 3<<16 | 1<<15 | 0x07, dataAbort{isv: true, sse: true, srt: 3, sf: true, dfsc: 7}},
	} {
		if got := decodeDataAbort(c.iss); got != c.want {
			t.Errorf("decodeDataAbort(%#x) = %+v, want %+v", c.iss, got, c.want)
		}
	}
}

func TestPermissionFault(t *testing.T) {
	for dfsc := range uint8(0x40) {
		want := dfsc >= 0x0c && dfsc <= 0x0f
		if got := (dataAbort{dfsc: dfsc}).permissionFault(); got != want {
			t.Errorf("DFSC %#x: permission fault %v, want %v", dfsc, got, want)
		}
	}
}

// sysRegISS builds an EC 0x18 ISS from its fields.
func sysRegISS(op0, op1, crn, crm, op2, rt uint8, read bool) uint32 {
	iss := uint32(op0)<<20 | uint32(op2)<<17 | uint32(op1)<<14 | uint32(crn)<<10 | uint32(rt)<<5 | uint32(crm)<<1
	if read {
		iss |= 1
	}
	return iss
}

func TestDecodeSysRegTrap(t *testing.T) {
	for _, c := range []struct {
		iss  uint32
		want sysRegTrap
	}{
		// Each field alone: Op0, Op2, Op1, CRn, Rt, CRm, direction.
		{3 << 20, sysRegTrap{reg: EncodeSysReg(3, 0, 0, 0, 0)}},
		{7 << 17, sysRegTrap{reg: EncodeSysReg(0, 0, 0, 0, 7)}},
		{7 << 14, sysRegTrap{reg: EncodeSysReg(0, 7, 0, 0, 0)}},
		{0xf << 10, sysRegTrap{reg: EncodeSysReg(0, 0, 15, 0, 0)}},
		{31 << 5, sysRegTrap{rt: 31}},
		{0xf << 1, sysRegTrap{reg: EncodeSysReg(0, 0, 0, 15, 0)}},
		{1, sysRegTrap{read: true}},
		// msr oslar_el1, xzr (Linux's clear_os_lock): (2,0,1,0,4), write.
		{sysRegISS(2, 0, 1, 0, 4, 31, false), sysRegTrap{reg: 0x8084, rt: 31}},
		// mrs x2, cntpct_el0.
		{sysRegISS(3, 3, 14, 0, 1, 2, true), sysRegTrap{reg: CNTPCT_EL0, rt: 2, read: true}},
		// mrs x0, mpidr_el1: the hv_sys_reg_t value round-trips.
		{sysRegISS(3, 0, 0, 0, 5, 0, true), sysRegTrap{reg: MPIDR_EL1, read: true}},
	} {
		if got := decodeSysRegTrap(c.iss); got != c.want {
			t.Errorf("decodeSysRegTrap(%#x) = %+v, want %+v", c.iss, got, c.want)
		}
	}
	for _, c := range sysRegTable {
		iss := sysRegISS(c.tuple[0], c.tuple[1], c.tuple[2], c.tuple[3], c.tuple[4], 7, true)
		if got := decodeSysRegTrap(iss).reg; got != c.reg {
			t.Errorf("trap of %s decodes as %#x", c.name, uint16(got))
		}
	}
}

func TestWFxTI(t *testing.T) {
	for ti, wfe := range map[uint32]bool{0: false, 1: true, 2: false, 3: true} {
		if got := wfxIsWFE(ti | 1<<24); got != wfe {
			t.Errorf("TI %d: WFE %v, want %v", ti, got, wfe)
		}
	}
}
