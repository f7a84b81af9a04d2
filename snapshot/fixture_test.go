package snapshot

import (
	"reflect"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/psci"
)

// testState returns a state with every field set to a distinct value, two
// vCPUs and 1 MiB of RAM. It is deterministic, for the golden file.
func testState(t testing.TB) *State {
	raw := func(v any) cbor.RawMessage {
		b, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	vcpu := func(n uint64) VCPU {
		c := VCPU{SP_EL0: n + 1, SP_EL1: n + 2, PC: 0x4008_0000 + n, PSTATE: 0x3c5, ELR_EL1: n + 3,
			SPSR_EL1: n + 4, FPCR: 1 << 24, FPSR: 1 << 27, MPIDR: 1<<31 | n, Power: psci.Power(n),
			Timer:   Timer{CTL: 1, CVAL: 0x1234_5678 + n, Counter: 0x1234_0000 + n},
			Sys:     map[uint16]uint64{SysReg(3, 0, 1, 0, 0): 0x30d0_0985 + n, SysReg(3, 0, 10, 2, 0): 0xff + n},
			Backend: raw(map[string]uint64{"kvm-only": n})}
		for i := range c.X {
			c.X[i] = n<<8 | uint64(i)
		}
		for i := range c.V {
			c.V[i] = [2]uint64{n<<8 | uint64(i), ^uint64(i)}
		}
		return c
	}
	return &State{
		Header: Header{Arch: Arch, Backend: gic.BackendKVM, BackendVersion: "6.8.0", HostPageSize: 4096,
			RAMBase: 0x4000_0000, RAMSize: 1 << 20, ID: "0123456789abcdef0123456789abcdef",
			Parent: "fedcba9876543210fedcba9876543210", Type: Diff,
			Created: time.Date(2026, 5, 1, 12, 30, 45, 123456789, time.UTC),
			Memory:  MemoryRef{FileID: "00112233445566778899aabbccddeeff", Size: 1 << 20, BlockSize: 16 << 10}},
		Machine: Machine{
			Config: Config{VCPUs: 2, MemoryMiB: 1, Cmdline: "console=ttyAMA0 panic=-1",
				Extra: raw(map[string]string{"kernel": "/vmlinux"})},
			VCPUs: []VCPU{vcpu(0), vcpu(1)},
			GIC: gic.State{Backend: gic.BackendKVM, BackendVersion: "6.8.0", Blob: []byte{1, 2, 3, 4},
				ICC: []gic.ICCRegs{{0xc230: 0xf0}, {0xc230: 0xf8}}},
			Devices: map[string]cbor.RawMessage{"pl011": raw([]uint32{1, 2}), "pl031": raw(uint64(7))},
		},
	}
}

// TestFixtureComplete keeps testState honest: a field added to the format
// must be set in it, so the round-trip and golden tests cover it.
func TestFixtureComplete(t *testing.T) {
	var walk func(path string, v reflect.Value)
	walk = func(path string, v reflect.Value) {
		if v.IsZero() {
			t.Errorf("testState leaves %s zero", path)
			return
		}
		switch v.Kind() {
		case reflect.Struct:
			if v.Type() == reflect.TypeOf(time.Time{}) {
				return
			}
			for i := range v.NumField() {
				walk(path+"."+v.Type().Field(i).Name, v.Field(i))
			}
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.Struct {
				for i := range v.Len() {
					walk(path+"[i]", v.Index(i))
				}
			}
		}
	}
	s := testState(t)
	// The first vCPU is On, which is psci.Power's zero value.
	s.Machine.VCPUs[0].Power = psci.OnPending
	walk("State", reflect.ValueOf(*s))
}
