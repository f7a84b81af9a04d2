package snapshot_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/snapshot"
)

// A VMM saves a paused 1-vCPU VM, then restores it: the state from Load, the
// RAM mapped copy-on-write.
func Example() {
	dir, err := os.MkdirTemp("", "snapshot-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	files := snapshot.Files{State: filepath.Join(dir, "vm.state"), Memory: filepath.Join(dir, "vm.mem")}

	// Save: the VMM fills the state from its vCPUs, GIC and devices.
	ram := make([]byte, 1<<20)
	copy(ram[0x1000:], "guest data")
	st := &snapshot.State{
		Header: snapshot.Header{Backend: gic.BackendKVM, BackendVersion: "6.8.0", RAMBase: 0x4000_0000, RAMSize: 1 << 20},
		Machine: snapshot.Machine{
			Config: snapshot.Config{VCPUs: 1, MemoryMiB: 1, Cmdline: "console=ttyAMA0"},
			VCPUs:  []snapshot.VCPU{{PC: 0x4008_0000, MPIDR: hv.MPIDR(0)}},
			GIC:    gic.State{Backend: gic.BackendKVM, ICC: make([]gic.ICCRegs, 1)},
		},
	}
	if err := snapshot.Create(files, st, ram, snapshot.CreateOptions{}); err != nil {
		log.Fatal(err)
	}

	// Restore, in a fresh process: check everything but the RAM contents,
	// then map the RAM lazily.
	restored, err := snapshot.Load(snapshot.Expect{Backend: gic.BackendKVM}, files)
	if err != nil {
		log.Fatal(err)
	}
	mem, err := snapshot.MapMemory(files.Memory)
	if err != nil {
		log.Fatal(err)
	}
	defer snapshot.Unmap(mem)
	fmt.Printf("%v snapshot, vCPU 0 at %#x, RAM says %q\n",
		restored.Header.Type, restored.Machine.VCPUs[0].PC, mem[0x1000:0x100a])
	// Output: Full snapshot, vCPU 0 at 0x40080000, RAM says "guest data"
}
