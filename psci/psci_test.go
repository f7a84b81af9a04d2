package psci

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

const (
	ramBase = 0x4000_0000
	ramSize = 0x1000_0000
	entry   = ramBase + 0x8_0000
)

// mpidr returns vCPU i's MPIDR_EL1 the way KVM builds it: RES1 bit 31, Aff0 = i[3:0],
// Aff1 = i[11:4], Aff2 = i[19:12].
func mpidr(i int) uint64 {
	return 1<<31 | uint64(i&0xF) | uint64(i>>4&0xFF)<<8 | uint64(i>>12&0xFF)<<16
}

// newMachine returns a Machine with n vCPUs and, when states is not nil, those power states.
func newMachine(t testing.TB, n int, states []Power) *Machine {
	t.Helper()
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = mpidr(i)
	}
	m, err := New(Config{
		MPIDRs:     ids,
		ValidEntry: func(a uint64) bool { return a >= ramBase && a < ramBase+ramSize },
	})
	if err != nil {
		t.Fatal(err)
	}
	if states != nil {
		if err := m.SetPowerStates(states); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// x0 is how a Return or result v appears in x0 for a call to f.
func x0(f FunctionID, v int32) uint64 {
	if f.is64() {
		return uint64(int64(v))
	}
	return uint64(uint32(v))
}

// The table machine has 18 vCPUs: 0-15 in cluster 0 (Aff1 = 0), 16-17 in cluster 1.
const tableCPUs = 18

func states(overrides map[int]Power) []Power {
	p := make([]Power, tableCPUs)
	for i := range p {
		p[i] = Off
	}
	p[0] = On
	for i, s := range overrides {
		p[i] = s
	}
	return p
}

func TestHandle(t *testing.T) {
	const hi = 0xFFFF_FFFF_0000_0000 // upper bits that SMC32 calls must ignore
	cpuOn := func(target int) Action { return Action{Kind: CPUOn, Target: target, Entry: entry, Context: 0xC0} }
	tests := []struct {
		name      string
		states    map[int]Power // initial states other than the cold-boot default
		caller    int
		fid       FunctionID
		args      [3]uint64
		want      int32
		action    Action
		wantPower map[int]Power // states expected to differ from the initial ones
	}{
		{name: "PSCI_VERSION", fid: PSCI_VERSION, want: Version},
		{name: "SMCCC_VERSION", fid: SMCCC_VERSION, want: SMCCCVersion},
		{name: "MIGRATE_INFO_TYPE", fid: MIGRATE_INFO_TYPE, want: 2},

		{name: "CPU_SUSPEND_32", fid: CPU_SUSPEND_32, args: [3]uint64{1 << 16, 0, 0}, action: Action{Kind: Suspend}},
		{name: "CPU_SUSPEND_64", fid: CPU_SUSPEND_64, args: [3]uint64{0, 1 << 60, 7}, action: Action{Kind: Suspend}},
		{name: "SYSTEM_OFF", fid: SYSTEM_OFF, action: Action{Kind: SystemOff}},
		{name: "SYSTEM_RESET", fid: SYSTEM_RESET, action: Action{Kind: SystemReset}},

		{name: "CPU_ON_64", fid: CPU_ON_64, args: [3]uint64{mpidr(5) &^ (1 << 31), entry, 0xC0},
			action: cpuOn(5), wantPower: map[int]Power{5: OnPending}},
		{name: "CPU_ON_64 cluster 1", fid: CPU_ON_64, args: [3]uint64{0x101, entry, 0xC0},
			action: cpuOn(17), wantPower: map[int]Power{17: OnPending}},
		{name: "CPU_ON_32 ignores upper bits", fid: CPU_ON_32, args: [3]uint64{hi | 3, hi | entry, hi | 0xC0},
			action: cpuOn(3), wantPower: map[int]Power{3: OnPending}},
		{name: "CPU_ON from a secondary", states: map[int]Power{2: On}, caller: 2, fid: CPU_ON_64,
			args: [3]uint64{4, entry, 0xC0}, action: cpuOn(4), wantPower: map[int]Power{4: OnPending}},
		{name: "CPU_ON_64 unknown target", fid: CPU_ON_64, args: [3]uint64{0x200, entry, 0}, want: -2},
		{name: "CPU_ON_64 Aff3 unknown", fid: CPU_ON_64, args: [3]uint64{1<<32 | 1, entry, 0}, want: -2},
		{name: "CPU_ON_64 bit 31 set", fid: CPU_ON_64, args: [3]uint64{1<<31 | 1, entry, 0}, want: -2},
		{name: "CPU_ON_64 MT bit set", fid: CPU_ON_64, args: [3]uint64{1<<24 | 1, entry, 0}, want: -2},
		{name: "CPU_ON_64 bit 40 set", fid: CPU_ON_64, args: [3]uint64{1<<40 | 1, entry, 0}, want: -2},
		{name: "CPU_ON_32 bit 31 set", fid: CPU_ON_32, args: [3]uint64{1<<31 | 1, entry, 0}, want: -2},
		{name: "CPU_ON_64 entry below RAM", fid: CPU_ON_64, args: [3]uint64{1, ramBase - 4, 0}, want: -9},
		{name: "CPU_ON_64 entry above RAM", fid: CPU_ON_64, args: [3]uint64{1, 1<<32 | entry, 0}, want: -9},
		{name: "CPU_ON_32 entry 0", fid: CPU_ON_32, args: [3]uint64{1, hi, 0}, want: -9},
		{name: "CPU_ON unknown target before bad entry", fid: CPU_ON_64, args: [3]uint64{99, 0, 0}, want: -2},
		{name: "CPU_ON bad entry before ALREADY_ON", fid: CPU_ON_64, args: [3]uint64{0, 0, 0}, want: -9},
		{name: "CPU_ON self", fid: CPU_ON_64, args: [3]uint64{0, entry, 0}, want: -4},
		{name: "CPU_ON_32 ALREADY_ON", states: map[int]Power{1: On}, fid: CPU_ON_32, args: [3]uint64{1, entry, 0}, want: -4},
		{name: "CPU_ON_64 ON_PENDING", states: map[int]Power{1: OnPending}, fid: CPU_ON_64, args: [3]uint64{1, entry, 0}, want: -5},

		{name: "CPU_OFF secondary", states: map[int]Power{3: On}, caller: 3, fid: CPU_OFF,
			action: Action{Kind: CPUOff}, wantPower: map[int]Power{3: Off}},
		{name: "CPU_OFF BSP", states: map[int]Power{3: On}, fid: CPU_OFF,
			action: Action{Kind: CPUOff}, wantPower: map[int]Power{0: Off}},
		{name: "CPU_OFF last CPU", fid: CPU_OFF, action: Action{Kind: CPUOff}, wantPower: map[int]Power{0: Off}},
		{name: "CPU_OFF caller Off", caller: 1, fid: CPU_OFF, want: -3},
		{name: "CPU_OFF caller OnPending", states: map[int]Power{1: OnPending}, caller: 1, fid: CPU_OFF, want: -3},

		{name: "AFFINITY_INFO_32 On", fid: AFFINITY_INFO_32, args: [3]uint64{0, 0, 0}, want: 0},
		{name: "AFFINITY_INFO_32 Off", fid: AFFINITY_INFO_32, args: [3]uint64{1, 0, 0}, want: 1},
		{name: "AFFINITY_INFO_64 OnPending", states: map[int]Power{16: OnPending}, fid: AFFINITY_INFO_64,
			args: [3]uint64{0x100, 0, 0}, want: 2},
		{name: "AFFINITY_INFO_32 ignores upper bits", fid: AFFINITY_INFO_32, args: [3]uint64{hi | 1, hi, 0}, want: 1},
		{name: "AFFINITY_INFO level 0 unknown", fid: AFFINITY_INFO_64, args: [3]uint64{0x102, 0, 0}, want: -2},
		{name: "AFFINITY_INFO bit 31 set", fid: AFFINITY_INFO_64, args: [3]uint64{1<<31 | 1, 0, 0}, want: -2},
		{name: "AFFINITY_INFO level 4", fid: AFFINITY_INFO_64, args: [3]uint64{0, 4, 0}, want: -2},
		{name: "AFFINITY_INFO_64 level 2^32", fid: AFFINITY_INFO_64, args: [3]uint64{0, 1 << 32, 0}, want: -2},
		{name: "AFFINITY_INFO level 1 cluster 0 On", fid: AFFINITY_INFO_64, args: [3]uint64{0x0F, 1, 0}, want: 0},
		{name: "AFFINITY_INFO level 1 cluster 1 Off", fid: AFFINITY_INFO_64, args: [3]uint64{0x100, 1, 0}, want: 1},
		{name: "AFFINITY_INFO level 1 cluster 1 OnPending", states: map[int]Power{17: OnPending},
			fid: AFFINITY_INFO_64, args: [3]uint64{0x1FF, 1, 0}, want: 2},
		{name: "AFFINITY_INFO level 1 On beats OnPending", states: map[int]Power{16: OnPending, 17: On},
			fid: AFFINITY_INFO_64, args: [3]uint64{0x100, 1, 0}, want: 0},
		{name: "AFFINITY_INFO level 1 no cluster 2", fid: AFFINITY_INFO_64, args: [3]uint64{0x200, 1, 0}, want: -2},
		{name: "AFFINITY_INFO level 2", states: map[int]Power{0: Off, 16: On}, fid: AFFINITY_INFO_64,
			args: [3]uint64{0xFFFF, 2, 0}, want: 0},
		{name: "AFFINITY_INFO level 3", states: map[int]Power{0: Off}, fid: AFFINITY_INFO_64,
			args: [3]uint64{0xFF_FFFF, 3, 0}, want: 1},
		{name: "AFFINITY_INFO level 3 Aff3 unknown", fid: AFFINITY_INFO_64, args: [3]uint64{1 << 32, 3, 0}, want: -2},

		{name: "PSCI_FEATURES CPU_ON_64", fid: PSCI_FEATURES, args: [3]uint64{uint64(CPU_ON_64), 0, 0}, want: 0},
		{name: "PSCI_FEATURES CPU_SUSPEND_32", fid: PSCI_FEATURES, args: [3]uint64{uint64(CPU_SUSPEND_32), 0, 0}, want: 0},
		{name: "PSCI_FEATURES SMCCC_VERSION", fid: PSCI_FEATURES, args: [3]uint64{uint64(SMCCC_VERSION), 0, 0}, want: 0},
		{name: "PSCI_FEATURES upper bits ignored", fid: PSCI_FEATURES, args: [3]uint64{hi | uint64(PSCI_FEATURES), 0, 0}, want: 0},
		{name: "PSCI_FEATURES SMCCC_ARCH_FEATURES", fid: PSCI_FEATURES, args: [3]uint64{uint64(SMCCC_ARCH_FEATURES), 0, 0}, want: -1},
		{name: "PSCI_FEATURES MIGRATE_32", fid: PSCI_FEATURES, args: [3]uint64{uint64(MIGRATE_32), 0, 0}, want: -1},
		{name: "PSCI_FEATURES SYSTEM_RESET2_64", fid: PSCI_FEATURES, args: [3]uint64{uint64(SYSTEM_RESET2_64), 0, 0}, want: -1},
		{name: "PSCI_FEATURES CPU_OFF as SMC64", fid: PSCI_FEATURES, args: [3]uint64{uint64(CPU_OFF | 1<<30), 0, 0}, want: -1},
		{name: "PSCI_FEATURES 0", fid: PSCI_FEATURES, want: -1},

		{name: "SMCCC_ARCH_FEATURES SMCCC_VERSION", fid: SMCCC_ARCH_FEATURES, args: [3]uint64{uint64(SMCCC_VERSION), 0, 0}, want: 0},
		{name: "SMCCC_ARCH_FEATURES itself", fid: SMCCC_ARCH_FEATURES, args: [3]uint64{hi | uint64(SMCCC_ARCH_FEATURES), 0, 0}, want: 0},
		{name: "SMCCC_ARCH_FEATURES WORKAROUND_1", fid: SMCCC_ARCH_FEATURES, args: [3]uint64{uint64(SMCCC_ARCH_WORKAROUND_1), 0, 0}, want: -1},
		{name: "SMCCC_ARCH_FEATURES WORKAROUND_2", fid: SMCCC_ARCH_FEATURES, args: [3]uint64{uint64(SMCCC_ARCH_WORKAROUND_2), 0, 0}, want: -1},
		{name: "SMCCC_ARCH_FEATURES WORKAROUND_3", fid: SMCCC_ARCH_FEATURES, args: [3]uint64{uint64(SMCCC_ARCH_WORKAROUND_3), 0, 0}, want: -1},
		{name: "SMCCC_ARCH_FEATURES PSCI_VERSION", fid: SMCCC_ARCH_FEATURES, args: [3]uint64{uint64(PSCI_VERSION), 0, 0}, want: -1},

		{name: "SMCCC_ARCH_WORKAROUND_1", fid: SMCCC_ARCH_WORKAROUND_1, want: -1},
		{name: "SMCCC_ARCH_WORKAROUND_2", fid: SMCCC_ARCH_WORKAROUND_2, args: [3]uint64{1, 0, 0}, want: -1},
		{name: "SMCCC_ARCH_WORKAROUND_3", fid: SMCCC_ARCH_WORKAROUND_3, want: -1},
		{name: "MIGRATE_32", fid: MIGRATE_32, args: [3]uint64{1, 0, 0}, want: -1},
		{name: "MIGRATE_64", fid: MIGRATE_64, args: [3]uint64{1, 0, 0}, want: -1},
		{name: "MIGRATE_INFO_UP_CPU_32", fid: MIGRATE_INFO_UP_CPU_32, want: -1},
		{name: "MIGRATE_INFO_UP_CPU_64", fid: MIGRATE_INFO_UP_CPU_64, want: -1},
		{name: "SYSTEM_SUSPEND_32", fid: SYSTEM_SUSPEND_32, args: [3]uint64{entry, 0, 0}, want: -1},
		{name: "SYSTEM_SUSPEND_64", fid: SYSTEM_SUSPEND_64, args: [3]uint64{entry, 0, 0}, want: -1},
		{name: "SYSTEM_RESET2_32", fid: SYSTEM_RESET2_32, want: -1},
		{name: "SYSTEM_RESET2_64", fid: SYSTEM_RESET2_64, want: -1},

		{name: "PSCI_VERSION as SMC64", fid: PSCI_VERSION | 1<<30, want: -1},
		{name: "CPU_OFF as SMC64", fid: CPU_OFF | 1<<30, want: -1},
		{name: "bits 23:16 set", fid: PSCI_VERSION | 1<<16, want: -1},
		{name: "bits 23:16 set SMC64", fid: CPU_ON_64 | 0x80<<16, args: [3]uint64{1, entry, 0}, want: -1},
		{name: "yielding call", fid: PSCI_VERSION &^ (1 << 31), want: -1},
		{name: "KVM PSCI 0.1 CPU_ON", fid: 0x95C1BA5E + 2, args: [3]uint64{1, entry, 0}, want: -1},
		{name: "fid 0", fid: 0, want: -1},
		{name: "fid all ones", fid: 0xFFFFFFFF, want: -1},
		{name: "caller -1", caller: -1, fid: PSCI_VERSION, want: -1},
		{name: "caller out of range", caller: tableCPUs, fid: SYSTEM_OFF, want: -1},
		{name: "caller out of range SMC64", caller: 1 << 30, fid: CPU_ON_64, args: [3]uint64{1, entry, 0}, want: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMachine(t, tableCPUs, states(tt.states))
			before := m.PowerStates()
			got := m.Handle(tt.caller, uint32(tt.fid), tt.args)
			want := Result{X: [4]uint64{x0(tt.fid, tt.want)}, Action: tt.action}
			if got != want {
				t.Errorf("Handle(%d, %v, %#x) = %#x, want %#x", tt.caller, tt.fid, tt.args, got, want)
			}
			wantPower := before
			for i, p := range tt.wantPower {
				wantPower[i] = p
			}
			if p := m.PowerStates(); !reflect.DeepEqual(p, wantPower) {
				t.Errorf("power states = %v, want %v", p, wantPower)
			}
		})
	}
}

