package fdt

import (
	"maps"
	"slices"
	"testing"
)

// virtBoard writes a tree shaped like the one a QEMU virt board or squib
// hands to Linux: CPUs, memory, a GICv3, timer, PSCI, a PL011 with its
// clock, a virtio-mmio device and /chosen.
func virtBoard(b *Builder) {
	gic, clk := b.Phandle(), b.Phandle()
	b.Reserve(0x48000000, 0x200000)
	b.Begin("")
	b.PropStrings("compatible", "linux,dummy-virt")
	b.PropString("model", "squib")
	b.PropU32("#address-cells", 2)
	b.PropU32("#size-cells", 2)
	b.PropU32("interrupt-parent", gic)

	b.Begin("psci")
	b.PropStrings("compatible", "arm,psci-1.0", "arm,psci-0.2", "arm,psci")
	b.PropString("method", "hvc")
	b.End()

	b.Begin("cpus")
	b.PropU32("#address-cells", 1)
	b.PropU32("#size-cells", 0)
	for i, name := range []string{"cpu@0", "cpu@1"} {
		b.Begin(name)
		b.PropString("device_type", "cpu")
		b.PropString("compatible", "arm,arm-v8")
		b.PropString("enable-method", "psci")
		b.PropU32("reg", uint32(i))
		b.End()
	}
	b.End()

	b.Begin("memory@40000000")
	b.PropString("device_type", "memory")
	b.PropU64("reg", 0x40000000, 0x20000000)
	b.End()

	b.Begin("intc@8000000")
	b.PropString("compatible", "arm,gic-v3")
	b.PropEmpty("interrupt-controller")
	b.PropU32("#interrupt-cells", 3)
	b.PropU32("#address-cells", 2)
	b.PropU32("#size-cells", 2)
	b.PropEmpty("ranges")
	b.PropU64("reg", 0x08000000, 0x10000, 0x080a0000, 0x40000)
	b.PropU32("#redistributor-regions", 1)
	b.PropU32("interrupts", 1, 9, 4)
	b.PropU32("phandle", gic)
	b.End()

	b.Begin("timer")
	b.PropStrings("compatible", "arm,armv8-timer")
	b.PropEmpty("always-on")
	b.PropU32("interrupts", 1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4)
	b.End()

	b.Begin("apb-pclk")
	b.PropString("compatible", "fixed-clock")
	b.PropU32("#clock-cells", 0)
	b.PropU32("clock-frequency", 24000000)
	b.PropString("clock-output-names", "clk24mhz")
	b.PropU32("phandle", clk)
	b.End()

	b.Begin("pl011@9000000")
	b.PropStrings("compatible", "arm,pl011", "arm,primecell")
	b.PropU64("reg", 0x09000000, 0x1000)
	b.PropU32("interrupts", 0, 1, 4)
	b.PropU32("clocks", clk, clk)
	b.PropStrings("clock-names", "uartclk", "apb_pclk")
	b.End()

	b.Begin("virtio_mmio@a000000")
	b.PropString("compatible", "virtio,mmio")
	b.PropU64("reg", 0x0a000000, 0x200)
	b.PropU32("interrupts", 0, 16, 1)
	b.PropEmpty("dma-coherent")
	b.End()

	b.Begin("chosen")
	b.PropString("bootargs", "console=ttyAMA0 panic=-1")
	b.PropString("stdout-path", "/pl011@9000000")
	b.PropU64("linux,initrd-start", 0x48000000)
	b.PropU64("linux,initrd-end", 0x48200000)
	b.PropU64("kaslr-seed", 0x0123456789abcdef)
	b.PropBytes("rng-seed", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	b.End()
	b.End()
}

// virtBoardDTB returns the blob virtBoard describes.
func virtBoardDTB(tb testing.TB) []byte {
	tb.Helper()
	b := New()
	virtBoard(b)
	dtb, err := b.Finish()
	if err != nil {
		tb.Fatalf("building virt board: %v", err)
	}
	return dtb
}

// writeNode writes n and its subtree through b, properties in name order.
func writeNode(b *Builder, n *Node) {
	b.Begin(n.Name)
	for _, name := range slices.Sorted(maps.Keys(n.Props)) {
		b.PropBytes(name, n.Props[name])
	}
	for _, c := range n.Children {
		writeNode(b, c)
	}
	b.End()
}
