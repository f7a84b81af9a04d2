//go:build darwin && arm64

package hvf

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/squibvm/squib/hv"
)

// The C side of the package: every call into Hypervisor.framework and
// libSystem, and the only Go file that uses purego or unsafe (with
// simd_darwin_arm64.s).
//
// Calls go through purego.SyscallN, which takes integer arguments only (all
// this API needs but for one vector, see simd_darwin_arm64.s) and avoids the
// reflection of purego.RegisterFunc on the exit path. SyscallN is marked
// //go:uintptrescapes: a Go pointer converted to uintptr in its argument list
// is moved to the heap and kept alive for the call, so the C side may write
// through it. Every pointer conversion below is written in a SyscallN call
// for that reason. No pointer is kept by C after the call, except guest RAM,
// which is mmap'd memory the Go heap does not own. Results are hv_return_t,
// a 32-bit int in w0: Return(int32(r)) drops the undefined upper half of x0.

const (
	frameworkPath = "/System/Library/Frameworks/Hypervisor.framework/Hypervisor"
	libSystemPath = "/usr/lib/libSystem.B.dylib"
)

// Addresses of the C functions, set by load.
var (
	fnVMGetMaxVCPUCount, fnVMCreate, fnVMDestroy, fnVMMap, fnVMUnmap, fnVMProtect       uintptr
	fnVMConfigCreate, fnVMConfigGetDefaultIPASize, fnVMConfigGetMaxIPASize              uintptr
	fnVMConfigSetIPASize                                                                uintptr
	fnVCPUCreate, fnVCPUDestroy, fnVCPURun, fnVCPUsExit                                 uintptr
	fnVCPUConfigCreate, fnVCPUConfigGetFeatureReg                                       uintptr
	fnVCPUGetReg, fnVCPUSetReg, fnVCPUGetSysReg, fnVCPUSetSysReg                        uintptr
	fnVCPUGetSIMDFPReg, fnVCPUSetSIMDFPReg, fnVCPUSetVtimerMask, fnVCPUSetVtimerOffset  uintptr
	fnGICConfigCreate, fnGICConfigSetDistributorBase, fnGICConfigSetRedistributorBase   uintptr
	fnGICCreate, fnGICSetSPI, fnGICGetDistributorSize, fnGICGetDistributorBaseAlignment uintptr
	fnGICGetRedistributorRegionSize, fnGICGetRedistributorSize                          uintptr
	fnGICGetRedistributorBaseAlignment, fnGICGetSPIInterruptRange, fnGICGetIntid        uintptr
	fnGICGetRedistributorBase, fnGICSetRedistributorReg, fnGICGetICCReg, fnGICSetICCReg uintptr
	fnGICStateCreate, fnGICStateGetSize, fnGICStateGetData, fnGICSetState               uintptr
	fnOSRelease, fnMachAbsoluteTime, fnMachTimebaseInfo                                 uintptr
)