// TestConventions checks the x0 encoding of negative and positive results for both
// calling conventions.
func TestConventions(t *testing.T) {
	m := newMachine(t, 2, nil)
	for _, tt := range []struct {
		fid  FunctionID
		args [3]uint64
		want uint64
	}{
		{PSCI_VERSION, [3]uint64{}, 0x10000},
		{CPU_ON_32, [3]uint64{7, entry, 0}, 0xFFFF_FFFE},
		{CPU_ON_64, [3]uint64{7, entry, 0}, 0xFFFF_FFFF_FFFF_FFFE},
		{CPU_ON_32, [3]uint64{0, entry, 0}, 0xFFFF_FFFC},
		{CPU_ON_64, [3]uint64{0, entry, 0}, 0xFFFF_FFFF_FFFF_FFFC},
		{CPU_ON_32, [3]uint64{1, 0, 0}, 0xFFFF_FFF7},
		{CPU_ON_64, [3]uint64{1, 0, 0}, 0xFFFF_FFFF_FFFF_FFF7},
		{AFFINITY_INFO_32, [3]uint64{1, 0, 0}, 1},
		{AFFINITY_INFO_64, [3]uint64{1, 0, 0}, 1},
		{0x8400_00FF, [3]uint64{}, 0xFFFF_FFFF},
		{0xC400_00FF, [3]uint64{}, 0xFFFF_FFFF_FFFF_FFFF},
	} {
		if got := m.Handle(0, uint32(tt.fid), tt.args).X; got != [4]uint64{tt.want} {
			t.Errorf("Handle(0, %v, %#x).X = %#x, want [%#x 0 0 0]", tt.fid, tt.args, got, tt.want)
		}
	}
}

