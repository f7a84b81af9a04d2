//go:build linux && arm64

package kvm

import (
	"encoding/binary"
	"reflect"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/snapshot"
)

// stateProgram is a guest for the snapshot tests, hand-encoded arm64 (ARM
// DDI 0487, A64; each word checked against GNU as 2.x's encoding of the
// line). Offsets from ramBase on the left.
//
//	00 movz x1, #0x0900, lsl #16   // D2A12001: sf=1 opc=10 hw=01 imm16=0x0900 Rd=1; MMIO report base
//	04 movz x2, #0x0800, lsl #16   // D2A10002: x2 = gic.DistBase
//	08 movz x7, #0x30, lsl #16     // D2A00607: x7 = CPACR_EL1.FPEN (bits 21:20) = 0b11
//	0c msr  cpacr_el1, x7          // D5181047: MSR op0=3 op1=0 CRn=1 CRm=0 op2=2; FP/SIMD does not trap
//	10 isb                         // D5033FDF
//	14 movz w3, #0x100             // 52802003: sf=0 hw=00 imm16=0x100 Rd=3; bit 8: INTID 40
//	18 str  w3, [x2, #0x104]       // B9010443: STR (imm, unsigned) size=10 imm12=0x104/4=0x41 Rn=2 Rt=3; GICD_ISENABLER1
//	1c movz w3, #0xa0              // 52801403
//	20 strb w3, [x2, #0x428]       // 3910A043: size=00 imm12=0x428 Rn=2 Rt=3; GICD_IPRIORITYR byte of INTID 40
//	24 movz x5, #0x1111            // D2822225
//	28 movk x5, #0x2222, lsl #16   // F2A44445: opc=11 hw=01
//	2c movk x5, #0x3333, lsl #32   // F2C66665: hw=10
//	30 movk x5, #0x4444, lsl #48   // F2E88885: hw=11; x5 = 0x4444333322221111
//	34 movz x6, #0xbeef            // D297DDE6
//	38 movk x6, #0xdead, lsl #48   // F2FBD5A6; x6 = 0xdead00000000beef
//	3c fmov d0, x5                 // 9E6700A0: sf=1 type=01 rmode=00 opcode=111 Rn=5 Rd=0; V0 = {x5, 0}
//	40 mov  v0.d[1], x6            // 4E181CC0: INS (general) imm5=11000 (D, index 1) Rn=6 Rd=0; V0 = {x5, x6}
//	44 fmov d31, x6                // 9E6700DF: V31 = {x6, 0}
//	48 msr  tpidr_el0, x5          // D51BD045: MSR o0=1(op0=3) op1=3 CRn=13 CRm=0 op2=2 Rt=5
//	4c movz x7, #0x7fff, lsl #48   // D2EFFFE7
//	50 msr  cntv_cval_el0, x7      // D51BE347: op0=3 op1=3 CRn=14 CRm=3 op2=2
//	54 movz x7, #1                 // D2800027
//	58 msr  cntv_ctl_el0, x7       // D51BE327: op0=3 op1=3 CRn=14 CRm=3 op2=1; timer enabled, due far in the future
//	5c isb                         // D5033FDF
//	60 movz x4, #0x4010, lsl #16   // D2A80204: x4 = RAM + 1 MiB (64 KiB block 16)
//	64 str  x5, [x4]               // F9000085: STR (imm) size=11 imm12=0 Rn=4 Rt=5
//	68 movz x4, #0x4013, lsl #16   // D2A80264
//	6c movk x4, #0x4000            // F2880004: x4 = RAM + 0x134000 (block 19)
//	70 str  x5, [x4]               // F9000085
//	74 str  x5, [x4, #0x4000]      // F9200085: imm12=0x4000/8=0x800; RAM + 0x138000, block 19 again
//	78 mrs  x8, cntvct_el0         // D53BE048: MRS L=1 op0=3 op1=3 CRn=14 CRm=0 op2=2 Rt=8
//	7c str  x8, [x1, #0x10]        // F9000828: imm12=2; exit A: the counter before
//	80 movz x4, #0x401f, lsl #16   // D2A803E4: x4 = RAM + 0x1f0000 (block 31)
//	84 str  x5, [x4]               // F9000085
//	88 mrs  x9, cntvct_el0         // D53BE049
//	8c str  x9, [x1, #0x18]        // F9000C29: exit B: the counter after
//	90 mrs  x10, tpidr_el0         // D53BD04A
//	94 str  x10, [x1, #0x20]       // F900102A
//	98 mov  x11, v0.d[1]           // 4E183C0B: UMOV imm5=11000 Rn=0 Rd=11
//	9c str  x11, [x1, #0x28]       // F900142B
//	a0 fmov x12, d31               // 9E6603EC: opcode=110 (to general) Rn=31 Rd=12
//	a4 str  x12, [x1, #0x30]       // F900182C
//	a8 mrs  x13, cntfrq_el0        // D53BE00D: op0=3 op1=3 CRn=14 CRm=0 op2=0
//	ac str  x13, [x1, #0x38]       // F9001C2D
//	b0 fmov x14, d0                // 9E66000E
//	b4 str  x14, [x1, #0x40]       // F900202E
//	b8 b    .                      // 14000000
var stateProgram = []uint32{
	0xD2A12001, 0xD2A10002, 0xD2A00607, 0xD5181047, 0xD5033FDF, 0x52802003,
	0xB9010443, 0x52801403, 0x3910A043, 0xD2822225, 0xF2A44445, 0xF2C66665,
	0xF2E88885, 0xD297DDE6, 0xF2FBD5A6, 0x9E6700A0, 0x4E181CC0, 0x9E6700DF,
	0xD51BD045, 0xD2EFFFE7, 0xD51BE347, 0xD2800027, 0xD51BE327, 0xD5033FDF,
	0xD2A80204, 0xF9000085, 0xD2A80264, 0xF2880004, 0xF9000085, 0xF9200085,
	0xD53BE048, 0xF9000828, 0xD2A803E4, 0xF9000085, 0xD53BE049, 0xF9000C29,
	0xD53BD04A, 0xF900102A, 0x4E183C0B, 0xF900142B, 0x9E6603EC, 0xF900182C,
	0xD53BE00D, 0xF9001C2D, 0x9E66000E, 0xF900202E, 0x14000000,
}