var bindings = []struct {
	addr *uintptr
	symbol
}{
	{&fnVMGetMaxVCPUCount, symbol{"hv_vm_get_max_vcpu_count", "11.0"}},
	{&fnVMCreate, symbol{"hv_vm_create", "11.0"}},
	{&fnVMDestroy, symbol{"hv_vm_destroy", "11.0"}},
	{&fnVMMap, symbol{"hv_vm_map", "11.0"}},
	{&fnVMUnmap, symbol{"hv_vm_unmap", "11.0"}},
	{&fnVMProtect, symbol{"hv_vm_protect", "11.0"}},
	{&fnVCPUConfigCreate, symbol{"hv_vcpu_config_create", "11.0"}},
	{&fnVCPUConfigGetFeatureReg, symbol{"hv_vcpu_config_get_feature_reg", "11.0"}},
	{&fnVCPUCreate, symbol{"hv_vcpu_create", "11.0"}},
	{&fnVCPUDestroy, symbol{"hv_vcpu_destroy", "11.0"}},
	{&fnVCPURun, symbol{"hv_vcpu_run", "11.0"}},
	{&fnVCPUsExit, symbol{"hv_vcpus_exit", "11.0"}},
	{&fnVCPUGetReg, symbol{"hv_vcpu_get_reg", "11.0"}},
	{&fnVCPUSetReg, symbol{"hv_vcpu_set_reg", "11.0"}},
	{&fnVCPUGetSysReg, symbol{"hv_vcpu_get_sys_reg", "11.0"}},
	{&fnVCPUSetSysReg, symbol{"hv_vcpu_set_sys_reg", "11.0"}},
	{&fnVCPUGetSIMDFPReg, symbol{"hv_vcpu_get_simd_fp_reg", "11.0"}},
	{&fnVCPUSetSIMDFPReg, symbol{"hv_vcpu_set_simd_fp_reg", "11.0"}},
	{&fnVCPUSetVtimerMask, symbol{"hv_vcpu_set_vtimer_mask", "11.0"}},
	{&fnVCPUSetVtimerOffset, symbol{"hv_vcpu_set_vtimer_offset", "11.0"}},
	{&fnVMConfigCreate, symbol{"hv_vm_config_create", "13.0"}},
	{&fnVMConfigGetDefaultIPASize, symbol{"hv_vm_config_get_default_ipa_size", "13.0"}},
	{&fnVMConfigGetMaxIPASize, symbol{"hv_vm_config_get_max_ipa_size", "13.0"}},
	{&fnVMConfigSetIPASize, symbol{"hv_vm_config_set_ipa_size", "13.0"}},
	{&fnGICConfigCreate, symbol{"hv_gic_config_create", "15.0"}},
	{&fnGICConfigSetDistributorBase, symbol{"hv_gic_config_set_distributor_base", "15.0"}},
	{&fnGICConfigSetRedistributorBase, symbol{"hv_gic_config_set_redistributor_base", "15.0"}},
	{&fnGICCreate, symbol{"hv_gic_create", "15.0"}},
	{&fnGICSetSPI, symbol{"hv_gic_set_spi", "15.0"}},
	{&fnGICGetDistributorSize, symbol{"hv_gic_get_distributor_size", "15.0"}},
	{&fnGICGetDistributorBaseAlignment, symbol{"hv_gic_get_distributor_base_alignment", "15.0"}},
	{&fnGICGetRedistributorRegionSize, symbol{"hv_gic_get_redistributor_region_size", "15.0"}},
	{&fnGICGetRedistributorSize, symbol{"hv_gic_get_redistributor_size", "15.0"}},
	{&fnGICGetRedistributorBaseAlignment, symbol{"hv_gic_get_redistributor_base_alignment", "15.0"}},
	{&fnGICGetSPIInterruptRange, symbol{"hv_gic_get_spi_interrupt_range", "15.0"}},
	{&fnGICGetIntid, symbol{"hv_gic_get_intid", "15.0"}},
	{&fnGICGetRedistributorBase, symbol{"hv_gic_get_redistributor_base", "15.0"}},
	{&fnGICSetRedistributorReg, symbol{"hv_gic_set_redistributor_reg", "15.0"}},
	{&fnGICGetICCReg, symbol{"hv_gic_get_icc_reg", "15.0"}},
	{&fnGICSetICCReg, symbol{"hv_gic_set_icc_reg", "15.0"}},
	{&fnGICStateCreate, symbol{"hv_gic_state_create", "15.0"}},
	{&fnGICStateGetSize, symbol{"hv_gic_state_get_size", "15.0"}},
	{&fnGICStateGetData, symbol{"hv_gic_state_get_data", "15.0"}},
	{&fnGICSetState, symbol{"hv_gic_set_state", "15.0"}},
	{&fnOSRelease, symbol{"os_release", ""}},
	{&fnMachAbsoluteTime, symbol{"mach_absolute_time", ""}},
	{&fnMachTimebaseInfo, symbol{"mach_timebase_info", ""}},
}

var loaded struct {
	once sync.Once
	err  error
}

