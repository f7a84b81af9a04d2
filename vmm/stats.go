package vmm

import (
	"sync/atomic"

	"github.com/squibvm/squib/hv"
)

// ExitCounts counts vCPU exits by kind, summed over all vCPUs since the
// machine was built.
type ExitCounts struct {
	MMIORead, MMIOWrite, Hypercall, WFI, Kicked, Other uint64
}

// exitCounters is the live form of ExitCounts, bumped by the vCPU loops.
type exitCounters struct {
	mmioRead, mmioWrite, hypercall, wfi, kicked, other atomic.Uint64
}

func (c *exitCounters) count(e hv.Exit) {
	switch {
	case e.Kind == hv.ExitMMIO && e.Write:
		c.mmioWrite.Add(1)
	case e.Kind == hv.ExitMMIO:
		c.mmioRead.Add(1)
	case e.Kind == hv.ExitHypercall:
		c.hypercall.Add(1)
	case e.Kind == hv.ExitWFI:
		c.wfi.Add(1)
	case e.Kind == hv.ExitKicked:
		c.kicked.Add(1)
	default:
		c.other.Add(1)
	}
}

// Exits reports how many exits of each kind the vCPUs have taken so far.
func (m *Machine) Exits() ExitCounts {
	c := &m.exits
	return ExitCounts{
		MMIORead: c.mmioRead.Load(), MMIOWrite: c.mmioWrite.Load(), Hypercall: c.hypercall.Load(),
		WFI: c.wfi.Load(), Kicked: c.kicked.Load(), Other: c.other.Load(),
	}
}
