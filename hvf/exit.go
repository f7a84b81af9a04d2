package hvf

import "fmt"

// What a vCPU does about one hv_vcpu_run exit. decodeExit is pure, so every
// rule here, including where the PC moves, is tested on any host; the darwin
// code only carries the decision out.

type actionKind int

const (
	actKicked    actionKind = iota // hv_vcpus_exit: return hv.ExitKicked
	actMMIO                        // access outside RAM: return hv.ExitMMIO
	actRAMFault                    // permission fault on RAM: dirty tracking
	actStep                        // nothing to emulate: step over the instruction
	actHypercall                   // HVC or SMC: return hv.ExitHypercall
	actSysReg                      // trapped MSR/MRS: reads as zero, writes ignored
	actWFI                         // WFI: sleep until the virtual timer is due
	actVTimer                      // the virtual timer fired and was masked
)

// action is a decoded exit.
type action struct {
	kind actionKind
	// advancePC: once emulated, the trapped instruction is complete and
	// the PC must move past it (PC += 4). HVC is the exception: the
	// framework reports its exit with the PC already past the HVC.
	advancePC bool
	addr      uint64     // actMMIO, actRAMFault: the IPA accessed
	mmio      mmioAccess // actMMIO
	sysReg    sysRegTrap // actSysReg
}

// decodeExit decides what to do about an exit. inRAM reports whether an IPA
// is guest RAM, which is mapped; any other IPA is MMIO.
func decodeExit(reason uint32, esr syndrome, ipa uint64, inRAM func(uint64) bool) (action, error) {
	switch reason {
	case HV_EXIT_REASON_CANCELED:
		return action{kind: actKicked}, nil
	case HV_EXIT_REASON_VTIMER_ACTIVATED:
		return action{kind: actVTimer}, nil
	case HV_EXIT_REASON_EXCEPTION:
	default:
		return action{}, fmt.Errorf("hv_vcpu_run: exit reason %d (ESR %#x)", reason, uint64(esr))
	}
	iss := esr.iss()
	switch ec := esr.ec(); ec {
	case ecHVC64:
		return action{kind: actHypercall}, nil
	case ecSMC64:
		return action{kind: actHypercall, advancePC: true}, nil
	case ecSysReg64:
		return action{kind: actSysReg, advancePC: true, sysReg: decodeSysRegTrap(iss)}, nil
	case ecWFx:
		if wfxIsWFE(iss) {
			// WFE waits for an event or an interrupt; a guest may
			// wake up spuriously, so returning at once is correct.
			return action{kind: actStep, advancePC: true}, nil
		}
		return action{kind: actWFI, advancePC: true}, nil
	case ecDataAbortLower:
		return decodeDataAbortExit(decodeDataAbort(iss), esr, ipa, inRAM)
	case ecInsnAbortLower:
		return action{}, fmt.Errorf("the guest executed from IPA %#x, which is not RAM (ESR %#x)", ipa, uint64(esr))
	default:
		return action{}, fmt.Errorf("unexpected guest exception: %v (ESR %#x, IPA %#x)", ec, uint64(esr), ipa)
	}
}

func decodeDataAbortExit(d dataAbort, esr syndrome, ipa uint64, inRAM func(uint64) bool) (action, error) {
	switch {
	case inRAM(ipa) && d.permissionFault():
		return action{kind: actRAMFault, addr: ipa}, nil
	case inRAM(ipa):
		return action{}, fmt.Errorf("stage-2 fault %#x on RAM at IPA %#x (ESR %#x)", d.dfsc, ipa, uint64(esr))
	case d.s1ptw:
		return action{}, fmt.Errorf("the guest's page tables point outside RAM, at IPA %#x (ESR %#x)", ipa, uint64(esr))
	case d.ea:
		return action{}, fmt.Errorf("external abort at IPA %#x (ESR %#x)", ipa, uint64(esr))
	case d.cm:
		// Cache maintenance by address on a device: nothing to do.
		return action{kind: actStep, advancePC: true}, nil
	case !d.isv:
		return action{}, fmt.Errorf("MMIO access at IPA %#x without a valid syndrome (e.g. LDP/STP, or a SIMD or pre/post-indexed load or store, to a device): squib does not decode instructions (ESR %#x)", ipa, uint64(esr))
	}
	return action{kind: actMMIO, advancePC: true, addr: ipa, mmio: mmioAccess{
		size:   1 << d.sas,
		write:  d.wnr,
		reg:    d.srt,
		signed: d.sse,
		wide:   d.sf,
	}}, nil
}

// mmioAccess is a load or store to a device, as the syndrome describes it.
type mmioAccess struct {
	size   int   // bytes: 1, 2, 4 or 8
	write  bool  // store, else load
	reg    uint8 // Xt/Wt; 31 = XZR
	signed bool  // load: sign-extend the value to the register width
	wide   bool  // the register is Xt (64 bits), else Wt (32 bits)
}

func (a mmioAccess) mask() uint64 { return ^uint64(0) >> (64 - 8*a.size) }

// stored returns the bytes a store of register value x puts on the bus: its
// low size bytes.
func (a mmioAccess) stored(x uint64) uint64 { return x & a.mask() }

// loaded returns the register value a load of the device value v produces:
// v's low size bytes, sign-extended if the load is signed (LDRSB, LDRSH,
// LDRSW), then cut to 32 bits for a W register, whose write zeroes the upper
// half of X (Arm ARM C6.2, "LDRSB", "LDR (register)").
func (a mmioAccess) loaded(v uint64) uint64 {
	v &= a.mask()
	if a.signed && a.size < 8 {
		shift := 64 - 8*a.size
		v = uint64(int64(v<<shift) >> shift)
	}
	if !a.wide {
		v = uint64(uint32(v))
	}
	return v
}