// load opens Hypervisor.framework and libSystem and resolves every binding
// once per process. Symbols are probed with Dlsym, never bound blindly, so on
// an older macOS the error says what is missing instead of crashing.
func load(macOS string) error {
	loaded.once.Do(func() {
		// SAFETY: dlopen of system images by absolute path; the handles
		// stay open for the life of the process.
		fw, err := purego.Dlopen(frameworkPath, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			loaded.err = fmt.Errorf("%w: loading Hypervisor.framework: %v", hv.ErrNoHypervisor, err)
			return
		}
		sys, err := purego.Dlopen(libSystemPath, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			loaded.err = fmt.Errorf("%w: loading libSystem: %v", hv.ErrNoHypervisor, err)
			return
		}
		var missing []symbol
		for _, b := range bindings {
			h := fw
			if b.since == "" {
				h = sys
			}
			// SAFETY: dlsym only looks the name up; a missing symbol
			// returns an error, never a bad address.
			if addr, err := purego.Dlsym(h, b.name); err == nil {
				*b.addr = addr
			} else {
				missing = append(missing, b.symbol)
			}
		}
		loaded.err = checkSymbols(macOS, missing)
	})
	return loaded.err
}

// callInts calls fn with integer arguments only.
func callInts(fn uintptr, args ...uintptr) uintptr {
	// SAFETY: fn was resolved by load for the C signature its caller
	// names; no argument is a pointer.
	r, _, _ := purego.SyscallN(fn, args...)
	return r
}

// callOut calls fn(args..., p), with at most two integer args, where p
// points to memory fn writes during the call only.
func callOut[T any](fn uintptr, p *T, args ...uintptr) Return {
	var r uintptr
	// SAFETY: p is converted in SyscallN's argument list, so it is on the
	// heap and live for the call; each caller below passes the Go type
	// matching the C out-parameter, so fn writes within *p.
	switch len(args) {
	case 0:
		r, _, _ = purego.SyscallN(fn, uintptr(unsafe.Pointer(p)))
	case 1:
		r, _, _ = purego.SyscallN(fn, args[0], uintptr(unsafe.Pointer(p)))
	case 2:
		r, _, _ = purego.SyscallN(fn, args[0], args[1], uintptr(unsafe.Pointer(p)))
	default:
		panic("hvf: callOut takes at most two integer arguments")
	}
	return ret(r)
}

func ret(r uintptr) Return { return Return(int32(r)) }

func boolArg(b bool) uintptr {
	if b {
		return 1
	}
	return 0
}

// VMs and guest memory (hv_vm.h, hv_vm_config.h). Any thread.

func hvVMGetMaxVCPUCount(n *uint32) Return { return callOut(fnVMGetMaxVCPUCount, n) }
func hvVMConfigCreate() uintptr            { return callInts(fnVMConfigCreate) }
func hvVMConfigGetDefaultIPASize(bits *uint32) Return {
	return callOut(fnVMConfigGetDefaultIPASize, bits)
}
func hvVMConfigGetMaxIPASize(bits *uint32) Return {
	return callOut(fnVMConfigGetMaxIPASize, bits)
}
func hvVMConfigSetIPASize(cfg uintptr, bits uint32) Return {
	return ret(callInts(fnVMConfigSetIPASize, cfg, uintptr(bits)))
}
func hvVMCreate(cfg uintptr) Return     { return ret(callInts(fnVMCreate, cfg)) }
func hvVMDestroy() Return               { return ret(callInts(fnVMDestroy)) }
func hvVMUnmap(ipa, size uint64) Return { return ret(callInts(fnVMUnmap, uintptr(ipa), uintptr(size))) }
func hvVMProtect(ipa, size, flags uint64) Return {
	return ret(callInts(fnVMProtect, uintptr(ipa), uintptr(size), uintptr(flags)))
}

// hvVMMap maps ram at ipa. ram must be mmap'd memory (package memory), not
// Go heap memory: the framework keeps using it until hv_vm_unmap.
func hvVMMap(ram []byte, ipa, flags uint64) Return {
	// SAFETY: ram lies outside the Go heap, so it never moves and the
	// framework may keep its address; the caller unmaps it before
	// releasing the mapping.
	r, _, _ := purego.SyscallN(fnVMMap, uintptr(unsafe.Pointer(unsafe.SliceData(ram))), uintptr(ipa), uintptr(len(ram)), uintptr(flags))
	return ret(r)
}

