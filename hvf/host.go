package hvf

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
)

// Checks of the host and of the VM configuration against what
// Hypervisor.framework offers, kept free of framework calls so tests run
// anywhere.

// symbol is a C function squib binds and the macOS version that first
// exports it (API_AVAILABLE in the SDK headers; hvf.md §2).
type symbol struct {
	name  string
	since string // "11.0", "13.0", "15.0"; empty for libSystem
}

// versionLess compares dotted macOS versions numerically ("9.1" < "15.0").
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// checkSymbols turns the symbols missing from this host into the error Open
// returns: which macOS squib needs, which one runs, and what is missing.
func checkSymbols(macOS string, missing []symbol) error {
	if len(missing) == 0 {
		return nil
	}
	need := ""
	var names []string
	for _, s := range missing {
		if s.since == "" {
			return fmt.Errorf("%w: the system library lacks %s", hv.ErrNoHypervisor, s.name)
		}
		if need == "" || versionLess(need, s.since) {
			need = s.since
		}
		names = append(names, s.name)
	}
	list := strings.Join(names, ", ")
	if len(names) > 3 {
		list = fmt.Sprintf("%s and %d more", strings.Join(names[:3], ", "), len(names)-3)
	}
	return fmt.Errorf("%w: %w: squib needs macOS %s or later (for Hypervisor.framework's %s), and this Mac runs macOS %s",
		hv.ErrNoHypervisor, ErrMacOSTooOld, need, list, macOS)
}

// checkRAM checks that guest RAM can be given to hv_vm_map: host address,
// guest address and size all multiples of the 16 KiB host page.
func checkRAM(addr uintptr, base, size uint64) error {
	if addr%pageSize != 0 || base%pageSize != 0 || size%pageSize != 0 || size == 0 {
		return fmt.Errorf("guest RAM (host address %#x, IPA %#x, %#x bytes) is not in whole 16 KiB pages, as hv_vm_map needs", addr, base, size)
	}
	return nil
}

// ipaBits returns the IPA width to configure for a VM whose guest physical
// addresses end below top, or 0 when the framework's default width defBits
// suffices. maxBits is the widest the host supports.
func ipaBits(top uint64, defBits, maxBits uint32) (uint32, error) {
	need := uint32(bits.Len64(top - 1))
	switch {
	case need <= defBits:
		return 0, nil
	case need > maxBits:
		return 0, fmt.Errorf("guest memory ends at %#x, beyond this Mac's %d-bit guest physical address space", top, maxBits)
	}
	return need, nil
}

// gicGeometry is what hv_gic_get_* report about the framework's GIC.
type gicGeometry struct {
	distSize, distAlign                       uint64
	redistRegionSize, redistSize, redistAlign uint64
	spiBase, spiCount                         uint32
	vtimerINTID, ptimerINTID                  uint32 // hv_gic_get_intid
}

// check compares the framework's GIC with squib's layout (package gic) and
// device tree: regions that fit where the device tree says, SPIs squib may
// allocate, and timer interrupts where the device tree puts them.
func (g gicGeometry) check(l *gic.Layout) error {
	switch {
	case g.distSize > gic.DistSize:
		return fmt.Errorf("the framework's GIC distributor is %#x bytes, more than the %#x squib reserves", g.distSize, gic.DistSize)
	case g.distAlign == 0 || gic.DistBase%g.distAlign != 0:
		return fmt.Errorf("the GIC distributor base %#x is not aligned to the framework's %#x", gic.DistBase, g.distAlign)
	case g.redistSize != gic.RedistSizePerCPU:
		return fmt.Errorf("the framework's GIC redistributors are %#x bytes each, squib's layout assumes %#x", g.redistSize, gic.RedistSizePerCPU)
	case g.redistAlign == 0 || gic.RedistBase%g.redistAlign != 0:
		return fmt.Errorf("the GIC redistributor base %#x is not aligned to the framework's %#x", gic.RedistBase, g.redistAlign)
	case gic.RedistBase+g.redistRegionSize > gic.RedistLimit:
		return fmt.Errorf("the framework's GIC redistributor region (%#x bytes at %#x) would overlap the devices at %#x", g.redistRegionSize, gic.RedistBase, gic.RedistLimit)
	case g.spiBase > 32 || uint64(g.spiBase)+uint64(g.spiCount) < uint64(l.NumIRQs):
		return fmt.Errorf("the framework's GIC offers SPI INTIDs %d-%d, squib needs 32-%d", g.spiBase, g.spiBase+g.spiCount-1, l.NumIRQs-1)
	case g.vtimerINTID != gic.PPIVirtTimer.INTID() || g.ptimerINTID != gic.PPIPhysTimer.INTID():
		return fmt.Errorf("the framework's timer interrupts are INTIDs %d (virtual) and %d (physical), the device tree says %d and %d",
			g.vtimerINTID, g.ptimerINTID, gic.PPIVirtTimer.INTID(), gic.PPIPhysTimer.INTID())
	}
	return nil
}

