// Package psci implements the firmware side of PSCI 1.0 (Arm DEN0022, Power State
// Coordination Interface) and SMCCC 1.1 (Arm DEN0028, SMC Calling Convention) as a
// backend-free state machine over a VM's vCPUs.
//
// A vCPU loop calls [Machine.Handle] when the guest issues an HVC or SMC: on
// Hypervisor.framework every HVC traps to the VMM, and on KVM the SMCCC filter forwards the
// PSCI range (SMCCC_VERSION and SMCCC_ARCH_FEATURES stay in the kernel there). Handle never
// touches a hypervisor. It returns the values for x0..x3 and an [Action] that the VMM
// carries out (start or stop a vCPU, wait for an interrupt, power off, reset). Adjusting
// the PC after the trap is the backend's business, not this package's.
//
// Every input is guest-controlled, so Handle never panics: unknown or malformed function
// IDs, unknown callers and out-of-range arguments all produce a PSCI return code.
package psci

import "fmt"

// Version is the PSCI version this package implements, as returned by PSCI_VERSION:
// major in bits [30:16], minor in bits [15:0] (DEN0022, PSCI_VERSION). This is 1.0.
const Version = 0x10000

// SMCCCVersion is the SMC Calling Convention version this package implements, as returned
// by SMCCC_VERSION, in the same major/minor encoding (DEN0028, SMCCC_VERSION). This is 1.1.
const SMCCCVersion = 0x10001

// FunctionID is an SMCCC function identifier, passed in w0 (DEN0028, "Function Identifier"):
//
//	bit 31      1 = fast call
//	bit 30      1 = SMC64/HVC64 calling convention, 0 = SMC32/HVC32
//	bits 29:24  owning entity (0 Arm architecture, 4 standard secure service, which holds PSCI)
//	bits 23:16  must be zero in SMCCC 1.1
//	bits 15:0   function number
//
// The constants below are the PSCI function IDs of DEN0022 (Linux's
// include/uapi/linux/psci.h) and the Arm architecture calls of DEN0028 that squib names.
// Functions that exist in both conventions carry a _32 or _64 suffix.
type FunctionID uint32

// Arm architecture service calls (DEN0028).
const (
	SMCCC_VERSION           FunctionID = 0x80000000
	SMCCC_ARCH_FEATURES     FunctionID = 0x80000001
	SMCCC_ARCH_WORKAROUND_1 FunctionID = 0x80008000 // CVE-2017-5715; not implemented
	SMCCC_ARCH_WORKAROUND_2 FunctionID = 0x80007FFF // CVE-2018-3639; not implemented
	SMCCC_ARCH_WORKAROUND_3 FunctionID = 0x80003FFF // CVE-2022-23960; not implemented
)

// PSCI functions (DEN0022 function table). Those marked "not implemented" return
// NOT_SUPPORTED, and PSCI_FEATURES says so.
const (
	PSCI_VERSION           FunctionID = 0x84000000
	CPU_SUSPEND_32         FunctionID = 0x84000001
	CPU_SUSPEND_64         FunctionID = 0xC4000001
	CPU_OFF                FunctionID = 0x84000002
	CPU_ON_32              FunctionID = 0x84000003
	CPU_ON_64              FunctionID = 0xC4000003
	AFFINITY_INFO_32       FunctionID = 0x84000004
	AFFINITY_INFO_64       FunctionID = 0xC4000004
	MIGRATE_32             FunctionID = 0x84000005 // not implemented
	MIGRATE_64             FunctionID = 0xC4000005 // not implemented
	MIGRATE_INFO_TYPE      FunctionID = 0x84000006
	MIGRATE_INFO_UP_CPU_32 FunctionID = 0x84000007 // not implemented
	MIGRATE_INFO_UP_CPU_64 FunctionID = 0xC4000007 // not implemented
	SYSTEM_OFF             FunctionID = 0x84000008
	SYSTEM_RESET           FunctionID = 0x84000009
	PSCI_FEATURES          FunctionID = 0x8400000A
	SYSTEM_SUSPEND_32      FunctionID = 0x8400000E // optional in 1.0; not implemented
	SYSTEM_SUSPEND_64      FunctionID = 0xC400000E // optional in 1.0; not implemented
	SYSTEM_RESET2_32       FunctionID = 0x84000012 // PSCI 1.1; not implemented
	SYSTEM_RESET2_64       FunctionID = 0xC4000012 // PSCI 1.1; not implemented
)