// ramAddr is the host address of guest RAM, for alignment checks.
func ramAddr(ram []byte) uintptr {
	// SAFETY: the address is only inspected, never turned back into a
	// pointer.
	return uintptr(unsafe.Pointer(unsafe.SliceData(ram)))
}

// vCPUs (hv_vcpu.h). The owning thread only, except hv_vcpus_exit.

// hvVCPUCreate creates a vCPU owned by the calling thread, with the default
// configuration, and returns its id and its exit record.
func hvVCPUCreate(vcpu *uint64, exit **exitRecord) Return {
	// SAFETY: both pointers are converted in the call (heap, live); the
	// framework stores the vCPU id and the address of its own
	// hv_vcpu_exit_t, valid until hv_vcpu_destroy. A Go pointer holding a
	// non-heap address is ignored by the garbage collector.
	r, _, _ := purego.SyscallN(fnVCPUCreate, uintptr(unsafe.Pointer(vcpu)), uintptr(unsafe.Pointer(exit)), 0)
	return ret(r)
}

// hvVCPUConfigCreate returns a new vCPU configuration with the defaults
// hv_vcpu_create uses when given none; release it with osRelease.
func hvVCPUConfigCreate() uintptr { return callInts(fnVCPUConfigCreate) }

// hvVCPUConfigGetFeatureReg reads the value the ID register reg
// (hv_feature_reg_t) of a vCPU made with cfg presents.
func hvVCPUConfigGetFeatureReg(cfg uintptr, reg uint32, v *uint64) Return {
	return callOut(fnVCPUConfigGetFeatureReg, v, cfg, uintptr(reg))
}

func hvVCPUDestroy(vcpu uint64) Return { return ret(callInts(fnVCPUDestroy, uintptr(vcpu))) }
func hvVCPURun(vcpu uint64) Return     { return ret(callInts(fnVCPURun, uintptr(vcpu))) }

// hvVCPUsExit makes vcpu leave (or not enter) hv_vcpu_run. Any thread.
func hvVCPUsExit(vcpu uint64) Return {
	ids := [1]uint64{vcpu}
	// SAFETY: a one-element hv_vcpu_t array, converted in the call.
	r, _, _ := purego.SyscallN(fnVCPUsExit, uintptr(unsafe.Pointer(&ids)), 1)
	return ret(r)
}

func hvVCPUGetReg(vcpu uint64, reg Reg, v *uint64) Return {
	return callOut(fnVCPUGetReg, v, uintptr(vcpu), uintptr(reg))
}
func hvVCPUSetReg(vcpu uint64, reg Reg, v uint64) Return {
	return ret(callInts(fnVCPUSetReg, uintptr(vcpu), uintptr(reg), uintptr(v)))
}
func hvVCPUGetSysReg(vcpu uint64, reg SysReg, v *uint64) Return {
	return callOut(fnVCPUGetSysReg, v, uintptr(vcpu), uintptr(reg))
}
func hvVCPUSetSysReg(vcpu uint64, reg SysReg, v uint64) Return {
	return ret(callInts(fnVCPUSetSysReg, uintptr(vcpu), uintptr(reg), uintptr(v)))
}

// hvVCPUGetSIMDFPReg reads Qn into v (16 bytes, little-endian: v[0] is bits
// 63:0).
func hvVCPUGetSIMDFPReg(vcpu uint64, n uint32, v *[2]uint64) Return {
	return callOut(fnVCPUGetSIMDFPReg, v, uintptr(vcpu), uintptr(n))
}

// simdSetTrampolineABI0 is the address of the assembly trampoline in
// simd_darwin_arm64.s.
var simdSetTrampolineABI0 uintptr

// hvVCPUSetSIMDFPReg sets Qn to v. The C function takes the value as a
// 128-bit vector in V0, which purego cannot pass; the trampoline loads it.
func hvVCPUSetSIMDFPReg(vcpu uint64, n uint32, v *[2]uint64) Return {
	// SAFETY: the trampoline reads the 16 bytes at v (converted in the
	// call: heap, live) into V0 and branches to hv_vcpu_set_simd_fp_reg
	// with x0 = vcpu and w1 = n untouched; see simd_darwin_arm64.s.
	r, _, _ := purego.SyscallN(simdSetTrampolineABI0, uintptr(vcpu), uintptr(n), uintptr(unsafe.Pointer(v)), fnVCPUSetSIMDFPReg)
	return ret(r)
}