// checkRedists checks the redistributor the framework gave each vCPU
// (hv_gic_get_redistributor_base, by vCPU index) against the region the
// device tree describes: distinct frames, each inside it and on a
// RedistSizePerCPU boundary. Linux finds a CPU's frame by its affinity, so
// the order does not matter.
func checkRedists(bases []uint64, l *gic.Layout) error {
	end := gic.RedistBase + l.RedistSize()
	seen := make(map[uint64]bool)
	for id, b := range bases {
		if b < gic.RedistBase || b >= end || (b-gic.RedistBase)%gic.RedistSizePerCPU != 0 || seen[b] {
			return fmt.Errorf("vCPU %d: the framework put its GIC redistributor at %#x, outside the device tree's region [%#x, %#x) or shared", id, b, uint64(gic.RedistBase), end)
		}
		seen[b] = true
	}
	return nil
}

// iccRegs are the GIC CPU-interface registers saved and restored per vCPU,
// in restore order: SRE first, as it selects the system-register interface
// the others belong to, the enables last. hv_gic_icc_reg_t uses the
// encodings of package gic (hvf.md §3.8); the framework has no AP0R1-3 or
// AP1R1-3, and ICC_RPR_EL1 is read-only.
var iccRegs = []uint16{
	gic.ICC_SRE_EL1, gic.ICC_CTLR_EL1, gic.ICC_PMR_EL1, gic.ICC_BPR0_EL1, gic.ICC_BPR1_EL1,
	gic.ICC_AP0R0_EL1, gic.ICC_AP1R0_EL1, gic.ICC_IGRPEN0_EL1, gic.ICC_IGRPEN1_EL1,
}

// checkICC checks that a snapshot's CPU-interface registers are exactly
// iccRegs.
func checkICC(r gic.ICCRegs) error {
	if len(r) != len(iccRegs) {
		return fmt.Errorf("%w: %d GIC CPU-interface registers, want %d", gic.ErrIncompatibleState, len(r), len(iccRegs))
	}
	for _, reg := range iccRegs {
		if _, ok := r[reg]; !ok {
			return fmt.Errorf("%w: GIC CPU-interface register %#x missing", gic.ErrIncompatibleState, reg)
		}
	}
	return nil
}

// gicRefused explains err, hv_gic_set_state's refusal of a GIC state blob
// that macOS version saved wrote and macOS version running rejects: the
// blob's format is the framework's and may change with a macOS update
// (hv_gic_state.h).
func gicRefused(saved, running string, err error) error {
	if saved == running {
		return fmt.Errorf("%w: macOS %s refused the GIC state saved by the same macOS version: %w", gic.ErrIncompatibleState, running, err)
	}
	return fmt.Errorf("%w: the GIC state was saved on macOS %s and this Mac runs macOS %s, whose Hypervisor.framework refused it: %w",
		gic.ErrIncompatibleState, saved, running, err)
}
