//go:build darwin && arm64

#include "textflag.h"

// A trampoline for
//
//	hv_return_t hv_vcpu_set_simd_fp_reg(hv_vcpu_t vcpu, hv_simd_fp_reg_t reg,
//	                                    hv_simd_fp_uchar16_t value);
//
// hv_simd_fp_uchar16_t is a 16-byte short vector (ext_vector_type(16) of
// uint8_t), which AAPCS64 passes by value in the first free SIMD&FP
// register: V0, as bits 127:0 (AAPCS64 §6.8.2, "Parameter passing rules";
// short vectors are not composite types). purego can only put integers in
// X0-X7 and doubles in D0-D7, and treats a 16-byte array or struct as an
// integer aggregate in X2/X3, so no purego signature reaches V0's upper half.
//
// squib therefore calls this trampoline through purego.SyscallN, integers
// only, as if it were
//
//	hv_return_t trampoline(hv_vcpu_t vcpu, hv_simd_fp_reg_t reg,
//	                       const uint8_t value[16], void *fn);
//
// so that on entry X0 = vcpu, X1 = reg, X2 = the address of the 16 value
// bytes and X3 = the address of hv_vcpu_set_simd_fp_reg. It loads the bytes
// into V0 (lane i = byte i, which is the vector's memory layout on a
// little-endian machine) and branches, without linking, to the real
// function. The real function thus sees exactly a C call with (X0, W1, V0)
// and returns straight to purego's BL with the result in W0.
//
// The trampoline writes only V0, an argument register, and X16 (IP0), the
// scratch register AAPCS64 lets a linker veneer clobber between caller and
// callee; both are dead at a call. The branch goes through X16 because a
// BTI "c" landing pad, such as a PACIBSP at the target's entry, accepts an
// indirect branch without link only from X16 or X17. NOFRAME and the zero
// frame size keep the assembler from adding a prologue: SP and LR stay as
// purego's BL left them.
TEXT simdSetTrampoline<>(SB), NOSPLIT|NOFRAME, $0-0
	VLD1 (R2), [V0.B16]
	MOVD R3, R16
	JMP  (R16)

// simdSetTrampolineABI0 holds the trampoline's address for purego.SyscallN;
// the Go declaration is in ffi_darwin_arm64_unsafe.go.
GLOBL ·simdSetTrampolineABI0(SB), NOPTR|RODATA, $8
DATA ·simdSetTrampolineABI0(SB)/8, $simdSetTrampoline<>(SB)