// TestFeaturesAgree checks that PSCI_FEATURES and SMCCC_ARCH_FEATURES report exactly the
// functions that Handle implements, for every named function ID.
func TestFeaturesAgree(t *testing.T) {
	implemented := map[FunctionID]bool{
		PSCI_VERSION: true, CPU_SUSPEND_32: true, CPU_SUSPEND_64: true, CPU_OFF: true,
		CPU_ON_32: true, CPU_ON_64: true, AFFINITY_INFO_32: true, AFFINITY_INFO_64: true,
		MIGRATE_INFO_TYPE: true, SYSTEM_OFF: true, SYSTEM_RESET: true, PSCI_FEATURES: true,
		SMCCC_VERSION: true, SMCCC_ARCH_FEATURES: true,
	}
	for f := range functionNames {
		t.Run(f.String(), func(t *testing.T) {
			// With an On caller and f itself as the first argument, no implemented
			// function answers NOT_SUPPORTED (the FEATURES calls then query themselves).
			m := newMachine(t, 2, []Power{On, On})
			handled := m.Handle(1, uint32(f), [3]uint64{uint64(f), 0, 0}).X[0] != x0(f, -1)
			if handled != implemented[f] {
				t.Errorf("Handle(%v) handled = %v, want %v", f, handled, implemented[f])
			}
			isPSCI := f.owner() == ownerStandardSecure
			wantPSCI := x0(PSCI_FEATURES, -1)
			if implemented[f] && (isPSCI || f == SMCCC_VERSION) {
				wantPSCI = 0
			}
			if got := m.Handle(0, uint32(PSCI_FEATURES), [3]uint64{uint64(f)}).X[0]; got != wantPSCI {
				t.Errorf("PSCI_FEATURES(%v) = %#x, want %#x", f, got, wantPSCI)
			}
			wantArch := x0(SMCCC_ARCH_FEATURES, -1)
			if implemented[f] && !isPSCI {
				wantArch = 0
			}
			if got := m.Handle(0, uint32(SMCCC_ARCH_FEATURES), [3]uint64{uint64(f)}).X[0]; got != wantArch {
				t.Errorf("SMCCC_ARCH_FEATURES(%v) = %#x, want %#x", f, got, wantArch)
			}
		})
	}
}

