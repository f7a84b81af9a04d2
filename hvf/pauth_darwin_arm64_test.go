//go:build darwin && arm64

package hvf_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/hvf"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/vmm"
)

// pauthProgram runs at vmm.RAMBase; assembled with GNU as
// (aarch64-linux-gnu-as -march=armv8.3-a). It reports the ID registers it
// sees, sets the APIA key and enables it (SCTLR_EL1.EnIA), signs a pointer
// with PACIA and reports it; the VMM saves the vCPU there and restores it
// in a fresh process, where the program authenticates the pointer with
// AUTIA and reports whether it came back intact. TCR_EL1.T0SZ = 16 puts the
// PAC in bits 54:48 and 63:56 of the 48-bit address space. Hypercalls:
// x0 = 0x86000000 + n, results in x1..x3.
var pauthProgram = []uint32{
	0xd5380401, // mrs   x1, id_aa64pfr0_el1
	0xd5380422, // mrs   x2, id_aa64pfr1_el1
	0xd5380623, // mrs   x3, id_aa64isar1_el1
	0xd2b0c000, // mov   x0, #0x86000000
	0xd4000002, // hvc   #0                          0: the ID registers the guest sees
	0xd299bde1, // mov   x1, #0xcdef
	0xf2b13561, // movk  x1, #0x89ab, lsl #16
	0xf2c8ace1, // movk  x1, #0x4567, lsl #32
	0xf2e02461, // movk  x1, #0x123, lsl #48
	0xd2864202, // mov   x2, #0x3210
	0xf2aeca82, // movk  x2, #0x7654, lsl #16
	0xf2d75302, // movk  x2, #0xba98, lsl #32
	0xf2ffdb82, // movk  x2, #0xfedc, lsl #48
	0xd5182101, // msr   apiakeylo_el1, x1
	0xd5182122, // msr   apiakeyhi_el1, x2
	0xd2800203, // mov   x3, #0x10
	0xd5182043, // msr   tcr_el1, x3             T0SZ = 16
	0xd2a80003, // mov   x3, #0x40000000
	0xf2810003, // movk  x3, #0x800
	0xd518c003, // msr   vbar_el1, x3            exceptions: pauthVector
	0xd5381003, // mrs   x3, sctlr_el1
	0xb2610063, // orr   x3, x3, #0x80000000     EnIA
	0xd5181003, // msr   sctlr_el1, x3
	0xd5033fdf, // isb
	0xd2a80004, // mov   x4, #0x40000000
	0xf2820004, // movk  x4, #0x1000
	0xaa0403e5, // mov   x5, x4
	0xd2824686, // mov   x6, #0x1234             the modifier
	0xdac100c4, // pacia x4, x6
	0xaa0403e1, // mov   x1, x4
	0xaa0503e2, // mov   x2, x5
	0xd2b0c000, // mov   x0, #0x86000000
	0xf2800020, // movk  x0, #0x1
	0xd4000002, // hvc   #0                          1: signed and plain pointer; saved here
	0xdac110c4, // autia x4, x6
	0xeb05009f, // cmp   x4, x5
	0x9a9f17e1, // cset  x1, eq
	0xaa0403e2, // mov   x2, x4
	0xd2b0c000, // mov   x0, #0x86000000
	0xf2800040, // movk  x0, #0x2
	0xd4000002, // hvc   #0                          2: x1 = 1 if AUTIA gave the pointer back
	0x14000000, // b     .
}

// pauthVector is the synchronous-exception entry for the current EL with
// SP_ELx, at VBAR_EL1 + 0x200 = vmm.RAMBase + 0xa00: an AUTIA that fails
// with FEAT_FPAC, or an instruction the vCPU does not implement, lands
// here.
var pauthVector = []uint32{
	0xd5385201, // mrs   x1, esr_el1
	0xd5384022, // mrs   x2, elr_el1
	0xd2b0c000, // mov   x0, #0x86000000
	0xf2800060, // movk  x0, #0x3
	0xd4000002, // hvc   #0                          3: an exception, x1 = ESR, x2 = ELR
	0x14000000, // b     .
}

const (
	pauthKeyLo = 0x0123456789abcdef
	pauthKeyHi = 0xfedcba9876543210
	pauthPtr   = 0x40001000
	pauthState = "SQUIB_PAUTH_STATE" // the saved vCPU, for TestPointerAuthRestored
	pauthOK    = "SQUIB-PAUTH-OK"
)

// loadPauthProgram writes pauthProgram and pauthVector into guest RAM.
func loadPauthProgram(t *testing.T, write func(addr uint64, b []byte) error) {
	t.Helper()
	for _, p := range []struct {
		at    uint64
		words []uint32
	}{{vmm.RAMBase, pauthProgram}, {vmm.RAMBase + 0xa00, pauthVector}} {
		code := make([]byte, 4*len(p.words))
		for i, w := range p.words {
			binary.LittleEndian.PutUint32(code[4*i:], w)
		}
		if err := write(p.at, code); err != nil {
			t.Fatal(err)
		}
	}
}

// runToHypercall runs c until it makes a hypercall and returns its FID and
// x1..x3; an exception the guest took is an error naming its ESR.
func runToHypercall(c hv.VCPU) (uint32, [3]uint64, error) {
	for {
		e, err := c.Run()
		switch {
		case err != nil:
			return 0, e.Args, err
		case e.Kind == hv.ExitKicked:
			continue
		case e.Kind != hv.ExitHypercall:
			return 0, e.Args, fmt.Errorf("exit %+v, want a hypercall", e)
		case e.FID == 0x86000003:
			return e.FID, e.Args, fmt.Errorf("the guest took an exception: ESR_EL1 %#x at %#x", e.Args[0], e.Args[1])
		}
		return e.FID, e.Args, nil
	}
}

