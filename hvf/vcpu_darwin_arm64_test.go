//go:build darwin && arm64

package hvf_test

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/hvf"
	"github.com/squibvm/squib/vmm"
)

// program runs at vmm.RAMBase with x0 = 0x5a; assembled with GNU as
// (aarch64-linux-gnu-as), one instruction per word.
var program = []uint32{
	0xd2a80001, // mov   x1, #0x40000000
	0xf2900001, // movk  x1, #0x8000
	0xf9000020, // str   x0, [x1]          RAM page 2: a dirty-page fault
	0xd2a12002, // mov   x2, #0x9000000
	0xb9000040, // str   w0, [x2]          MMIO write, 4 bytes
	0x3900105f, // strb  wzr, [x2, #4]     MMIO write of XZR, 1 byte
	0x39800043, // ldrsb x3, [x2]          MMIO read, sign-extended to 64 bits
	0x92800004, // mov   x4, #-1
	0xb9400044, // ldr   w4, [x2]          MMIO read, zero-extends into x4
	0x92800005, // mov   x5, #-1
	0x79c00045, // ldrsh w5, [x2]          MMIO read, sign-extended to 32 bits
	0xd510109f, // msr   oslar_el1, xzr    trapped or not: no exit
	0xaa0303e1, // mov   x1, x3
	0xaa0403e2, // mov   x2, x4
	0xaa0503e3, // mov   x3, x5
	0xd2b08000, // mov   x0, #0x84000000
	0xd4000002, // hvc   #0                the PC already points past it
	0xaa0003e1, // mov   x1, x0
	0xd2b08000, // mov   x0, #0x84000000
	0xf2800020, // movk  x0, #0x1
	0xd4000003, // smc   #0                the backend moves the PC past it
	0xaa0003e1, // mov   x1, x0
	0xd2b08000, // mov   x0, #0x84000000
	0xf2800040, // movk  x0, #0x2
	0xd4000002, // hvc   #0
	0xd53be041, // mrs   x1, cntvct_el0
	0xd2b08000, // mov   x0, #0x84000000
	0xf2800060, // movk  x0, #0x3
	0xd4000002, // hvc   #0
	0x14000000, // b     .
}

const counterStart = 1 << 40

