package gic

import (
	"fmt"

	"github.com/squibvm/squib/fdt"
)

// WriteFDT writes the GIC's device-tree node, "intc@8000000", into the
// currently open node of b (normally the root, whose #address-cells and
// #size-cells must be 2). phandle is the value the rest of the tree uses in
// "interrupt-parent". Properties follow arm,gic-v3.yaml.
func (l *Layout) WriteFDT(b *fdt.Builder, phandle uint32) {
	b.Begin(fmt.Sprintf("intc@%x", DistBase))
	b.PropString("compatible", "arm,gic-v3")
	b.PropEmpty("interrupt-controller")
	b.PropU32("#interrupt-cells", 3) // type, number, flags
	// Cell sizes and an empty "ranges" for ITS children, as QEMU writes
	// them even without an ITS; dtc also wants #address-cells in every
	// interrupt provider, for interrupt-map parsing.
	b.PropU32("#address-cells", 2)
	b.PropU32("#size-cells", 2)
	b.PropEmpty("ranges")
	b.PropU64("reg", DistBase, DistSize, RedistBase, l.RedistSize())
	b.PropU32("#redistributor-regions", 1)
	cells := PPIMaintenance.FDTCells(IRQLevelHigh)
	b.PropU32("interrupts", cells[:]...)
	b.PropU32("phandle", phandle)
	b.End()
}
