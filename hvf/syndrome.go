package hvf

import "fmt"

// Decoding of the exception syndrome in hv_vcpu_exit_t, which has the
// ESR_EL2 layout (Arm ARM D19.2 "ESR_EL2"): EC in bits [31:26], IL in bit 25
// and the class-specific ISS in bits [24:0].

// exceptionClass is ESR_ELx.EC.
type exceptionClass uint8

// Exception classes from a lower EL running AArch64 (Arm ARM D19.2, "EC").
// Apple silicon guests are AArch64 only, so every trapped instruction is 4
// bytes long.
const (
	ecUnknown         exceptionClass = 0x00 // unknown reason, e.g. an undefined instruction
	ecWFx             exceptionClass = 0x01 // WFI, WFE, WFIT, WFET
	ecFPAccess        exceptionClass = 0x07 // SVE, Advanced SIMD or FP access
	ecHVC64           exceptionClass = 0x16 // HVC
	ecSMC64           exceptionClass = 0x17 // SMC
	ecSysReg64        exceptionClass = 0x18 // MSR, MRS or SYS
	ecInsnAbortLower  exceptionClass = 0x20 // instruction abort
	ecDataAbortLower  exceptionClass = 0x24 // data abort
	ecBreakpointLower exceptionClass = 0x30 // hardware breakpoint
	ecStepLower       exceptionClass = 0x32 // software step
	ecWatchpointLower exceptionClass = 0x34 // watchpoint
	ecBRK64           exceptionClass = 0x3c // BRK
)

var ecNames = map[exceptionClass]string{
	ecUnknown:         "unknown reason",
	ecWFx:             "WFI/WFE",
	ecFPAccess:        "FP/SIMD access trap",
	ecHVC64:           "HVC",
	ecSMC64:           "SMC",
	ecSysReg64:        "MSR/MRS trap",
	ecInsnAbortLower:  "instruction abort",
	ecDataAbortLower:  "data abort",
	ecBreakpointLower: "breakpoint",
	ecStepLower:       "software step",
	ecWatchpointLower: "watchpoint",
	ecBRK64:           "BRK",
}

func (ec exceptionClass) String() string {
	if n, ok := ecNames[ec]; ok {
		return fmt.Sprintf("%s (EC %#x)", n, uint8(ec))
	}
	return fmt.Sprintf("EC %#x", uint8(ec))
}

// syndrome is an ESR_EL2 value.
type syndrome uint64

func (s syndrome) ec() exceptionClass { return exceptionClass(s >> 26 & 0x3f) }
func (s syndrome) iss() uint32        { return uint32(s & 0x1ffffff) }

// dataAbort is the ISS of a data abort (Arm ARM D19.2, "ISS encoding for an
// exception from a Data Abort"). sas, sse, srt, sf and ar are valid only
// when isv is set.
type dataAbort struct {
	isv   bool  // [24] the fields below describe the access
	sas   uint8 // [23:22] access size: 1 << sas bytes
	sse   bool  // [21] sign-extend the loaded value
	srt   uint8 // [20:16] register transferred; 31 = XZR
	sf    bool  // [15] 64-bit register (X), else 32-bit (W)
	ar    bool  // [14] acquire/release semantics
	fnv   bool  // [10] FAR is not valid
	ea    bool  // [9] external abort
	cm    bool  // [8] cache maintenance or address translation instruction
	s1ptw bool  // [7] stage-2 fault on a stage-1 translation table walk
	wnr   bool  // [6] write, else read
	dfsc  uint8 // [5:0] data fault status code
}

func decodeDataAbort(iss uint32) dataAbort {
	bit := func(n uint) bool { return iss>>n&1 != 0 }
	return dataAbort{
		isv:   bit(24),
		sas:   uint8(iss >> 22 & 3),
		sse:   bit(21),
		srt:   uint8(iss >> 16 & 0x1f),
		sf:    bit(15),
		ar:    bit(14),
		fnv:   bit(10),
		ea:    bit(9),
		cm:    bit(8),
		s1ptw: bit(7),
		wnr:   bit(6),
		dfsc:  uint8(iss & 0x3f),
	}
}

// permissionFault reports a DFSC of 0b0011xx: a permission fault at level
// 0-3 (Arm ARM D19.2, "DFSC").
func (d dataAbort) permissionFault() bool { return d.dfsc&0x3c == 0x0c }

// sysRegTrap is the ISS of a trapped MSR, MRS or SYS instruction (Arm ARM
// D19.2, "ISS encoding for an exception from MSR, MRS, or System instruction
// execution in AArch64 state").
type sysRegTrap struct {
	reg  SysReg // from Op0 [21:20], Op2 [19:17], Op1 [16:14], CRn [13:10], CRm [4:1]
	rt   uint8  // [9:5] register transferred; 31 = XZR
	read bool   // [0] direction: 1 = MRS (read), 0 = MSR (write)
}

func decodeSysRegTrap(iss uint32) sysRegTrap {
	return sysRegTrap{
		reg: EncodeSysReg(uint8(iss>>20&3), uint8(iss>>14&7), uint8(iss>>10&0xf),
			uint8(iss>>1&0xf), uint8(iss>>17&7)),
		rt:   uint8(iss >> 5 & 0x1f),
		read: iss&1 != 0,
	}
}

// wfxIsWFE reports whether a WFx trap's ISS.TI [1:0] names WFE or WFET
// (0b01, 0b11) rather than WFI or WFIT (0b00, 0b10).
func wfxIsWFE(iss uint32) bool { return iss&1 != 0 }
