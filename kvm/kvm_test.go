//go:build linux && arm64

package kvm

import (
	"encoding/binary"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/memory"
)

const ramBase = 0x4000_0000

// program is a tiny guest, hand-encoded arm64 (ARM DDI 0487, A64 encodings):
//
//	movz x1, #0x0900, lsl #16   // x1 = 0x0900_0000, an address outside RAM
//	movz w2, #0x41
//	str  w2, [x1]               // MMIO write of 0x41
//	ldr  w3, [x1, #0x18]        // MMIO read into w3
//	str  w3, [x1, #8]           // MMIO write of what was read
//	movz x0, #0x8400, lsl #16   // x0 = PSCI_VERSION
//	hvc  #0                     // x0..x3 are SMCCC results: x1 is clobbered
//	movz x1, #0x0900, lsl #16
//	str  w0, [x1, #4]           // MMIO write of the call's result
//	b    .                      // spin
var program = []uint32{
	0xD2A12001, 0x52800822, 0xB9000022, 0xB9401823, 0xB9000823,
	0xD2B08000, 0xD4000002, 0xD2A12001, 0xB9000420, 0x14000000,
}

func newTestVM(t *testing.T) (*VM, *memory.RAM) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm: run this test on an arm64 KVM host (the lab does: e2e.TestKVMBackend)")
	}
	h, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	ram, err := memory.New(ramBase, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	code := make([]byte, 4*len(program))
	for i, insn := range program {
		binary.LittleEndian.PutUint32(code[4*i:], insn)
	}
	if err := ram.Write(ramBase, code); err != nil {
		t.Fatal(err)
	}
	layout, err := gic.NewLayout(1)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := h.NewVM(hv.Config{VCPUs: 1, RAMBase: ramBase, RAM: ram.Bytes(), GIC: layout})
	if err != nil {
		t.Fatal(err)
	}
	return vm.(*VM), ram
}

func run(t *testing.T, v hv.VCPU, want hv.Exit) hv.Exit {
	t.Helper()
	for {
		e, err := v.Run()
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == hv.ExitKicked { // Go's own preemption signals
			continue
		}
		if e.Kind != want.Kind || e.Addr != want.Addr || e.Size != want.Size || e.Write != want.Write ||
			(e.Write && e.Data != want.Data) || e.FID != want.FID {
			t.Fatalf("exit %+v, want %+v", e, want)
		}
		return e
	}
}

// TestExits runs the program and checks every exit and that the values the
// VMM supplies (an MMIO read, a hypercall result) reach guest registers.
func TestExits(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm, ram := newTestVM(t)
	defer ram.Close()
	defer vm.Close()
	if vm.InKernelPSCI() {
		t.Fatal("this kernel has no SMCCC filter; the lab's 6.12 must have it")
	}
	v, err := vm.NewVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := vm.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := v.PowerOn(ramBase, 0); err != nil {
		t.Fatal(err)
	}
	run(t, v, hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0000, Size: 4, Write: true, Data: 0x41})
	run(t, v, hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0018, Size: 4})
	if err := v.CompleteMMIORead(0xdead_beef_1234_5678); err != nil {
		t.Fatal(err)
	}
	// Only the access's 4 bytes reach w3.
	run(t, v, hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0008, Size: 4, Write: true, Data: 0x1234_5678})
	e := run(t, v, hv.Exit{Kind: hv.ExitHypercall, FID: 0x8400_0000})
	// x3 holds the MMIO read's value, truncated to the access's 4 bytes.
	if e.Args != [3]uint64{0x0900_0000, 0x41, 0x1234_5678} {
		t.Errorf("hypercall args x1..x3 = %#x, want 0x9000000, 0x41, 0x12345678", e.Args)
	}
	if err := v.CompleteHypercall([4]uint64{0x10000}); err != nil {
		t.Fatal(err)
	}
	run(t, v, hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0004, Size: 4, Write: true, Data: 0x10000})
	if err := v.CompleteMMIORead(1); err == nil {
		t.Error("CompleteMMIORead after a write exit succeeded")
	}

	// The guest now spins; a kick from another thread must end Run.
	kicked := make(chan struct{})
	go func() {
		time.Sleep(200 * time.Millisecond)
		close(kicked)
		v.Kick()
	}()
	for {
		e, err := v.Run()
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != hv.ExitKicked {
			t.Fatalf("spinning guest exited with %+v", e)
		}
		select {
		case <-kicked:
			return // the kick, not an earlier preemption signal
		default:
		}
	}
}

// TestPowerOnResets shows PowerOn is a full reset: the program runs from
// its first instruction again, even when the vCPU last stopped at an MMIO
// exit whose completion KVM still holds (it would otherwise skip one).
func TestPowerOnResets(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	vm, ram := newTestVM(t)
	defer ram.Close()
	defer vm.Close()
	v, err := vm.NewVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := vm.Ready(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := v.PowerOn(ramBase, 0); err != nil {
			t.Fatal(err)
		}
		run(t, v, hv.Exit{Kind: hv.ExitMMIO, Addr: 0x0900_0000, Size: 4, Write: true, Data: 0x41})
	}
}

func TestReadyNeedsEveryVCPU(t *testing.T) {
	vm, ram := newTestVM(t)
	defer ram.Close()
	defer vm.Close()
	if err := vm.Ready(); err == nil {
		t.Fatal("Ready succeeded before the vCPU existed")
	}
}

func TestOpenErrors(t *testing.T) {
	h, err := Open()
	if err != nil {
		t.Skip(err)
	}
	if _, err := h.NewVM(hv.Config{VCPUs: h.MaxVCPUs() + 1}); err == nil {
		t.Error("NewVM accepted more vCPUs than the limit")
	}
}

// TestVCPUsInOrder: vCPUs are created in index order, because KVM gives
// out redistributor frames in creation order; any other order is refused.
func TestVCPUsInOrder(t *testing.T) {
	vm, ram := newTestVM(t)
	defer ram.Close()
	defer vm.Close()
	if v, err := vm.NewVCPU(1); err == nil || !strings.Contains(err.Error(), "out of order") {
		if v != nil {
			v.Close()
		}
		t.Fatalf("NewVCPU(1) before vCPU 0: %v, want an out-of-order error", err)
	}
	v, err := vm.NewVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
}
