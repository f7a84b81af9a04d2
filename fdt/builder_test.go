package fdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	want := &Node{
		Props: map[string][]byte{
			"compatible": []byte("linux,dummy-virt\x00"),
			"empty":      {},
		},
		Children: []*Node{
			{Name: "cpus", Props: map[string][]byte{"#size-cells": {0, 0, 0, 0}}, Children: []*Node{
				{Name: "cpu@0", Props: map[string][]byte{"reg": {0, 0, 0, 0}}},
				{Name: "cpu@1", Props: map[string][]byte{"reg": {0, 0, 0, 1}}},
			}},
			{Name: "odd", Props: map[string][]byte{"bytes": {1, 2, 3, 4, 5}, "one": {9}}},
			{Name: "leaf", Props: map[string][]byte{}},
		},
	}
	wantRsv := [][2]uint64{{0x40000000, 0x1000}, {0xffff_ffff_0000_0000, 0x1_0000_0000}}
	b := New()
	for _, r := range wantRsv {
		b.Reserve(r[0], r[1])
	}
	writeNode(b, want)
	dtb, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	got, rsv, err := Parse(dtb)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tree differs after round trip:\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(rsv, wantRsv) {
		t.Errorf("reservations = %#x, want %#x", rsv, wantRsv)
	}
}

func TestTypedProps(t *testing.T) {
	root, _, err := Parse(virtBoardDTB(t))
	if err != nil {
		t.Fatal(err)
	}
	gic := root.Find("/intc@8000000")
	if got, _ := gic.U64("reg"); !reflect.DeepEqual(got, []uint64{0x08000000, 0x10000, 0x080a0000, 0x40000}) {
		t.Errorf("intc reg = %#x", got)
	}
	if got, _ := gic.U32("interrupts"); !reflect.DeepEqual(got, []uint32{1, 9, 4}) {
		t.Errorf("intc interrupts = %v", got)
	}
	if v, ok := gic.Props["interrupt-controller"]; !ok || len(v) != 0 {
		t.Errorf("interrupt-controller = %v, %t; want empty, present", v, ok)
	}
	if got, _ := root.Find("psci").Strings("compatible"); !reflect.DeepEqual(got, []string{"arm,psci-1.0", "arm,psci-0.2", "arm,psci"}) {
		t.Errorf("psci compatible = %q", got)
	}
	if got, _ := root.Find("/chosen").Props["rng-seed"]; !bytes.Equal(got, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Errorf("rng-seed = %x", got)
	}
}

func TestDeterministic(t *testing.T) {
	a, b := virtBoardDTB(t), virtBoardDTB(t)
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same tree differ")
	}
}

func TestFinishTwice(t *testing.T) {
	b := New()
	b.Begin("")
	b.End()
	first, err1 := b.Finish()
	second, err2 := b.Finish()
	if err1 != nil || err2 != nil || !bytes.Equal(first, second) {
		t.Errorf("Finish twice: %x, %v then %x, %v", first, err1, second, err2)
	}
}

func TestStringsDeduplicated(t *testing.T) {
	dtb := virtBoardDTB(t)
	be := binary.BigEndian
	off, size := be.Uint32(dtb[hdrOffDTStrings:]), be.Uint32(dtb[hdrSizeDTStrings:])
	names := strings.Split(strings.TrimSuffix(string(dtb[off:off+size]), "\x00"), "\x00")
	seen := make(map[string]bool)
	for _, n := range names {
		if seen[n] {
			t.Errorf("strings block holds %q twice", n)
		}
		seen[n] = true
	}
	if !seen["reg"] || !seen["compatible"] {
		t.Errorf("strings block %q lacks reg or compatible", names)
	}
}

func TestPhandle(t *testing.T) {
	b := New()
	for want := uint32(1); want <= 3; want++ {
		if got := b.Phandle(); got != want {
			t.Errorf("Phandle() = %d, want %d", got, want)
		}
	}
}

func TestBootCPU(t *testing.T) {
	b := New()
	b.SetBootCPU(0x100)
	b.Begin("")
	b.End()
	dtb, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint32(dtb[hdrBootCPUIDPhys:]); got != 0x100 {
		t.Errorf("boot_cpuid_phys = %#x, want 0x100", got)
	}
}