// TestPointerAuth checks that pointer authentication survives a snapshot:
// the guest signs a pointer with a key it set, squib saves the vCPU (the
// key among its registers) and a fresh process restores it into a new
// vCPU, where the guest authenticates the pointer. On the way it checks
// that the guest sees SVE, SME and MTE hidden, the ID registers SaveState
// recorded, and that a restore with another MIDR_EL1 is refused.
func TestPointerAuth(t *testing.T) {
	ram, vm := newVM(t, openHVF(t), 1)
	loadPauthProgram(t, ram.Write)
	var saved snapshot.VCPU
	var seen [3]uint64 // ID_AA64PFR0_EL1, ID_AA64PFR1_EL1, ID_AA64ISAR1_EL1 as the guest read them
	err := onVCPU0(vm, func(c *hvf.VCPU) error {
		if err := c.PowerOn(vmm.RAMBase, 0); err != nil {
			return err
		}
		fid, args, err := runToHypercall(c)
		if err != nil || fid != 0x86000000 {
			return fmt.Errorf("hypercall %#x %#x (%v), want 0x86000000 with the ID registers", fid, args, err)
		}
		seen = args
		const pac = 0xf<<8 | 0xf<<4 // ID_AA64ISAR1_EL1.API, APA
		if seen[2]&pac == 0 {
			return errNoPAuth
		}
		fid, args, err = runToHypercall(c)
		if err != nil || fid != 0x86000001 {
			return fmt.Errorf("hypercall %#x %#x (%v), want 0x86000001 with the signed pointer", fid, args, err)
		}
		if args[1] != pauthPtr || args[0] == pauthPtr || args[0]&0xffff_ffff_ffff != pauthPtr {
			return fmt.Errorf("PACIA made %#x of %#x: want the pointer with a PAC in its top bits", args[0], args[1])
		}
		saved, err = c.SaveState()
		return err
	})
	if errors.Is(err, errNoPAuth) {
		t.Skipf("the guest sees no address authentication (ID_AA64ISAR1_EL1 %#x)", seen[2])
	}
	if err != nil {
		t.Fatal(err)
	}
	if seen[0]>>32&0xf != 0 || seen[1]>>24&0xf != 0 || seen[1]>>8&0xf != 0 {
		t.Errorf("the guest sees SVE, SME or MTE: ID_AA64PFR0_EL1 %#x, ID_AA64PFR1_EL1 %#x", seen[0], seen[1])
	}
	for i, r := range []hvf.SysReg{hvf.ID_AA64PFR0_EL1, hvf.ID_AA64PFR1_EL1, hvf.ID_AA64ISAR1_EL1} {
		if got, ok := saved.Sys[uint16(r)]; !ok || got != seen[i] {
			t.Errorf("the snapshot has %s = %#x (%v), the guest read %#x", snapshot.SysRegLabel(uint16(r)), got, ok, seen[i])
		}
	}
	if _, ok := saved.Sys[uint16(hvf.MIDR_EL1)]; !ok {
		t.Error("the snapshot does not record MIDR_EL1")
	}
	if lo, hi := saved.Sys[uint16(hvf.APIAKEYLO_EL1)], saved.Sys[uint16(hvf.APIAKEYHI_EL1)]; lo != pauthKeyLo || hi != pauthKeyHi {
		t.Errorf("saved APIA key %#x:%#x, the guest set %#x:%#x", hi, lo, uint64(pauthKeyHi), uint64(pauthKeyLo))
	}
	data, err := snapshot.Marshal(saved)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "vcpu.cbor")
	if err := os.WriteFile(state, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// A process holds one VM: the restore runs in a fresh one.
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestPointerAuthRestored$", "-test.v")
	cmd.Env = append(os.Environ(), pauthState+"="+state)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), pauthOK) {
		t.Fatalf("restored process: %v\n%s", err, out.String())
	}
}

var errNoPAuth = errors.New("no pointer authentication")

// TestPointerAuthRestored is TestPointerAuth's fresh process: it restores
// the saved vCPU into a new one and lets the guest authenticate its
// pointer. Without the environment it skips.
func TestPointerAuthRestored(t *testing.T) {
	state := os.Getenv(pauthState)
	if state == "" {
		t.Skip("runs as the restoring process of TestPointerAuth")
	}
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var saved snapshot.VCPU
	if err := snapshot.Unmarshal(data, &saved); err != nil {
		t.Fatal(err)
	}
	ram, vm := newVM(t, openHVF(t), 1)
	loadPauthProgram(t, ram.Write)
	err = onVCPU0(vm, func(c *hvf.VCPU) error {
		other := saved
		other.Sys = map[uint16]uint64{}
		for k, x := range saved.Sys {
			other.Sys[k] = x
		}
		other.Sys[uint16(hvf.MIDR_EL1)] ^= 1 // another revision of the CPU
		if err := c.RestoreState(other); !errors.Is(err, snapshot.ErrHost) || !strings.Contains(err.Error(), "MIDR_EL1") {
			return fmt.Errorf("restoring with another MIDR_EL1: %v, want snapshot.ErrHost naming it", err)
		}
		if err := c.RestoreState(saved); err != nil {
			return err
		}
		fid, args, err := runToHypercall(c)
		if err != nil || fid != 0x86000002 {
			return fmt.Errorf("hypercall %#x %#x (%v), want 0x86000002 after AUTIA", fid, args, err)
		}
		if args[0] != 1 || args[1] != pauthPtr {
			return fmt.Errorf("AUTIA after the restore gave %#x, want %#x: the key did not survive", args[1], uint64(pauthPtr))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(pauthOK)
}
