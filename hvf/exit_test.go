package hvf

import (
	"strings"
	"testing"
)

const (
	testRAMBase = 0x4000_0000
	testRAMSize = 0x1000_0000
	mmioAddr    = 0x0900_0000 // the PL011
)

func testInRAM(ipa uint64) bool { return ipa >= testRAMBase && ipa-testRAMBase < testRAMSize }

// daISS builds a data-abort ISS with a valid syndrome.
func daISS(sas, srt uint8, sse, sf, wnr bool, dfsc uint8) uint32 {
	iss := 1<<24 | uint32(sas)<<22 | uint32(srt)<<16 | uint32(dfsc)
	for bit, on := range map[uint]bool{21: sse, 15: sf, 6: wnr} {
		if on {
			iss |= 1 << bit
		}
	}
	return iss
}

// Every exit reason and exception class the backend handles, and where the
// PC goes: past the instruction after emulation, except for HVC, whose exit
// already points past it.
func TestDecodeExit(t *testing.T) {
	for _, c := range []struct {
		name    string
		reason  uint32
		esr     syndrome
		ipa     uint64
		kind    actionKind
		advance bool
	}{
		{"canceled", HV_EXIT_REASON_CANCELED, 0, 0, actKicked, false},
		{"vtimer", HV_EXIT_REASON_VTIMER_ACTIVATED, 0, 0, actVTimer, false},
		{"hvc", HV_EXIT_REASON_EXCEPTION, esr(ecHVC64, 0), 0, actHypercall, false},
		{"hvc-imm", HV_EXIT_REASON_EXCEPTION, esr(ecHVC64, 0x1234), 0, actHypercall, false},
		{"smc", HV_EXIT_REASON_EXCEPTION, esr(ecSMC64, 0), 0, actHypercall, true},
		{"msr", HV_EXIT_REASON_EXCEPTION, esr(ecSysReg64, sysRegISS(2, 0, 1, 0, 4, 31, false)), 0, actSysReg, true},
		{"mrs", HV_EXIT_REASON_EXCEPTION, esr(ecSysReg64, sysRegISS(3, 3, 14, 0, 1, 0, true)), 0, actSysReg, true},
		{"wfi", HV_EXIT_REASON_EXCEPTION, esr(ecWFx, 0), 0, actWFI, true},
		{"wfe", HV_EXIT_REASON_EXCEPTION, esr(ecWFx, 1), 0, actStep, true},
		{"wfit", HV_EXIT_REASON_EXCEPTION, esr(ecWFx, 2), 0, actWFI, true},
		{"wfet", HV_EXIT_REASON_EXCEPTION, esr(ecWFx, 3), 0, actStep, true},
		{"mmio-read", HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, daISS(2, 1, false, false, false, 6)), mmioAddr, actMMIO, true},
		{"mmio-write", HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, daISS(2, 1, false, false, true, 6)), mmioAddr, actMMIO, true},
		{"mmio-cache-maintenance", HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, 1<<8|1<<6|6), mmioAddr, actStep, true},
		{"ram-write-protected", HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, daISS(3, 2, false, true, true, 0x0f)), testRAMBase + 0x8000, actRAMFault, false},
		{"ram-stp-write-protected", HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, 1<<6|0x0d), testRAMBase, actRAMFault, false},
	} {
		a, err := decodeExit(c.reason, c.esr, c.ipa, testInRAM)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if a.kind != c.kind || a.advancePC != c.advance {
			t.Errorf("%s: kind %d advancePC %v, want %d %v", c.name, a.kind, a.advancePC, c.kind, c.advance)
		}
		if (c.kind == actMMIO || c.kind == actRAMFault) && a.addr != c.ipa {
			t.Errorf("%s: addr %#x, want %#x", c.name, a.addr, c.ipa)
		}
	}
}

func TestDecodeExitMMIOFields(t *testing.T) {
	a, err := decodeExit(HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, daISS(1, 31, true, true, true, 4)), mmioAddr, testInRAM)
	if err != nil {
		t.Fatal(err)
	}
	want := mmioAccess{size: 2, write: true, reg: xzr, signed: true, wide: true}
	if a.mmio != want {
		t.Errorf("mmio %+v, want %+v", a.mmio, want)
	}
	a, _ = decodeExit(HV_EXIT_REASON_EXCEPTION, esr(ecSysReg64, sysRegISS(3, 3, 14, 0, 1, 9, true)), 0, testInRAM)
	if a.sysReg != (sysRegTrap{reg: CNTPCT_EL0, rt: 9, read: true}) {
		t.Errorf("sysreg %+v", a.sysReg)
	}
}