// TestGuestProgram runs program and checks every exit it makes: MMIO
// widths, sign and zero extension, XZR, the PC after MMIO, HVC and SMC,
// dirty-page tracking and the guest counter.
func TestGuestProgram(t *testing.T) {
	ram, vm := newVM(t, openHVF(t), 1)
	code := make([]byte, 4*len(program))
	for i, w := range program {
		binary.LittleEndian.PutUint32(code[4*i:], w)
	}
	if err := ram.Write(vmm.RAMBase, code); err != nil {
		t.Fatal(err)
	}
	const ffff = ^uint64(0)
	steps := []struct {
		want    hv.Exit
		read    uint64    // CompleteMMIORead value for a load
		results [4]uint64 // CompleteHypercall values
	}{
		{want: hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0000, Size: 4, Write: true, Data: 0x5a}},
		{want: hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0004, Size: 1, Write: true, Data: 0}},
		{want: hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0000, Size: 1}, read: 0x80},
		{want: hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0000, Size: 4}, read: 0xdeadbeef},
		{want: hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0000, Size: 2}, read: 0x8001},
		{want: hv.Exit{Kind: hv.ExitHypercall, FID: 0x84000000, Args: [3]uint64{ffff &^ 0x7f, 0xdeadbeef, 0xffff8001}}, results: [4]uint64{0x11, 1, 2, 3}},
		{want: hv.Exit{Kind: hv.ExitHypercall, FID: 0x84000001, Args: [3]uint64{0x11, 2, 3}}, results: [4]uint64{0x55}},
		{want: hv.Exit{Kind: hv.ExitHypercall, FID: 0x84000002, Args: [3]uint64{0x55, 0, 0}}},
	}
	err := onVCPU0(vm, func(c *hvf.VCPU) error {
		if err := vm.TrackDirty(16 << 10); err != nil {
			return err
		}
		vm.SetGuestCounter(counterStart)
		if err := c.PowerOn(vmm.RAMBase, 0x5a); err != nil {
			return err
		}
		var timedOut atomic.Bool
		timer := time.AfterFunc(10*time.Second, func() { timedOut.Store(true); c.Kick() })
		defer timer.Stop()
		run := func() (hv.Exit, error) {
			for {
				e, err := c.Run()
				if err != nil || e.Kind != hv.ExitKicked {
					return e, err
				}
				if timedOut.Load() {
					return e, fmt.Errorf("no exit within 10 s")
				}
			}
		}
		for i, s := range steps {
			e, err := run()
			if err != nil {
				return fmt.Errorf("step %d: %w", i, err)
			}
			if e != s.want {
				return fmt.Errorf("step %d: exit %+v, want %+v", i, e, s.want)
			}
			switch {
			case e.Kind == hv.ExitMMIO && !e.Write:
				err = c.CompleteMMIORead(s.read)
			case e.Kind == hv.ExitHypercall:
				err = c.CompleteHypercall(s.results)
			}
			if err != nil {
				return fmt.Errorf("step %d: %w", i, err)
			}
		}
		e, err := run()
		if err != nil {
			return err
		}
		if e.Kind != hv.ExitHypercall || e.FID != 0x84000003 || e.Args[0] < counterStart || e.Args[0] > counterStart+240_000_000 {
			return fmt.Errorf("counter exit %+v: want FID 0x84000003 and a CNTVCT_EL0 just above %#x", e, uint64(counterStart))
		}
		dirty, err := vm.CollectDirty()
		if err != nil {
			return err
		}
		for i, w := range dirty {
			want := uint64(0)
			if i == 0 {
				want = 1 << 2
			}
			if w != want {
				return fmt.Errorf("dirty bitmap word %d = %#x, want %#x (only the page the program wrote)", i, w, want)
			}
		}
		return vm.StopDirtyTracking()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStateAPIs round-trips the state a snapshot needs on a vCPU that has
// not run: V0-V31 (through the assembly trampoline), the ICC registers, the
// GIC blob, and the guest counter.
func TestStateAPIs(t *testing.T) {
	_, vm := newVM(t, openHVF(t), 1)
	err := onVCPU0(vm, func(c *hvf.VCPU) error {
		for n := range 32 {
			want := [2]uint64{0x0011223344556677 + uint64(n), 0x8899aabbccddeeff ^ uint64(n)<<56}
			if err := c.SetSIMD(n, want); err != nil {
				return err
			}
			if got, err := c.SIMD(n); err != nil || got != want {
				return fmt.Errorf("V%d: set %#x, read back %#x (%v)", n, want, got, err)
			}
		}
		icc, err := c.SaveICC()
		if err != nil {
			return err
		}
		icc[gic.ICC_PMR_EL1] = 0xf0
		if err := c.RestoreICC(icc); err != nil {
			return err
		}
		if again, err := c.SaveICC(); err != nil || again[gic.ICC_PMR_EL1] != 0xf0 {
			return fmt.Errorf("ICC_PMR_EL1 = %#x after restoring 0xf0 (%v)", again[gic.ICC_PMR_EL1], err)
		}
		if _, err := vm.SaveGIC(); err == nil {
			return fmt.Errorf("SaveGIC succeeded before the vCPU saved its state")
		}
		saved, err := c.SaveState()
		if err != nil {
			return err
		}
		if saved.V[5] != [2]uint64{0x0011223344556677 + 5, 0x8899aabbccddeeff ^ 5<<56} || saved.MPIDR != hv.MPIDR(0) {
			return fmt.Errorf("SaveState: V5 %#x MPIDR %#x", saved.V[5], saved.MPIDR)
		}
		if err := c.RestoreState(saved); err != nil {
			return err
		}
		if again, err := c.SaveState(); err != nil || again.V != saved.V || again.Sys[uint16(hvf.TPIDR_EL0)] != saved.Sys[uint16(hvf.TPIDR_EL0)] {
			return fmt.Errorf("state after RestoreState differs (%v)", err)
		}
		st, err := vm.SaveGIC()
		if err != nil {
			return err
		}
		if st.ICC[0][gic.ICC_PMR_EL1] != 0xf0 {
			return fmt.Errorf("SaveGIC: ICC_PMR_EL1 %#x, want 0xf0", st.ICC[0][gic.ICC_PMR_EL1])
		}
		if st.Backend != gic.BackendHVF || st.BackendVersion == "" || len(st.Blob) == 0 {
			return fmt.Errorf("GIC state %q %q with %d bytes", st.Backend, st.BackendVersion, len(st.Blob))
		}
		return vm.RestoreGIC(st)
	})
	if err != nil {
		t.Fatal(err)
	}
	vm.SetGuestCounter(counterStart)
	if got := vm.GuestCounter(); got < counterStart || got > counterStart+24_000_000 {
		t.Errorf("guest counter %#x right after setting %#x", got, uint64(counterStart))
	}
}