// TestCPUOnOffCycle follows a secondary through CPU_ON, Started, CPU_OFF and CPU_ON again.
func TestCPUOnOffCycle(t *testing.T) {
	m := newMachine(t, 4, nil)
	affinity := func(target uint64) uint64 {
		return m.Handle(0, uint32(AFFINITY_INFO_64), [3]uint64{target, 0, 0}).X[0]
	}
	step := func(caller int, f FunctionID, args [3]uint64, want Result) {
		t.Helper()
		if got := m.Handle(caller, uint32(f), args); got != want {
			t.Fatalf("Handle(%d, %v, %#x) = %#x, want %#x", caller, f, args, got, want)
		}
	}
	for round := range 3 {
		ctx := uint64(round)
		step(0, CPU_ON_64, [3]uint64{2, entry, ctx}, Result{Action: Action{Kind: CPUOn, Target: 2, Entry: entry, Context: ctx}})
		if p := m.Power(2); p != OnPending {
			t.Fatalf("round %d: after CPU_ON, Power(2) = %v", round, p)
		}
		if got := affinity(2); got != 2 {
			t.Fatalf("round %d: AFFINITY_INFO while pending = %d", round, got)
		}
		step(1, CPU_ON_64, [3]uint64{2, entry, ctx}, Result{X: [4]uint64{x0(CPU_ON_64, -5)}})

		m.Started(2)
		if p := m.Power(2); p != On {
			t.Fatalf("round %d: after Started, Power(2) = %v", round, p)
		}
		m.Started(2) // no effect on an On vCPU
		if got := affinity(2); got != 0 {
			t.Fatalf("round %d: AFFINITY_INFO when on = %d", round, got)
		}
		step(0, CPU_ON_32, [3]uint64{2, entry, ctx}, Result{X: [4]uint64{x0(CPU_ON_32, -4)}})

		step(2, CPU_OFF, [3]uint64{}, Result{Action: Action{Kind: CPUOff}})
		if p := m.Power(2); p != Off {
			t.Fatalf("round %d: after CPU_OFF, Power(2) = %v", round, p)
		}
		m.Started(2) // no effect on an Off vCPU
		if got := affinity(2); got != 1 {
			t.Fatalf("round %d: AFFINITY_INFO when off = %d", round, got)
		}
		step(2, CPU_OFF, [3]uint64{}, Result{X: [4]uint64{x0(CPU_OFF, -3)}})
	}
	if m.Halted() {
		t.Fatal("Halted with the BSP on")
	}
	step(0, CPU_OFF, [3]uint64{}, Result{Action: Action{Kind: CPUOff}})
	if !m.Halted() {
		t.Fatal("not Halted after the last CPU_OFF")
	}
}