const (
	x5val      = 0x4444333322221111
	x6val      = 0xdead00000000beef
	cvalVal    = 0x7fff << 48
	mmioReport = 0x0900_0000
	testSPI    = 40
)

var tpidrEL0 = snapshot.SysReg(3, 3, 13, 0, 2)

// newStateVM creates a 1-vCPU VM whose RAM holds contents (the program when
// nil) and its vCPU, and makes it Ready.
func newStateVM(t *testing.T, contents []byte) (*VM, *VCPU) {
	t.Helper()
	h, err := Open()
	if err != nil {
		t.Skip(err)
	}
	ram, err := memory.New(ramBase, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ram.Close() })
	if contents == nil {
		contents = make([]byte, 4*len(stateProgram))
		for i, insn := range stateProgram {
			binary.LittleEndian.PutUint32(contents[4*i:], insn)
		}
	}
	copy(ram.Bytes(), contents)
	layout, err := gic.NewLayout(1)
	if err != nil {
		t.Fatal(err)
	}
	hvm, err := h.NewVM(hv.Config{VCPUs: 1, RAMBase: ramBase, RAM: ram.Bytes(), GIC: layout})
	if err != nil {
		t.Fatal(err)
	}
	vm := hvm.(*VM)
	t.Cleanup(func() { vm.Close() })
	v, err := vm.NewVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	if err := vm.Ready(); err != nil {
		t.Fatal(err)
	}
	return vm, v.(*VCPU)
}

// runTo runs until the next exit, which must be an 8-byte MMIO write to
// mmioReport+off, and returns the value written.
// A guest that does not get there within 10 s (say it took an exception
// and loops through the vectors) fails the test instead of hanging it.
func runTo(t *testing.T, v hv.VCPU, off uint64) uint64 {
	t.Helper()
	var late atomic.Bool
	watchdog := time.AfterFunc(10*time.Second, func() { late.Store(true); v.Kick() })
	defer watchdog.Stop()
	for {
		e, err := v.Run()
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == hv.ExitKicked {
			if late.Load() {
				t.Fatalf("no MMIO write to %#x within 10 s", mmioReport+off)
			}
			continue
		}
		if e.Kind != hv.ExitMMIO || e.Addr != mmioReport+off || e.Size != 8 || !e.Write {
			t.Fatalf("exit %+v, want an 8-byte MMIO write to %#x", e, mmioReport+off)
		}
		return e.Data
	}
}

func findReg(t *testing.T, b *gicBlob, group uint32, attr uint64) uint64 {
	t.Helper()
	for _, r := range b.Regs {
		if r.Group == group && r.Attr == attr {
			return r.Val
		}
	}
	t.Fatalf("vGIC register %d/%#x not saved", group, attr)
	return 0
}