var functionNames = map[FunctionID]string{
	SMCCC_VERSION:           "SMCCC_VERSION",
	SMCCC_ARCH_FEATURES:     "SMCCC_ARCH_FEATURES",
	SMCCC_ARCH_WORKAROUND_1: "SMCCC_ARCH_WORKAROUND_1",
	SMCCC_ARCH_WORKAROUND_2: "SMCCC_ARCH_WORKAROUND_2",
	SMCCC_ARCH_WORKAROUND_3: "SMCCC_ARCH_WORKAROUND_3",
	PSCI_VERSION:            "PSCI_VERSION",
	CPU_SUSPEND_32:          "CPU_SUSPEND_32",
	CPU_SUSPEND_64:          "CPU_SUSPEND_64",
	CPU_OFF:                 "CPU_OFF",
	CPU_ON_32:               "CPU_ON_32",
	CPU_ON_64:               "CPU_ON_64",
	AFFINITY_INFO_32:        "AFFINITY_INFO_32",
	AFFINITY_INFO_64:        "AFFINITY_INFO_64",
	MIGRATE_32:              "MIGRATE_32",
	MIGRATE_64:              "MIGRATE_64",
	MIGRATE_INFO_TYPE:       "MIGRATE_INFO_TYPE",
	MIGRATE_INFO_UP_CPU_32:  "MIGRATE_INFO_UP_CPU_32",
	MIGRATE_INFO_UP_CPU_64:  "MIGRATE_INFO_UP_CPU_64",
	SYSTEM_OFF:              "SYSTEM_OFF",
	SYSTEM_RESET:            "SYSTEM_RESET",
	PSCI_FEATURES:           "PSCI_FEATURES",
	SYSTEM_SUSPEND_32:       "SYSTEM_SUSPEND_32",
	SYSTEM_SUSPEND_64:       "SYSTEM_SUSPEND_64",
	SYSTEM_RESET2_32:        "SYSTEM_RESET2_32",
	SYSTEM_RESET2_64:        "SYSTEM_RESET2_64",
}

func (f FunctionID) String() string {
	if s, ok := functionNames[f]; ok {
		return s
	}
	return fmt.Sprintf("FunctionID(%#08x)", uint32(f))
}

// is64 reports whether f uses the SMC64/HVC64 calling convention (bit 30). For SMC32/HVC32
// calls only the low 32 bits of the argument and result registers are significant.
func (f FunctionID) is64() bool { return f&(1<<30) != 0 }

// Owning entity numbers, bits 29:24 of a FunctionID (DEN0028).
const (
	ownerArm            = 0
	ownerStandardSecure = 4
)

func (f FunctionID) owner() uint32 { return uint32(f>>24) & 0x3F }

// Return is a PSCI return code (DEN0022, "Return error codes"). It is a signed 32-bit value:
// in w0 for SMC32 calls and sign-extended to x0 for SMC64 calls. SMCCC's "unknown
// function" value is the same -1 as NOT_SUPPORTED.
type Return int32

// PSCI return codes.
const (
	SUCCESS            Return = 0
	NOT_SUPPORTED      Return = -1
	INVALID_PARAMETERS Return = -2
	DENIED             Return = -3
	ALREADY_ON         Return = -4
	ON_PENDING         Return = -5
	INTERNAL_FAILURE   Return = -6
	NOT_PRESENT        Return = -7
	DISABLED           Return = -8
	INVALID_ADDRESS    Return = -9
)

var returnNames = [...]string{
	"SUCCESS", "NOT_SUPPORTED", "INVALID_PARAMETERS", "DENIED", "ALREADY_ON",
	"ON_PENDING", "INTERNAL_FAILURE", "NOT_PRESENT", "DISABLED", "INVALID_ADDRESS",
}

func (r Return) String() string {
	if r <= 0 && -int(r) < len(returnNames) {
		return returnNames[-r]
	}
	return fmt.Sprintf("Return(%d)", int32(r))
}
