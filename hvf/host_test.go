package hvf

import (
	"errors"
	"strings"
	"testing"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
)

func TestVersionLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"11.0", "15.0", true},
		{"9.1", "15.0", true},
		{"15.0", "15.0", false},
		{"15.0", "15", false},
		{"15", "15.0.1", true},
		{"15.10", "15.9", false},
		{"26.0", "15.0", false},
	} {
		if got := versionLess(c.a, c.b); got != c.want {
			t.Errorf("versionLess(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// Version gating: a host is usable when no symbol is missing; otherwise the
// error names the newest macOS version among the missing symbols, the
// running version and the symbols.
func TestCheckSymbols(t *testing.T) {
	if err := checkSymbols("15.3.1 (24D70)", nil); err != nil {
		t.Fatalf("all present: %v", err)
	}
	for _, c := range []struct {
		name    string
		macOS   string
		missing []symbol
		want    []string
	}{
		{"macOS 14", "14.6.1 (23G93)", []symbol{{"hv_gic_create", "15.0"}, {"hv_gic_set_spi", "15.0"}},
			[]string{"needs macOS 15.0 or later", "hv_gic_create, hv_gic_set_spi", "runs macOS 14.6.1 (23G93)"}},
		{"macOS 12", "12.7", []symbol{{"hv_vm_config_create", "13.0"}, {"hv_gic_create", "15.0"}},
			[]string{"needs macOS 15.0 or later", "hv_vm_config_create, hv_gic_create", "12.7"}},
		{"13.0 only", "12.7", []symbol{{"hv_vm_config_create", "13.0"}},
			[]string{"needs macOS 13.0 or later"}},
		{"many", "14.0", []symbol{{"a", "15.0"}, {"b", "15.0"}, {"c", "15.0"}, {"d", "15.0"}, {"e", "15.0"}},
			[]string{"Hypervisor.framework's a, b, c and 2 more)"}},
	} {
		err := checkSymbols(c.macOS, c.missing)
		if !errors.Is(err, ErrMacOSTooOld) || !errors.Is(err, hv.ErrNoHypervisor) {
			t.Errorf("%s: %v does not wrap ErrMacOSTooOld and hv.ErrNoHypervisor", c.name, err)
		}
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v lacks %q", c.name, err, w)
			}
		}
	}
	err := checkSymbols("15.0", []symbol{{"mach_absolute_time", ""}})
	if errors.Is(err, ErrMacOSTooOld) || !strings.Contains(err.Error(), "mach_absolute_time") {
		t.Errorf("missing libSystem symbol: %v", err)
	}
}

func TestCheckRAM(t *testing.T) {
	if err := checkRAM(0x1_0000_4000, 0x4000_0000, 256<<20); err != nil {
		t.Errorf("aligned RAM: %v", err)
	}
	for _, c := range [][3]uint64{
		{0x1_0000_1000, 0x4000_0000, 256 << 20}, // 4 KiB-aligned host address
		{0x1_0000_4000, 0x4000_1000, 256 << 20}, // 4 KiB-aligned IPA
		{0x1_0000_4000, 0x4000_0000, 0x5000},    // size not a 16 KiB multiple
		{0x1_0000_4000, 0x4000_0000, 0},
	} {
		if err := checkRAM(uintptr(c[0]), c[1], c[2]); err == nil {
			t.Errorf("checkRAM%x accepted", c)
		}
	}
}

func TestIPABits(t *testing.T) {
	for _, c := range []struct {
		top       uint64
		def, max  uint32
		want      uint32
		wantError bool
	}{
		{0x4000_0000 + 256<<20, 36, 40, 0, false}, // default 64 GiB suffices
		{1 << 36, 36, 40, 0, false},               // exactly the default
		{1<<36 + 1<<14, 36, 40, 37, false},
		{1 << 40, 36, 40, 40, false},
		{1<<40 + 1<<14, 36, 40, 0, true},
	} {
		got, err := ipaBits(c.top, c.def, c.max)
		if got != c.want || (err != nil) != c.wantError {
			t.Errorf("ipaBits(%#x, %d, %d) = %d, %v", c.top, c.def, c.max, got, err)
		}
	}
}

// goodGeometry is what the framework is expected to report on a Mac.
func goodGeometry() gicGeometry {
	return gicGeometry{
		distSize: 0x10000, distAlign: 0x10000,
		redistRegionSize: 64 * 0x20000, redistSize: 0x20000, redistAlign: 0x10000,
		spiBase: 32, spiCount: 988,
		vtimerINTID: 27, ptimerINTID: 30,
	}
}

func TestGICGeometry(t *testing.T) {
	l, err := gic.NewLayout(4)
	if err != nil {
		t.Fatal(err)
	}
	if err := goodGeometry().check(l); err != nil {
		t.Fatalf("expected geometry: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*gicGeometry)
		want string
	}{
		{"big distributor", func(g *gicGeometry) { g.distSize = 0x20000 }, "distributor is 0x20000 bytes"},
		{"distributor alignment", func(g *gicGeometry) { g.distAlign = 0x10000000 }, "distributor base 0x8000000 is not aligned"},
		{"zero alignment", func(g *gicGeometry) { g.distAlign = 0 }, "not aligned"},
		{"redistributor size", func(g *gicGeometry) { g.redistSize = 0x40000 }, "0x40000 bytes each"},
		{"redistributor alignment", func(g *gicGeometry) { g.redistAlign = 0x100000 }, "redistributor base 0x80a0000"},
		{"region overlaps UART", func(g *gicGeometry) { g.redistRegionSize = 128 * 0x20000 }, "would overlap the devices at 0x9000000"},
		{"few SPIs", func(g *gicGeometry) { g.spiCount = 32 }, "SPI INTIDs 32-63, squib needs 32-127"},
		{"SPIs start late", func(g *gicGeometry) { g.spiBase = 64 }, "squib needs 32-127"},
		{"vtimer", func(g *gicGeometry) { g.vtimerINTID = 26 }, "INTIDs 26 (virtual) and 30"},
		{"ptimer", func(g *gicGeometry) { g.ptimerINTID = 29 }, "the device tree says 27 and 30"},
	} {
		g := goodGeometry()
		c.edit(&g)
		if err := g.check(l); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

func TestCheckRedists(t *testing.T) {
	l, _ := gic.NewLayout(2)
	for _, ok := range [][]uint64{
		{gic.RedistBase, gic.RedistBase + gic.RedistSizePerCPU},
		{gic.RedistBase + gic.RedistSizePerCPU, gic.RedistBase}, // any order
	} {
		if err := checkRedists(ok, l); err != nil {
			t.Errorf("%x: %v", ok, err)
		}
	}
	for _, bad := range [][]uint64{
		{gic.RedistBase, gic.RedistBase},                          // shared
		{gic.RedistBase, gic.RedistBase + 2*gic.RedistSizePerCPU}, // beyond the 2-vCPU region
		{gic.RedistBase, gic.RedistBase + 0x10000},                // not on a frame boundary
		{gic.RedistBase - gic.RedistSizePerCPU, gic.RedistBase},
	} {
		if err := checkRedists(bad, l); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}

func TestCheckICC(t *testing.T) {
	full := gic.ICCRegs{}
	for i, r := range iccRegs {
		full[r] = uint64(i)
	}
	if err := checkICC(full); err != nil {
		t.Fatal(err)
	}
	short := gic.ICCRegs{gic.ICC_PMR_EL1: 0xf0}
	kvm := gic.ICCRegs{}
	for r := range full {
		kvm[r] = 0
	}
	delete(kvm, gic.ICC_IGRPEN0_EL1)
	kvm[gic.ICC_AP0R1_EL1] = 0
	for _, bad := range []gic.ICCRegs{nil, short, kvm} {
		if err := checkICC(bad); !errors.Is(err, gic.ErrIncompatibleState) {
			t.Errorf("checkICC(%v) = %v", bad, err)
		}
	}
}

func TestGICRefused(t *testing.T) {
	cause := check("hv_gic_set_state", HV_BAD_ARGUMENT)
	err := gicRefused("15.3 (24D60)", "26.0 (25A354)", cause)
	for _, w := range []string{"saved on macOS 15.3 (24D60)", "this Mac runs macOS 26.0 (25A354)", "HV_BAD_ARGUMENT"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%v lacks %q", err, w)
		}
	}
	if !errors.Is(err, gic.ErrIncompatibleState) || !errors.Is(err, ErrBadArgument) {
		t.Errorf("%v does not wrap gic.ErrIncompatibleState and the framework's error", err)
	}
	if err := gicRefused("26.0", "26.0", cause); !strings.Contains(err.Error(), "same macOS version") {
		t.Errorf("same version: %v", err)
	}
}