// TestStateSaveRestore stops a guest at an MMIO write, saves its vCPU and
// vGIC, restores both into a new VM with a copy of its RAM, and checks the
// guest continues exactly: registers, V registers, TPIDR_EL0, timer, PC
// and a counter that neither went back nor leapt by the downtime.
func TestStateSaveRestore(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm1, v1 := newStateVM(t, nil)
	if err := v1.PowerOn(ramBase, 0); err != nil {
		t.Fatal(err)
	}
	if err := vm1.SetSPI(testSPI, true); err != nil {
		t.Fatal(err)
	}
	before := runTo(t, v1, 0x10)
	saved, err := v1.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("saved: PC %#x PSTATE %#x timer %+v, %d system registers", saved.PC, saved.PSTATE, saved.Timer, len(saved.Sys))
	switch {
	case saved.PC != ramBase+0x80:
		t.Errorf("PC %#x, want %#x: the MMIO store was not completed", saved.PC, ramBase+0x80)
	case saved.X[5] != x5val || saved.X[6] != x6val || saved.X[8] != before || saved.X[1] != mmioReport:
		t.Errorf("x1 %#x x5 %#x x6 %#x x8 %#x", saved.X[1], saved.X[5], saved.X[6], saved.X[8])
	case saved.V[0] != [2]uint64{x5val, x6val} || saved.V[31] != [2]uint64{x6val, 0}:
		t.Errorf("V0 %#x V31 %#x", saved.V[0], saved.V[31])
	case saved.Sys[tpidrEL0] != x5val:
		t.Errorf("TPIDR_EL0 %#x (present %v)", saved.Sys[tpidrEL0], len(saved.Sys))
	case saved.Timer.CTL&1 != 1 || saved.Timer.CVAL != cvalVal:
		t.Errorf("timer %+v", saved.Timer)
	case saved.Timer.Counter < before:
		t.Errorf("saved counter %#x before the guest's read %#x", saved.Timer.Counter, before)
	case saved.MPIDR != hv.MPIDR(0):
		t.Errorf("MPIDR %#x", saved.MPIDR)
	case saved.PSTATE != pstateEL1hMasked:
		t.Errorf("PSTATE %#x", saved.PSTATE)
	}
	if x := saved.Sys[snapshot.SysReg(3, 0, 1, 0, 2)]; x>>20&3 != 3 {
		t.Errorf("CPACR_EL1 %#x: the guest's FPEN is missing", x)
	}
	// The EL1 state a Linux guest needs, the CPU's identity and, where
	// the host has them, the pointer-authentication keys: all in KVM's list.
	want := []uint16{0xc080, 0xc082, 0xc100, 0xc101, 0xc102, 0xc288, 0xc289, 0xc290, 0xc300, 0xc3a0,
		0xc510, 0xc518, 0xc600, 0xc681, 0xc684, 0xc708, 0xd000, 0xde82, 0xde83, 0x8012, // SCTLR_EL1 .. MDSCR_EL1
		snapshot.SysReg(3, 0, 0, 0, 0), snapshot.SysReg(3, 0, 0, 4, 0), snapshot.SysReg(3, 0, 0, 6, 1)} // MIDR, ID_AA64PFR0, ID_AA64ISAR1
	if vm1.h.ptrAuth {
		for crm := uint8(1); crm <= 3; crm++ {
			for op2 := uint8(0); op2 < 4 && (crm < 3 || op2 < 2); op2++ {
				want = append(want, snapshot.SysReg(3, 0, 2, crm, op2)) // APIAKEYLO_EL1 .. APGAKEYHI_EL1
			}
		}
	}
	for _, enc := range want {
		if _, ok := saved.Sys[enc]; !ok {
			t.Errorf("%s was not saved", snapshot.SysRegLabel(enc))
		}
	}
	t.Logf("pointer authentication: %v; %d system registers, %d more in the blob", vm1.h.ptrAuth, len(saved.Sys), len(saved.Backend))
	gs1, err := vm1.SaveGIC()
	if err != nil {
		t.Fatal(err)
	}
	b1, err := parseGICBlob(gs1.Blob, gic.DefaultNumIRQs, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vGIC: %d registers, %d-byte blob, kernel %s, ICC %#x", len(b1.Regs), len(gs1.Blob), gs1.BackendVersion, gs1.ICC[0])
	if gs1.Backend != gic.BackendKVM || len(gs1.ICC) != 1 {
		t.Fatalf("GIC state %q with %d ICC sets", gs1.Backend, len(gs1.ICC))
	}
	if x := findReg(t, b1, vgicGrpDistRegs, gicdISENABLER+4); x&(1<<8) == 0 {
		t.Errorf("GICD_ISENABLER1 %#x: the guest's enable of INTID 40 is missing", x)
	}
	if x := findReg(t, b1, vgicGrpDistRegs, gicdIPRIORITYR+testSPI); x&0xff != 0xa0 {
		t.Errorf("GICD_IPRIORITYR10 %#x: the guest's priority 0xa0 for INTID 40 is missing", x)
	}
	if x := findReg(t, b1, vgicGrpDistRegs, gicdISPENDR+4); x&(1<<8) == 0 {
		t.Errorf("GICD_ISPENDR1 %#x: INTID 40 is not pending", x)
	}

	// A new VM with a copy of the RAM, after a downtime the counter must not show.
	const downtime = 500 * time.Millisecond
	time.Sleep(downtime)
	vm2, v2 := newStateVM(t, vm1.cfg.RAM)
	restored := time.Now()
	if err := v2.RestoreState(saved); err != nil {
		t.Fatal(err)
	}
	if err := vm2.RestoreGIC(gs1); err != nil {
		t.Fatal(err)
	}
	again, err := v2.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if again.Timer.Counter < saved.Timer.Counter {
		t.Errorf("restored counter %#x < saved %#x", again.Timer.Counter, saved.Timer.Counter)
	}
	again.Timer.Counter = saved.Timer.Counter
	if cnt := uint16(regPTimerCNT & 0xffff); saved.Sys[cnt] != 0 { // Linux 6.4+: the physical counter too
		if again.Sys[cnt] < saved.Sys[cnt] {
			t.Errorf("restored physical counter %#x < saved %#x", again.Sys[cnt], saved.Sys[cnt])
		}
		again.Sys[cnt] = saved.Sys[cnt]
	}
	if !reflect.DeepEqual(again, saved) {
		t.Errorf("state read back after RestoreState differs:\n got %+v\nwant %+v", again, saved)
	}
	gs2, err := vm2.SaveGIC()
	if err != nil {
		t.Fatal(err)
	}
	b2, err := parseGICBlob(gs2.Blob, gic.DefaultNumIRQs, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b1.Regs {
		if b1.Regs[i] != b2.Regs[i] {
			t.Errorf("vGIC register %d/%#x: saved %#x, after restore %#x", b1.Regs[i].Group, b1.Regs[i].Attr, b1.Regs[i].Val, b2.Regs[i].Val)
		}
	}
	if !reflect.DeepEqual(gs1.ICC, gs2.ICC) {
		t.Errorf("ICC registers: saved %#x, after restore %#x", gs1.ICC, gs2.ICC)
	}
	if _, err := v2.SaveState(); err != nil { // harmless before running
		t.Fatal(err)
	}

	after := runTo(t, v2, 0x18)
	elapsed := time.Since(restored)
	tpidr := runTo(t, v2, 0x20)
	v0hi := runTo(t, v2, 0x28)
	v31 := runTo(t, v2, 0x30)
	freq := runTo(t, v2, 0x38)
	v0lo := runTo(t, v2, 0x40)
	if tpidr != x5val || v0hi != x6val || v31 != x6val || v0lo != x5val {
		t.Errorf("restored guest read TPIDR_EL0 %#x V0 %#x:%#x V31 %#x", tpidr, v0hi, v0lo, v31)
	}
	t.Logf("counter: guest read %d before, saved %d, %d after restore (CNTFRQ %d Hz; %v from restore to the read)",
		before, saved.Timer.Counter, after, freq, elapsed)
	if after < saved.Timer.Counter {
		t.Errorf("counter went backwards: %d after restore, %d saved", after, saved.Timer.Counter)
	}
	if freq == 0 {
		t.Fatal("CNTFRQ_EL0 is 0")
	}
	gap := time.Duration(float64(after-saved.Timer.Counter) / float64(freq) * float64(time.Second))
	if gap > elapsed+50*time.Millisecond {
		t.Errorf("counter leapt by %v across the restore, more than the %v since it", gap, elapsed)
	}
}

// TestRestoreGICRefuses checks that a state from another backend, another
// vCPU count or with a damaged blob is refused.
func TestRestoreGICRefuses(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm, _ := newStateVM(t, nil)
	good, err := vm.SaveGIC()
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]gic.State{
		"hvf":   {Backend: gic.BackendHVF, Blob: good.Blob, ICC: good.ICC},
		"vcpus": {Backend: gic.BackendKVM, Blob: good.Blob, ICC: append(good.ICC, good.ICC[0])},
		"blob":  {Backend: gic.BackendKVM, Blob: good.Blob[:len(good.Blob)/2], ICC: good.ICC},
		"icc":   {Backend: gic.BackendKVM, Blob: good.Blob, ICC: []gic.ICCRegs{{}}},
	} {
		if err := vm.RestoreGIC(s); err == nil {
			t.Errorf("%s: RestoreGIC accepted a bad state", name)
		}
	}
	if err := vm.RestoreGIC(good); err != nil {
		t.Errorf("restoring the VM's own state: %v", err)
	}
}

// TestDirtyTracking checks that CollectDirty reports exactly the 64 KiB
// blocks the guest wrote, and nothing once it has been collected.
func TestDirtyTracking(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm, v := newStateVM(t, nil)
	if _, err := vm.CollectDirty(); err == nil {
		t.Error("CollectDirty succeeded with tracking off")
	}
	if err := vm.TrackDirty(1000); err == nil {
		t.Error("TrackDirty accepted a 1000-byte block")
	}
	const block = 64 << 10
	if err := vm.TrackDirty(block); err != nil {
		t.Fatal(err)
	}
	if err := v.PowerOn(ramBase, 0); err != nil {
		t.Fatal(err)
	}
	runTo(t, v, 0x10)
	want := []uint64{1<<16 | 1<<19}
	for i, w := range [][]uint64{want, {0}} {
		got, err := vm.CollectDirty()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("collect %d: dirty blocks %#x, want %#x", i+1, got, w)
		}
	}
	runTo(t, v, 0x18)
	got, err := vm.CollectDirty()
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1 << 31}; !reflect.DeepEqual(got, want) {
		t.Errorf("after the guest's third write: dirty blocks %#x, want %#x", got, want)
	}
	if err := vm.StopDirtyTracking(); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.CollectDirty(); err == nil {
		t.Error("CollectDirty succeeded after StopDirtyTracking")
	}
	if err := vm.TrackDirty(block); err != nil {
		t.Errorf("tracking again: %v", err)
	}
}