// Exits the backend refuses, with the words the error must contain.
func TestDecodeExitErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		reason uint32
		esr    syndrome
		ipa    uint64
		want   string
	}{
		{"unknown-reason", HV_EXIT_REASON_UNKNOWN, 0, 0, "exit reason 3"},
		{"undefined-instruction", HV_EXIT_REASON_EXCEPTION, esr(ecUnknown, 0), 0, "unknown reason (EC 0x0)"},
		{"fp-trap", HV_EXIT_REASON_EXCEPTION, esr(ecFPAccess, 0), 0, "FP/SIMD"},
		{"brk", HV_EXIT_REASON_EXCEPTION, esr(ecBRK64, 0), 0, "BRK"},
		{"breakpoint", HV_EXIT_REASON_EXCEPTION, esr(ecBreakpointLower, 0), 0, "breakpoint"},
		{"step", HV_EXIT_REASON_EXCEPTION, esr(ecStepLower, 0), 0, "software step"},
		{"watchpoint", HV_EXIT_REASON_EXCEPTION, esr(ecWatchpointLower, 0), 0, "watchpoint"},
		{"insn-abort", HV_EXIT_REASON_EXCEPTION, esr(ecInsnAbortLower, 6), 0x1000_0000, "executed from IPA 0x10000000"},
		{"no-isv", HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, 1<<6|6), mmioAddr, "without a valid syndrome"},
		{"s1ptw", HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, 1<<7|6), mmioAddr, "page tables"},
		{"external-abort", HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, 1<<24|1<<9|0x10), mmioAddr, "external abort"},
		{"ram-translation-fault", HV_EXIT_REASON_EXCEPTION, esr(ecDataAbortLower, daISS(2, 0, false, false, false, 6)), testRAMBase, "fault 0x6 on RAM"},
	} {
		_, err := decodeExit(c.reason, c.esr, c.ipa, testInRAM)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// Register numbers of instruction encodings: 31 is XZR, never the PC.
func TestGPReg(t *testing.T) {
	for n := range uint8(31) {
		if r, ok := gpReg(n); !ok || r != HV_REG_X0+Reg(n) {
			t.Errorf("gpReg(%d) = %d, %v", n, r, ok)
		}
	}
	if r, ok := gpReg(31); ok {
		t.Errorf("gpReg(31) = %d (HV_REG_PC is %d), want none: XZR", r, HV_REG_PC)
	}
}

// What loads put in the register and what stores put on the bus.
func TestMMIOValues(t *testing.T) {
	for _, c := range []struct {
		name   string
		a      mmioAccess
		in     uint64 // device value (load) or register value (store)
		loaded uint64
		stored uint64
	}{
		{"ldrb w", mmioAccess{size: 1}, 0xffff_ff80, 0x80, 0x80},
		{"ldrsb w", mmioAccess{size: 1, signed: true}, 0x80, 0xffff_ff80, 0x80},
		{"ldrsb x", mmioAccess{size: 1, signed: true, wide: true}, 0x80, 0xffff_ffff_ffff_ff80, 0x80},
		{"ldrsb x positive", mmioAccess{size: 1, signed: true, wide: true}, 0x7f, 0x7f, 0x7f},
		{"ldrh w", mmioAccess{size: 2}, 0x1234_8001, 0x8001, 0x8001},
		{"ldrsh w", mmioAccess{size: 2, signed: true}, 0x8001, 0xffff_8001, 0x8001},
		{"ldrsh x", mmioAccess{size: 2, signed: true, wide: true}, 0x8001, 0xffff_ffff_ffff_8001, 0x8001},
		{"ldr w", mmioAccess{size: 4}, 0xdead_beef_8000_0000, 0x8000_0000, 0x8000_0000},
		{"ldrsw x", mmioAccess{size: 4, signed: true, wide: true}, 0x8000_0000, 0xffff_ffff_8000_0000, 0x8000_0000},
		{"ldr x", mmioAccess{size: 8, wide: true}, 0x8000_0000_0000_0001, 0x8000_0000_0000_0001, 0x8000_0000_0000_0001},
		{"ldr x signed is a no-op", mmioAccess{size: 8, signed: true, wide: true}, 0x8000_0000_0000_0000, 0x8000_0000_0000_0000, 0x8000_0000_0000_0000},
	} {
		if got := c.a.loaded(c.in); got != c.loaded {
			t.Errorf("%s: loaded(%#x) = %#x, want %#x", c.name, c.in, got, c.loaded)
		}
		if got := c.a.stored(c.in); got != c.stored {
			t.Errorf("%s: stored(%#x) = %#x, want %#x", c.name, c.in, got, c.stored)
		}
	}
}
