package vmm

import (
	"crypto/rand"
	"fmt"

	"github.com/squibvm/squib/devices/pl011"
	"github.com/squibvm/squib/devices/pl031"
	"github.com/squibvm/squib/fdt"
	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/virtio"
)

// The guest physical memory map follows QEMU's virt board, so guests and
// tools that know that board find things where they expect:
//
//	0x0800_0000  GICv3 distributor (64 KiB)
//	0x080A_0000  GICv3 redistributors (128 KiB per vCPU, up to 0x0900_0000)
//	0x0900_0000  PL011 UART (4 KiB)
//	0x0901_0000  PL031 RTC (4 KiB)
//	0x0A00_0000  virtio-mmio devices (4 KiB each, one after the other)
//	0x4000_0000  RAM (kernel at the start, initrd and device tree at the end)
const (
	UARTBase   = 0x0900_0000
	RTCBase    = 0x0901_0000
	VirtioBase = 0x0A00_0000
	RAMBase    = 0x4000_0000
	// MaxRAM keeps RAM inside a 40-bit guest physical address space, the
	// default every KVM host supports: 1<<40 - RAMBase. It is the snapshot
	// format's limit, so a state file verifies only if a restore can map
	// its RAM (TestLimits checks the two agree).
	MaxRAM = snapshot.MaxRAMSize
)

// deviceTree describes the board to the guest kernel.
func deviceTree(p *Plan) ([]byte, error) {
	b := fdt.New()
	b.Begin("")
	b.PropString("compatible", "linux,dummy-virt")
	b.PropString("model", "squib")
	b.PropU32("#address-cells", 2)
	b.PropU32("#size-cells", 2)
	gicPhandle := b.Phandle()
	clkPhandle := b.Phandle()
	b.PropU32("interrupt-parent", gicPhandle)

	// CPUs: reg is the MPIDR affinity (Aff2..Aff0); PSCI brings secondaries up.
	b.Begin("cpus")
	b.PropU32("#address-cells", 1)
	b.PropU32("#size-cells", 0)
	for i := range p.VCPUs {
		mpidr := hv.MPIDR(i) & 0xff_ffff
		b.Begin(fmt.Sprintf("cpu@%x", mpidr))
		b.PropString("device_type", "cpu")
		b.PropString("compatible", "arm,arm-v8")
		b.PropString("enable-method", "psci")
		b.PropU32("reg", uint32(mpidr))
		b.End()
	}
	b.End()

	b.Begin(fmt.Sprintf("memory@%x", uint64(RAMBase)))
	b.PropString("device_type", "memory")
	b.PropU64("reg", RAMBase, p.RAMSize)
	b.End()

	// PSCI 1.0 over HVC, handled by package psci.
	b.Begin("psci")
	b.PropStrings("compatible", "arm,psci-1.0", "arm,psci-0.2")
	b.PropString("method", "hvc")
	b.End()

	p.GIC.WriteFDT(b, gicPhandle)

	// The architected timer's PPIs: secure, non-secure physical, virtual, hypervisor.
	b.Begin("timer")
	b.PropString("compatible", "arm,armv8-timer")
	b.PropEmpty("always-on")
	var timer []uint32
	for _, ppi := range gic.TimerPPIs() {
		c := ppi.FDTCells(gic.IRQLevelHigh)
		timer = append(timer, c[:]...)
	}
	b.PropU32("interrupts", timer...)
	b.End()

	// The PrimeCell devices' bus clock.
	b.Begin("apb-pclk")
	b.PropString("compatible", "fixed-clock")
	b.PropU32("#clock-cells", 0)
	b.PropU32("clock-frequency", 24_000_000)
	b.PropString("clock-output-names", "clk24mhz")
	b.PropU32("phandle", clkPhandle)
	b.End()

	uart := fmt.Sprintf("pl011@%x", UARTBase)
	b.Begin(uart)
	b.PropStrings("compatible", "arm,pl011", "arm,primecell")
	b.PropU64("reg", UARTBase, pl011.Size)
	c := p.uartSPI.FDTCells(gic.IRQLevelHigh)
	b.PropU32("interrupts", c[:]...)
	b.PropU32("clocks", clkPhandle, clkPhandle)
	b.PropStrings("clock-names", "uartclk", "apb_pclk")
	b.End()

	b.Begin(fmt.Sprintf("pl031@%x", RTCBase))
	b.PropStrings("compatible", "arm,pl031", "arm,primecell")
	b.PropU64("reg", RTCBase, pl031.Size)
	c = p.rtcSPI.FDTCells(gic.IRQLevelHigh)
	b.PropU32("interrupts", c[:]...)
	b.PropU32("clocks", clkPhandle)
	b.PropString("clock-names", "apb_pclk")
	b.End()

	// virtio-mmio devices (virtio/mmio.yaml), level-triggered like the
	// transport's line. dma-coherent: the guest maps the rings cacheable,
	// as squib reads and writes them.
	for _, v := range p.virtio {
		b.Begin(fmt.Sprintf("virtio_mmio@%x", v.base))
		b.PropString("compatible", "virtio,mmio")
		b.PropU64("reg", v.base, virtio.Size)
		c = v.spi.FDTCells(gic.IRQLevelHigh)
		b.PropU32("interrupts", c[:]...)
		b.PropEmpty("dma-coherent")
		b.End()
	}

	b.Begin("chosen")
	b.PropString("bootargs", p.Cmdline)
	b.PropString("stdout-path", "/"+uart)
	if p.Layout.Initrd != 0 {
		b.PropU64("linux,initrd-start", p.Layout.Initrd)
		b.PropU64("linux,initrd-end", p.Layout.InitrdEnd)
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	b.PropBytes("rng-seed", seed)
	b.End()

	b.End()
	return b.Finish()
}