func TestNew(t *testing.T) {
	valid := func(uint64) bool { return true }
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"one vCPU", Config{MPIDRs: []uint64{0x8000_0000}, ValidEntry: valid}, true},
		{"Aff3", Config{MPIDRs: []uint64{0, 1 << 32}, ValidEntry: valid}, true},
		{"no vCPUs", Config{ValidEntry: valid}, false},
		{"nil ValidEntry", Config{MPIDRs: []uint64{0}}, false},
		{"duplicate", Config{MPIDRs: []uint64{0, 1, 1}, ValidEntry: valid}, false},
		{"duplicate but bit 31", Config{MPIDRs: []uint64{0x8000_0001, 1}, ValidEntry: valid}, false},
		{"duplicate but U and MT", Config{MPIDRs: []uint64{0x4100_0000, 0}, ValidEntry: valid}, false},
	} {
		m, err := New(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("%s: New error = %v, want ok = %v", tt.name, err, tt.ok)
			continue
		}
		if err != nil {
			continue
		}
		want := make([]Power, len(tt.cfg.MPIDRs))
		for i := range want {
			want[i] = Off
		}
		want[0] = On
		if got := m.PowerStates(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: PowerStates() = %v, want %v", tt.name, got, want)
		}
	}
}

func TestPowerOutOfRange(t *testing.T) {
	m := newMachine(t, 2, nil)
	for _, i := range []int{-1, 2, 1 << 40} {
		if p := m.Power(i); p != Off {
			t.Errorf("Power(%d) = %v, want Off", i, p)
		}
		m.Started(i)
	}
	if got, want := m.PowerStates(), []Power{On, Off}; !reflect.DeepEqual(got, want) {
		t.Errorf("PowerStates() = %v, want %v", got, want)
	}
}