func TestMisuse(t *testing.T) {
	tests := []struct {
		name     string
		calls    func(b *Builder)
		wantPath string
		wantIn   string // substring of Problem
	}{
		{"no root", func(b *Builder) {}, "", "no root node"},
		{"root not named empty", func(b *Builder) { b.Begin("cpus") }, "", `root node must be Begin("")`},
		{"second root", func(b *Builder) { b.Begin(""); b.End(); b.Begin("") }, "", "second root node"},
		{"End without Begin", func(b *Builder) { b.End() }, "", "End without Begin"},
		{"End after root", func(b *Builder) { b.Begin(""); b.End(); b.End() }, "", "End without Begin"},
		{"unclosed node", func(b *Builder) { b.Begin(""); b.Begin("cpus") }, "/cpus", "node not closed"},
		{"unclosed root", func(b *Builder) { b.Begin("") }, "/", "node not closed"},
		{"property before root", func(b *Builder) { b.PropU32("reg", 1) }, "", `property "reg" outside a node`},
		{"property after root", func(b *Builder) { b.Begin(""); b.End(); b.PropEmpty("ranges") }, "", `property "ranges" outside a node`},
		{"property after child", func(b *Builder) {
			b.Begin("")
			b.Begin("cpus")
			b.End()
			b.PropU32("#size-cells", 2)
		}, "/", `property "#size-cells" after child node "cpus"`},
		{"duplicate property", func(b *Builder) {
			b.Begin("")
			b.Begin("memory@0")
			b.PropU64("reg", 0, 1)
			b.PropU32("reg", 0)
		}, "/memory@0", `duplicate property "reg"`},
		{"duplicate node", func(b *Builder) {
			b.Begin("")
			b.Begin("cpus")
			b.Begin("cpu@0")
			b.End()
			b.Begin("cpu@0")
		}, "/cpus", `duplicate node "cpu@0"`},
		{"empty node name", func(b *Builder) { b.Begin(""); b.Begin("") }, "/", "empty node name"},
		{"bad node char", func(b *Builder) { b.Begin(""); b.Begin("my node") }, "/", `invalid node name "my node"`},
		{"node name with #", func(b *Builder) { b.Begin(""); b.Begin("a#b") }, "/", "invalid node name"},
		{"two @", func(b *Builder) { b.Begin(""); b.Begin("cpu@0@1") }, "/", "invalid node name"},
		{"empty unit", func(b *Builder) { b.Begin(""); b.Begin("cpu@") }, "/", "invalid node name"},
		{"only unit", func(b *Builder) { b.Begin(""); b.Begin("@0") }, "/", "invalid node name"},
		{"NUL in node name", func(b *Builder) { b.Begin(""); b.Begin("a\x00b") }, "/", "invalid node name"},
		{"empty property name", func(b *Builder) { b.Begin(""); b.PropEmpty("") }, "/", `invalid property name ""`},
		{"bad property char", func(b *Builder) { b.Begin(""); b.PropEmpty("a@b") }, "/", `invalid property name "a@b"`},
		{"NUL in string", func(b *Builder) { b.Begin(""); b.PropString("bootargs", "a\x00b") }, "/", `property "bootargs": string "a\x00b" contains NUL`},
		{"NUL in string list", func(b *Builder) { b.Begin(""); b.PropStrings("compatible", "ok", "\x00") }, "/", "contains NUL"},
		{"zero-size reservation", func(b *Builder) { b.Reserve(0x1000, 0) }, "", "zero-size memory reservation"},
		{"wrapping reservation", func(b *Builder) { b.Reserve(0xffff_ffff_ffff_f000, 0x2000) }, "", "wraps around"},
		{"too big", func(b *Builder) {
			b.Begin("")
			b.PropBytes("blob", make([]byte, 1<<20))
			b.PropBytes("blob2", make([]byte, 1<<20))
		}, "/", "exceeds"},
		{"too big with reservations", func(b *Builder) {
			b.Begin("")
			b.PropBytes("blob", make([]byte, 2<<20-200))
			b.End()
			for i := range 10 {
				b.Reserve(uint64(i)<<12, 1)
			}
		}, "", "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New()
			tt.calls(b)
			dtb, err := b.Finish()
			// Later calls are no-ops: none of these may replace the first error.
			b.End()
			b.Begin("x y")
			b.PropEmpty("")
			if _, again := b.Finish(); again != err {
				t.Errorf("after more misuse Finish() = %v, want the first error %v", again, err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Finish() = %d bytes, %v; want *Error", len(dtb), err)
			}
			if dtb != nil {
				t.Errorf("Finish returned %d bytes along with an error", len(dtb))
			}
			if e.Path != tt.wantPath || !strings.Contains(e.Problem, tt.wantIn) {
				t.Errorf("error = %q at path %q; want path %q, problem containing %q", e.Problem, e.Path, tt.wantPath, tt.wantIn)
			}
			if !strings.HasPrefix(err.Error(), "fdt: ") {
				t.Errorf("error text %q lacks the fdt: prefix", err)
			}
		})
	}
}

func TestValidNames(t *testing.T) {
	b := New()
	b.Begin("")
	b.PropEmpty("#address-cells")
	b.PropEmpty("linux,initrd-start")
	b.PropEmpty("a.b_c+d?e#f-g")
	for _, name := range []string{"cpus", "cpu@0", "pl011@9000000", "virtio_mmio@a000000", "A,b.c_d+e-f@1,2"} {
		b.Begin(name)
		b.End()
	}
	b.End()
	if _, err := b.Finish(); err != nil {
		t.Fatal(err)
	}
}
