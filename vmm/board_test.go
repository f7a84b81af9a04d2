package vmm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/squibvm/squib/fdt"
	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/loader"
)

// testKernel is a minimal arm64 Image header, enough for the loader.
func testKernel(size uint64) []byte {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint64(b[0x10:], size)
	binary.LittleEndian.PutUint32(b[0x38:], 0x644D5241)
	return b
}

func testPlan(t *testing.T, cpus int, rng bool) *Plan {
	t.Helper()
	p, err := Prepare(Config{
		Kernel: loader.Bytes(testKernel(8 << 20)), Initrd: loader.Bytes(bytes.Repeat([]byte{1}, 1<<20)),
		Cmdline: DefaultCmdline, VCPUs: cpus, MemoryMiB: 512, RNG: rng,
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDeviceTreeDescribesTheBoard(t *testing.T) {
	p := testPlan(t, 3, false)
	root, _, err := fdt.Parse(p.DTB)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		cpu := root.Find("/cpus/cpu@" + string(rune('0'+i)))
		if cpu == nil {
			t.Fatalf("no cpu@%d", i)
		}
		reg, _ := cpu.U32("reg")
		method, _ := cpu.Strings("enable-method")
		if !reflect.DeepEqual(reg, []uint32{uint32(hv.MPIDR(i) & 0xffffff)}) || !reflect.DeepEqual(method, []string{"psci"}) {
			t.Errorf("cpu@%d: reg %v enable-method %v", i, reg, method)
		}
	}
	if reg, _ := root.Find("/memory@40000000").U64("reg"); !reflect.DeepEqual(reg, []uint64{RAMBase, 512 << 20}) {
		t.Errorf("memory reg %#x", reg)
	}
	if m, _ := root.Find("/psci").Strings("method"); !reflect.DeepEqual(m, []string{"hvc"}) {
		t.Errorf("psci method %v", m)
	}
	chosen := root.Find("/chosen")
	args, _ := chosen.Strings("bootargs")
	start, _ := chosen.U64("linux,initrd-start")
	end, _ := chosen.U64("linux,initrd-end")
	if !reflect.DeepEqual(args, []string{DefaultCmdline}) ||
		!reflect.DeepEqual(start, []uint64{p.Layout.Initrd}) || !reflect.DeepEqual(end, []uint64{p.Layout.InitrdEnd}) {
		t.Errorf("chosen: bootargs %q initrd %#x-%#x, want %#x-%#x", args, start, end, p.Layout.Initrd, p.Layout.InitrdEnd)
	}
	if seed, ok := chosen.Props["rng-seed"]; !ok || len(seed) != 32 || bytes.Equal(seed, make([]byte, 32)) {
		t.Errorf("rng-seed %x", seed)
	}
	// Every interrupt the devices use points at the GIC through the root's interrupt-parent.
	gicNode := root.Find("/intc@8000000")
	ph, _ := gicNode.U32("phandle")
	if parent, _ := root.U32("interrupt-parent"); !reflect.DeepEqual(parent, ph) {
		t.Errorf("interrupt-parent %v, GIC phandle %v", parent, ph)
	}
	uart, _ := root.Find("/pl011@9000000").U32("interrupts")
	rtc, _ := root.Find("/pl031@9010000").U32("interrupts")
	if len(uart) != 3 || len(rtc) != 3 || uart[1] == rtc[1] {
		t.Errorf("device interrupts uart %v rtc %v", uart, rtc)
	}
	if n := root.Find(fmt.Sprintf("/virtio_mmio@%x", VirtioBase)); n != nil {
		t.Errorf("a board without devices has a virtio-mmio node: %v", n.Props)
	}
}

// TestDeviceTreeRNG: the entropy device is a virtio-mmio node at the
// first virtio window, with a level-triggered SPI of its own and
// dma-coherent.
func TestDeviceTreeRNG(t *testing.T) {
	p := testPlan(t, 1, true)
	root, _, err := fdt.Parse(p.DTB)
	if err != nil {
		t.Fatal(err)
	}
	n := root.Find("/virtio_mmio@a000000")
	if n == nil {
		t.Fatal("no /virtio_mmio@a000000")
	}
	compat, _ := n.Strings("compatible")
	reg, _ := n.U64("reg")
	irq, _ := n.U32("interrupts")
	_, coherent := n.Props["dma-coherent"]
	uart, _ := root.Find("/pl011@9000000").U32("interrupts")
	rtc, _ := root.Find("/pl031@9010000").U32("interrupts")
	if !reflect.DeepEqual(compat, []string{"virtio,mmio"}) || !reflect.DeepEqual(reg, []uint64{VirtioBase, 0x1000}) || !coherent {
		t.Errorf("virtio node: compatible %q, reg %#x, dma-coherent %v", compat, reg, coherent)
	}
	if len(irq) != 3 || irq[0] != 0 || irq[2] != gic.IRQLevelHigh || irq[1] == uart[1] || irq[1] == rtc[1] {
		t.Errorf("virtio interrupts %v (uart %v, rtc %v): want an SPI of its own, level-high", irq, uart, rtc)
	}
	if len(p.virtio) != 1 || p.virtio[0].spi != gic.SPI(irq[1]) || p.virtio[0].name != "virtio-rng" {
		t.Errorf("the plan's virtio devices %+v do not match the device tree", p.virtio)
	}
}

func TestPrepareRejects(t *testing.T) {
	good := Config{Kernel: loader.Bytes(testKernel(8 << 20)), Cmdline: "x", VCPUs: 1, MemoryMiB: 64}
	cases := map[string]struct {
		mutate func(*Config)
		msg    string
	}{
		"no cpus":     {func(c *Config) { c.VCPUs = 0 }, "at least one vCPU"},
		"many cpus":   {func(c *Config) { c.VCPUs = 124 }, "at most 123"},
		"no memory":   {func(c *Config) { c.MemoryMiB = 0 }, "between 1 and"},
		"huge memory": {func(c *Config) { c.MemoryMiB = 1 << 30 }, "between 1 and"},
		"small":       {func(c *Config) { c.MemoryMiB = 9 }, "memory too small"},
		"initrd":      {func(c *Config) { c.Initrd = loader.Bytes(make([]byte, 60<<20)) }, "memory too small"},
		"not a kernel": {func(c *Config) { c.Kernel = loader.Bytes([]byte("#!/bin/sh\necho hi\n" + strings.Repeat(" ", 100))) },
			"not an arm64 Linux Image"},
	}
	for name, c := range cases {
		cfg := good
		c.mutate(&cfg)
		if _, err := Prepare(cfg); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, c.msg)
		}
	}
	if _, err := Prepare(good); err != nil {
		t.Fatalf("the good config fails: %v", err)
	}
}

