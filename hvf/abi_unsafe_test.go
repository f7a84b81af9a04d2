package hvf

import (
	"testing"
	"unsafe"
)

// The Go mirrors of C structs must match the SDK layouts (hvf.md §3.2 for
// hv_vcpu_exit_t; <mach/mach_time.h> for mach_timebase_info). Their fields
// are fixed-size integers, so the layout is the same on every 64-bit target.
func TestExitRecordLayout(t *testing.T) {
	var e exitRecord
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof", unsafe.Sizeof(e), 32},
		{"alignof", unsafe.Alignof(e), 8},
		{"reason", unsafe.Offsetof(e.reason), 0},
		{"syndrome", unsafe.Offsetof(e.syndrome), 8},
		{"virtual_address", unsafe.Offsetof(e.virtualAddress), 16},
		{"physical_address", unsafe.Offsetof(e.physicalAddress), 24},
	} {
		if c.got != c.want {
			t.Errorf("hv_vcpu_exit_t %s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestTimebaseLayout(t *testing.T) {
	var tb timebase
	if unsafe.Sizeof(tb) != 8 || unsafe.Offsetof(tb.numer) != 0 || unsafe.Offsetof(tb.denom) != 4 {
		t.Errorf("mach_timebase_info mirror: size %d, numer@%d, denom@%d; want 8, 0, 4",
			unsafe.Sizeof(tb), unsafe.Offsetof(tb.numer), unsafe.Offsetof(tb.denom))
	}
}

// hv_vcpu_get_simd_fp_reg writes 16 bytes; SIMD passes a [2]uint64.
func TestSIMDBufferSize(t *testing.T) {
	if n := unsafe.Sizeof([2]uint64{}); n != 16 {
		t.Errorf("SIMD buffer is %d bytes, hv_simd_fp_uchar16_t is 16", n)
	}
}