func TestSetPowerStates(t *testing.T) {
	m := newMachine(t, 3, nil)
	for _, bad := range [][]Power{
		nil,
		{On, Off},
		{On, Off, Off, Off},
		{On, Off, 3},
		{On, -1, Off},
	} {
		if err := m.SetPowerStates(bad); err == nil {
			t.Errorf("SetPowerStates(%v) succeeded", bad)
		}
		if got, want := m.PowerStates(), []Power{On, Off, Off}; !reflect.DeepEqual(got, want) {
			t.Fatalf("after SetPowerStates(%v): PowerStates() = %v, want %v", bad, got, want)
		}
	}
	p := []Power{Off, OnPending, On}
	if err := m.SetPowerStates(p); err != nil {
		t.Fatal(err)
	}
	p[0] = On // the Machine must hold its own copy
	if got, want := m.PowerStates(), []Power{Off, OnPending, On}; !reflect.DeepEqual(got, want) {
		t.Errorf("PowerStates() = %v, want %v", got, want)
	}
	got := m.PowerStates()
	got[1] = Off // and hand out copies
	if p := m.Power(1); p != OnPending {
		t.Errorf("Power(1) = %v after changing the PowerStates copy", p)
	}
}

func TestRestoreShape(t *testing.T) {
	saved := []Power{On, Off, OnPending, On}
	for _, tt := range []struct {
		saved  []Power
		policy RestorePolicy
		want   []Power // nil: refused
	}{
		{saved, RestoreBSPOnly, nil},
		{[]Power{On, Off, OnPending}, RestoreBSPOnly, nil},
		{[]Power{On, Off, Off}, RestoreBSPOnly, []Power{On, Off, Off}},
		{[]Power{Off, Off}, RestoreBSPOnly, []Power{On, Off}},
		{[]Power{Off, 7}, RestoreBSPOnly, []Power{On, Off}},
		{saved, RestorePolicy(99), nil},
		{nil, RestoreBSPOnly, []Power{}},
		{saved, RestoreSaved, []Power{On, Off, On, On}},
		{[]Power{Off, On}, RestoreSaved, []Power{Off, On}},
		{[]Power{On, 7}, RestoreSaved, []Power{On, 7}},
		{nil, RestoreSaved, []Power{}},
	} {
		got, err := RestoreShape(tt.saved, tt.policy)
		if tt.want == nil {
			if err == nil {
				t.Errorf("RestoreShape(%v, %d) = %v, want it refused", tt.saved, tt.policy, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("RestoreShape(%v, %d) = %v, %v, want %v", tt.saved, tt.policy, got, err, tt.want)
		}
	}
	if saved[2] != OnPending {
		t.Error("RestoreShape changed its input")
	}
	if _, err := RestoreShape([]Power{On, On}, RestoreBSPOnly); err == nil || !strings.Contains(err.Error(), "vCPU 1 was online") {
		t.Errorf("boot_vcpu with vCPU 1 online: %v", err)
	}

	// Round trip: snapshot, restore into a new Machine, carry on.
	m := newMachine(t, 4, nil)
	m.Handle(0, uint32(CPU_ON_64), [3]uint64{1, entry, 0})
	m.Started(1)
	m.Handle(0, uint32(CPU_ON_64), [3]uint64{2, entry, 0})
	snap := m.PowerStates()
	r := newMachine(t, 4, nil)
	shape, err := RestoreShape(snap, RestoreSaved)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetPowerStates(shape); err != nil {
		t.Fatal(err)
	}
	if got, want := r.PowerStates(), []Power{On, On, On, Off}; !reflect.DeepEqual(got, want) {
		t.Errorf("restored %v, want %v", got, want)
	}
	bad, _ := RestoreShape([]Power{On, 5, Off, Off}, RestoreSaved)
	if err := newMachine(t, 4, nil).SetPowerStates(bad); err == nil {
		t.Error("SetPowerStates accepted an invalid saved state")
	}
}

// TestConcurrent runs every secondary through CPU_ON, Started and CPU_OFF on its own
// goroutine, while reader goroutines issue other calls and query state. Run it with -race;
// TestConcurrentCPUOn races CPU_ON calls against each other.
func TestConcurrent(t *testing.T) {
	const n, rounds = 32, 200
	m := newMachine(t, n, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for v := 1; v < n; v++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			target := mpidr(v) & affinityMask
			for range rounds {
				r := m.Handle(0, uint32(CPU_ON_64), [3]uint64{target, entry, uint64(v)})
				if r.Action.Kind != CPUOn || r.Action.Target != v {
					errs <- fmt.Errorf("vCPU %d: CPU_ON = %#x", v, r)
					return
				}
				m.Started(v)
				if r := m.Handle(v, uint32(AFFINITY_INFO_64), [3]uint64{target, 0, 0}); r.X[0] != 0 {
					errs <- fmt.Errorf("vCPU %d: AFFINITY_INFO = %#x", v, r.X[0])
					return
				}
				if r := m.Handle(v, uint32(CPU_OFF), [3]uint64{}); r.Action.Kind != CPUOff {
					errs <- fmt.Errorf("vCPU %d: CPU_OFF = %#x", v, r)
					return
				}
			}
		}()
		// A reader that races the owner: standby calls and cluster-wide queries.
		go func() {
			defer wg.Done()
			target := mpidr(v) & affinityMask
			for range rounds {
				r := m.Handle(0, uint32(CPU_SUSPEND_64), [3]uint64{})
				if r.Action.Kind != Suspend {
					errs <- fmt.Errorf("CPU_SUSPEND = %#x", r)
					return
				}
				got := m.Handle(0, uint32(AFFINITY_INFO_64), [3]uint64{target, 1, 0}).X[0]
				if got > 2 {
					errs <- fmt.Errorf("AFFINITY_INFO level 1 = %#x", got)
					return
				}
				_ = m.PowerStates()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := make([]Power, n)
	for i := range want {
		want[i] = Off
	}
	want[0] = On
	if got := m.PowerStates(); !reflect.DeepEqual(got, want) {
		t.Errorf("final states = %v, want %v", got, want)
	}
}

// TestConcurrentCPUOn races CPU_ON calls for one target: exactly one may succeed.
func TestConcurrentCPUOn(t *testing.T) {
	const n = 16
	on := make([]Power, n)
	on[1] = Off // the target; every other vCPU is On and calls CPU_ON
	for range 50 {
		m := newMachine(t, n, on)
		results := make(chan Result, n)
		var wg sync.WaitGroup
		for c := range n {
			if c == 1 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				results <- m.Handle(c, uint32(CPU_ON_64), [3]uint64{1, entry, uint64(c)})
			}()
		}
		wg.Wait()
		close(results)
		wins := 0
		for r := range results {
			switch r.X[0] {
			case 0:
				wins++
			case x0(CPU_ON_64, -4), x0(CPU_ON_64, -5):
			default:
				t.Errorf("CPU_ON = %#x", r)
			}
		}
		if wins != 1 || m.Power(1) != OnPending {
			t.Fatalf("%d CPU_ON calls succeeded and Power(1) = %v, want 1 and OnPending", wins, m.Power(1))
		}
	}
}

func TestString(t *testing.T) {
	for _, tt := range []struct {
		v    fmt.Stringer
		want string
	}{
		{CPU_ON_64, "CPU_ON_64"},
		{PSCI_FEATURES, "PSCI_FEATURES"},
		{SMCCC_ARCH_WORKAROUND_2, "SMCCC_ARCH_WORKAROUND_2"},
		{FunctionID(0x84000042), "FunctionID(0x84000042)"},
		{SUCCESS, "SUCCESS"},
		{INVALID_ADDRESS, "INVALID_ADDRESS"},
		{Return(-10), "Return(-10)"},
		{Return(1), "Return(1)"},
		{OnPending, "OnPending"},
		{Power(3), "Power(3)"},
		{SystemReset, "SystemReset"},
		{ActionKind(-1), "ActionKind(-1)"},
	} {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	for f, name := range functionNames {
		if f.String() != name {
			t.Errorf("%#x.String() = %q, want %q", uint32(f), f.String(), name)
		}
	}
}