func hvVCPUSetVtimerMask(vcpu uint64, masked bool) Return {
	return ret(callInts(fnVCPUSetVtimerMask, uintptr(vcpu), boolArg(masked)))
}
func hvVCPUSetVtimerOffset(vcpu, offset uint64) Return {
	return ret(callInts(fnVCPUSetVtimerOffset, uintptr(vcpu), uintptr(offset)))
}

// The GIC (hv_gic.h, hv_gic_config.h, hv_gic_parameters.h, hv_gic_state.h).
// Redistributor and ICC registers: the owning thread only.

func hvGICConfigCreate() uintptr { return callInts(fnGICConfigCreate) }
func hvGICConfigSetDistributorBase(cfg uintptr, ipa uint64) Return {
	return ret(callInts(fnGICConfigSetDistributorBase, cfg, uintptr(ipa)))
}
func hvGICConfigSetRedistributorBase(cfg uintptr, ipa uint64) Return {
	return ret(callInts(fnGICConfigSetRedistributorBase, cfg, uintptr(ipa)))
}
func hvGICCreate(cfg uintptr) Return { return ret(callInts(fnGICCreate, cfg)) }
func hvGICSetSPI(intid uint32, level bool) Return {
	return ret(callInts(fnGICSetSPI, uintptr(intid), boolArg(level)))
}

// hvGICParameter calls one of the hv_gic_get_*_size and *_alignment
// functions, which all take a size_t *.
func hvGICParameter(fn uintptr, v *uint64) Return { return callOut(fn, v) }

func hvGICGetSPIInterruptRange(base, count *uint32) Return {
	// SAFETY: two uint32_t out-parameters, converted in the call.
	r, _, _ := purego.SyscallN(fnGICGetSPIInterruptRange, uintptr(unsafe.Pointer(base)), uintptr(unsafe.Pointer(count)))
	return ret(r)
}
func hvGICGetIntid(which uint16, intid *uint32) Return {
	return callOut(fnGICGetIntid, intid, uintptr(which))
}
func hvGICGetRedistributorBase(vcpu uint64, ipa *uint64) Return {
	return callOut(fnGICGetRedistributorBase, ipa, uintptr(vcpu))
}
func hvGICSetRedistributorReg(vcpu uint64, reg uint32, v uint64) Return {
	return ret(callInts(fnGICSetRedistributorReg, uintptr(vcpu), uintptr(reg), uintptr(v)))
}
func hvGICGetICCReg(vcpu uint64, reg uint16, v *uint64) Return {
	return callOut(fnGICGetICCReg, v, uintptr(vcpu), uintptr(reg))
}
func hvGICSetICCReg(vcpu uint64, reg uint16, v uint64) Return {
	return ret(callInts(fnGICSetICCReg, uintptr(vcpu), uintptr(reg), uintptr(v)))
}
func hvGICStateCreate() uintptr { return callInts(fnGICStateCreate) }
func hvGICStateGetSize(state uintptr, n *uint64) Return {
	return callOut(fnGICStateGetSize, n, state)
}

// hvGICStateGetData copies the state into buf, which must not be empty and
// must hold at least hv_gic_state_get_size bytes.
func hvGICStateGetData(state uintptr, buf []byte) Return {
	return callOut(fnGICStateGetData, &buf[0], state)
}

func hvGICSetState(buf []byte) Return {
	// SAFETY: buf is read during the call only; converted in the call.
	r, _, _ := purego.SyscallN(fnGICSetState, uintptr(unsafe.Pointer(unsafe.SliceData(buf))), uintptr(len(buf)))
	return ret(r)
}

// libSystem.

func osRelease(obj uintptr)    { callInts(fnOSRelease, obj) }
func machAbsoluteTime() uint64 { return uint64(callInts(fnMachAbsoluteTime)) }

// machTimebaseInfo fills tb; it returns a kern_return_t, 0 on success.
func machTimebaseInfo(tb *timebase) Return { return callOut(fnMachTimebaseInfo, tb) }
