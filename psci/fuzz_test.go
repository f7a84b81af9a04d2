package psci

import (
	"slices"
	"testing"
)

// FuzzHandle drives Handle with arbitrary callers, function IDs, arguments and initial
// power states of a four-vCPU machine (two bits per vCPU in states; 3 means Off). Handle
// must not panic, and its result must be well formed:
//   - x0 is in the caller's convention and is a Return or one of the documented
//     non-negative results (AFFINITY_INFO 1 and 2, MIGRATE_INFO_TYPE 2, Version,
//     SMCCCVersion); x1..x3 are zero;
//   - a call that fails leaves no Action and changes no power state;
//   - a CPUOn action names a vCPU that is now OnPending, and a CPUOff action turns the
//     caller Off.
func FuzzHandle(f *testing.F) {
	for fid := range functionNames {
		for _, args := range [][3]uint64{
			{},
			{uint64(fid), 0, 0},
			{1, entry, 0xC0},
			{0x8000_0001, 1, 0},
			{^uint64(0), ^uint64(0), ^uint64(0)},
		} {
			f.Add(0, uint32(fid), args[0], args[1], args[2], uint8(0xFC))
			f.Add(1, uint32(fid), args[0], args[1], args[2], uint8(0x94))
		}
	}
	f.Add(-1, uint32(PSCI_VERSION), uint64(0), uint64(0), uint64(0), uint8(0))
	f.Add(4, uint32(CPU_ON_64), uint64(1), uint64(entry), uint64(0), uint8(0))
	f.Add(0, uint32(0x95C1BA5E), uint64(1), uint64(entry), uint64(0), uint8(0))

	valid := map[int32]bool{1: true, 2: true, Version: true, SMCCCVersion: true}
	for r := INVALID_ADDRESS; r <= SUCCESS; r++ {
		valid[int32(r)] = true
	}
	f.Fuzz(func(t *testing.T, caller int, fid uint32, a1, a2, a3 uint64, states uint8) {
		initial := make([]Power, 4)
		for i := range initial {
			initial[i] = Power(states >> (2 * i) & 3)
			if initial[i] == 3 {
				initial[i] = Off
			}
		}
		m := newMachine(t, 4, initial)
		r := m.Handle(caller, fid, [3]uint64{a1, a2, a3})
		after := m.PowerStates()

		var v int32
		if FunctionID(fid).is64() {
			v = int32(r.X[0])
			if int64(v) != int64(r.X[0]) {
				t.Fatalf("SMC64 x0 %#x is not a sign-extended 32-bit value", r.X[0])
			}
		} else {
			if r.X[0] > 0xFFFF_FFFF {
				t.Fatalf("SMC32 x0 %#x has upper bits set", r.X[0])
			}
			v = int32(uint32(r.X[0]))
		}
		if !valid[v] {
			t.Fatalf("x0 = %#x (%d) is not a documented value", r.X[0], v)
		}
		if r.X[1] != 0 || r.X[2] != 0 || r.X[3] != 0 {
			t.Fatalf("x1..x3 = %#x, want zero", r.X[1:])
		}
		if v < 0 && (r.Action != Action{} || !slices.Equal(after, initial)) {
			t.Fatalf("failed call (%v) left action %+v and states %v -> %v", Return(v), r.Action, initial, after)
		}
		for i, p := range after {
			if !p.valid() {
				t.Fatalf("vCPU %d has invalid state %d", i, p)
			}
		}

		want := slices.Clone(initial)
		switch r.Action.Kind {
		case None, Suspend, SystemOff, SystemReset:
		case CPUOn:
			if v != 0 || r.Action.Target < 0 || r.Action.Target >= 4 || initial[r.Action.Target] != Off {
				t.Fatalf("CPUOn action %+v with x0 %d from states %v", r.Action, v, initial)
			}
			want[r.Action.Target] = OnPending
		case CPUOff:
			if v != 0 || initial[caller] != On {
				t.Fatalf("CPUOff for caller %d in state %v, x0 %d", caller, initial[caller], v)
			}
			want[caller] = Off
		default:
			t.Fatalf("unknown action %v", r.Action.Kind)
		}
		if !slices.Equal(after, want) {
			t.Fatalf("states %v -> %v after %+v, want %v", initial, after, r.Action, want)
		}

		// The other entry points take any index too.
		m.Started(caller)
		_ = m.Power(caller)
		_ = m.Halted()
	})
}
