package hvf

import "structs"

// Values and layouts of Hypervisor.framework's C API that do not depend on the
// build target, so tests run anywhere. Source: the macOS SDK headers
// hv_vcpu_types.h, hv_vm_types.h, hv_gic_types.h and arm64/hv/hv_kern_types.h,
// as summarised in shared/docs/hvf.md §1-§3.

// exitRecord mirrors hv_vcpu_exit_t. hv_vcpu_create hands out a pointer to
// one that the framework owns and rewrites on every hv_vcpu_run.
type exitRecord struct {
	_               structs.HostLayout
	reason          uint32 // hv_exit_reason_t
	_               [4]byte
	syndrome        uint64 // hv_exception_syndrome_t: ESR_EL2 format
	virtualAddress  uint64 // hv_exception_address_t: FAR_EL2
	physicalAddress uint64 // hv_ipa_t: faulting IPA of a stage-2 abort
}

// hv_exit_reason_t.
const (
	HV_EXIT_REASON_CANCELED         = 0 // hv_vcpus_exit
	HV_EXIT_REASON_EXCEPTION        = 1 // a guest exception the framework forwards
	HV_EXIT_REASON_VTIMER_ACTIVATED = 2 // the EL1 virtual timer fired; the framework masked it
	HV_EXIT_REASON_UNKNOWN          = 3 // "should not happen"
)

// Reg is hv_reg_t: HV_REG_X0 + n for n = 0..30, then PC. There is no XZR
// and no SP: register number 31 in an instruction is not HV_REG_X0 + 31.
type Reg uint32

const (
	HV_REG_X0   Reg = 0
	HV_REG_PC   Reg = 31
	HV_REG_FPCR Reg = 32
	HV_REG_FPSR Reg = 33
	HV_REG_CPSR Reg = 34 // PSTATE, in SPSR format
)

// xzr is register number 31 in a load/store or MRS/MSR encoding: the zero
// register (Arm ARM C1.2.5).
const xzr = 31

// gpReg returns the hv_reg_t of register number n of an instruction
// encoding (0..30), or false for 31: XZR, which reads as zero, ignores
// writes and has no hv_reg_t (HV_REG_X0 + 31 is the PC).
func gpReg(n uint8) (Reg, bool) {
	if n >= xzr {
		return 0, false
	}
	return HV_REG_X0 + Reg(n), true
}

// hv_memory_flags_t.
const (
	HV_MEMORY_READ  = 1 << 0
	HV_MEMORY_WRITE = 1 << 1
	HV_MEMORY_EXEC  = 1 << 2
)

// pageSize is the host and stage-2 page size on Apple silicon: hv_vm_map and
// hv_vm_protect take addresses and sizes in multiples of it.
const pageSize = 0x4000

// hv_gic_intid_t: the INTIDs the framework reserves (hvf.md §3.8).
const (
	HV_GIC_INT_EL1_VIRTUAL_TIMER  = 27
	HV_GIC_INT_EL1_PHYSICAL_TIMER = 30
)

// GICR_ISPENDR0 as a hv_gic_redistributor_reg_t: the SGI frame (RD_base +
// 64 KiB) offset 0x200 (IHI 0069 §12.11).
const GICR_ISPENDR0 = 0x10200

// cpsrEL1hMasked is PSTATE at kernel entry: EL1 with SP_EL1 (EL1h), and the
// D, A, I and F exceptions masked (Linux Documentation/arch/arm64/booting.rst).
const cpsrEL1hMasked = 0x3c5