// TestGICTwoVCPUs round-trips the vGIC of a 2-vCPU VM that has not run:
// the second redistributor and CPU interface are addressed by vCPU 1's
// affinity, and a restored state reads back unchanged.
func TestGICTwoVCPUs(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := Open()
	if err != nil {
		t.Skip(err)
	}
	newVM := func() *VM {
		ram, err := memory.New(ramBase, 2<<20)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ram.Close() })
		layout, err := gic.NewLayout(2)
		if err != nil {
			t.Fatal(err)
		}
		hvm, err := h.NewVM(hv.Config{VCPUs: 2, RAMBase: ramBase, RAM: ram.Bytes(), GIC: layout})
		if err != nil {
			t.Fatal(err)
		}
		vm := hvm.(*VM)
		t.Cleanup(func() { vm.Close() })
		for id := range 2 { // KVM allows vCPU ioctls from any thread; neither runs
			v, err := vm.NewVCPU(id)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { v.Close() })
		}
		if err := vm.Ready(); err != nil {
			t.Fatal(err)
		}
		return vm
	}
	vm1 := newVM()
	if err := vm1.SetSPI(33, true); err != nil {
		t.Fatal(err)
	}
	s1, err := vm1.SaveGIC()
	if err != nil {
		t.Fatal(err)
	}
	if len(s1.ICC) != 2 {
		t.Fatalf("%d ICC sets", len(s1.ICC))
	}
	b1, err := parseGICBlob(s1.Blob, gic.DefaultNumIRQs, 2)
	if err != nil {
		t.Fatal(err)
	}
	if x := findReg(t, b1, vgicGrpDistRegs, gicdISPENDR+4); x&(1<<1) == 0 {
		t.Errorf("GICD_ISPENDR1 %#x: INTID 33 is not pending", x)
	}
	// vCPU 1's redistributor registers are saved under its affinity.
	findReg(t, b1, vgicGrpRedistRegs, mpidrAttr(hv.MPIDR(1))|gicrSGIBase+gicdISENABLER)
	vm2 := newVM()
	if err := vm2.RestoreGIC(s1); err != nil {
		t.Fatal(err)
	}
	s2, err := vm2.SaveGIC()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s1, s2) {
		t.Errorf("vGIC state after restore differs")
	}
	one := s1
	one.ICC = s1.ICC[:1]
	if err := vm2.RestoreGIC(one); err == nil {
		t.Error("a 1-vCPU GIC state was restored into a 2-vCPU VM")
	}
}