// TestDeviceTreeDecompilesCleanly runs dtc over the board's DTB: it must
// decompile without a single warning.
func TestDeviceTreeDecompilesCleanly(t *testing.T) {
	dtc, err := exec.LookPath("dtc")
	if err != nil {
		t.Skip("dtc not installed (apt-get install device-tree-compiler)")
	}
	path := filepath.Join(t.TempDir(), "board.dtb")
	if err := os.WriteFile(path, testPlan(t, 2, true).DTB, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(dtc, "-I", "dtb", "-O", "dts", path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Warning") {
		t.Fatalf("dtc: %v\n%s", err, out)
	}
}

// TestDeviceTreeMatchesQEMUVirt compares the board with QEMU's own virt DTB
// where both describe the same hardware at the same addresses.
func TestDeviceTreeMatchesQEMUVirt(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed (lab/setup.sh installs it)")
	}
	path := filepath.Join(t.TempDir(), "qemu.dtb")
	out, err := exec.Command(qemu, "-M", "virt,gic-version=3,dumpdtb="+path, "-cpu", "cortex-a57",
		"-smp", "2", "-m", "512", "-nographic", "-nic", "none").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu dumpdtb: %v\n%s", err, out)
	}
	blob, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	q, _, err := fdt.Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := fdt.Parse(testPlan(t, 2, true).DTB)
	if err != nil {
		t.Fatal(err)
	}
	same := []struct{ path, prop string }{
		{"/memory@40000000", "reg"},
		{"/memory@40000000", "device_type"},
		{"/pl011@9000000", "reg"},
		{"/pl011@9000000", "compatible"},
		{"/pl011@9000000", "clock-names"},
		{"/pl031@9010000", "reg"},
		{"/pl031@9010000", "compatible"},
		{"/intc@8000000", "compatible"},
		{"/intc@8000000", "#interrupt-cells"},
		{"/intc@8000000", "#address-cells"},
		{"/intc@8000000", "#size-cells"},
		{"/intc@8000000", "interrupt-controller"},
		{"/timer", "interrupts"},
		{"/apb-pclk", "clock-frequency"},
		{"/apb-pclk", "clock-output-names"},
		{"/cpus/cpu@0", "reg"},
		{"/cpus/cpu@1", "reg"},
		{"/cpus/cpu@1", "enable-method"},
		{"/cpus", "#address-cells"},
		{"/virtio_mmio@a000000", "compatible"},
		{"/virtio_mmio@a000000", "dma-coherent"},
		{"/", "compatible"},
		{"/", "#address-cells"},
		{"/", "#size-cells"},
	}
	for _, c := range same {
		qn, sn := q.Find(c.path), s.Find(c.path)
		if qn == nil || sn == nil {
			t.Errorf("%s: present in QEMU %v, squib %v", c.path, qn != nil, sn != nil)
			continue
		}
		qv, qok := qn.Props[c.prop]
		sv, sok := sn.Props[c.prop]
		if !qok || !sok || !bytes.Equal(qv, sv) {
			t.Errorf("%s %s: QEMU %x, squib %x", c.path, c.prop, qv, sv)
		}
	}
	// The GIC's distributor and first redistributor sit where QEMU puts
	// them; QEMU reserves a fixed redistributor window, squib sizes it to the vCPUs.
	qreg, _ := q.Find("/intc@8000000").U64("reg")
	sreg, _ := s.Find("/intc@8000000").U64("reg")
	if len(qreg) < 4 || len(sreg) != 4 || qreg[0] != sreg[0] || qreg[1] != sreg[1] || qreg[2] != sreg[2] || sreg[3] != 2*0x20000 {
		t.Errorf("GIC reg: QEMU %#x, squib %#x", qreg, sreg)
	}
	// PSCI: same function, squib's conduit is HVC like QEMU's without EL2.
	qm, _ := q.Find("/psci").Strings("method")
	sm, _ := s.Find("/psci").Strings("method")
	if !reflect.DeepEqual(qm, sm) {
		t.Errorf("psci method: QEMU %v, squib %v", qm, sm)
	}
}
