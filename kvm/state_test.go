package kvm

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/snapshot"
)

func TestRegIDs(t *testing.T) {
	for _, c := range []struct {
		id   uint64
		size int
	}{{regX0, 8}, {regV0, 16}, {regFPSR, 4}, {regSysBase | 0xc000, 8}, {0x6080000000150000, 256}} {
		if got := regSize(c.id); got != c.size || !validRegID(c.id) {
			t.Errorf("regSize(%#x) = %d (valid %v), want %d", c.id, got, validRegID(c.id), c.size)
		}
	}
	// The timer's ONE_REG ids are KVM's constants, swapped against their
	// encodings (kvm-arm64.md §1.9).
	if regTimerCNT != regSysBase|uint64(snapshot.SysReg(3, 3, 14, 3, 2)) ||
		regTimerCVAL != regSysBase|uint64(snapshot.SysReg(3, 3, 14, 0, 2)) ||
		regTimerCTL != regSysBase|uint64(snapshot.SysReg(3, 3, 14, 3, 1)) {
		t.Error("timer register ids")
	}
	if regV0+4*31 != 0x60400000001000D0 {
		t.Errorf("V31 id %#x", regV0+4*31)
	}
}

func TestMPIDRAttr(t *testing.T) {
	for _, c := range []struct{ mpidr, attr uint64 }{
		{0x8000_0000, 0},
		{0x8000_0003, 3 << 32},
		{0x8000_0102, 1<<40 | 2<<32},
		{0xab_00cd_0102 | 1<<31, 0xab<<56 | 0xcd<<48 | 1<<40 | 2<<32},
	} {
		if got := mpidrAttr(c.mpidr); got != c.attr {
			t.Errorf("mpidrAttr(%#x) = %#x, want %#x", c.mpidr, got, c.attr)
		}
	}
}

func TestDistRegs(t *testing.T) {
	regs := distRegs(128, 0x8000_0001)
	count := map[uint32]int{}
	seen := map[uint64]bool{}
	for _, r := range regs {
		if r.Group == vgicGrpDistRegs {
			if seen[r.Attr] {
				t.Errorf("offset %#x twice", r.Attr)
			}
			seen[r.Attr] = true
			off := uint32(r.Attr)
			switch {
			case off >= gicdIROUTER:
				count[gicdIROUTER]++
			case off >= gicdICFGR:
				count[gicdICFGR]++
			case off >= gicdIPRIORITYR:
				count[gicdIPRIORITYR]++
			case off >= gicdISACTIVER:
				count[gicdISACTIVER]++
			case off >= gicdISPENDR:
				count[gicdISPENDR]++
			case off >= gicdISENABLER:
				count[gicdISENABLER]++
			case off >= gicdIGROUPR:
				count[gicdIGROUPR]++
			}
		} else if r.Group == vgicGrpLevelInfo {
			count[0]++
			if r.Attr>>32 != 1 || uint32(r.Attr)%32 != 0 || uint32(r.Attr) < 32 {
				t.Errorf("level info attr %#x", r.Attr)
			}
		}
	}
	// 96 SPIs: 3 words of one bit, 6 of two bits, 24 of eight, 192 IROUTER halves.
	want := map[uint32]int{gicdIGROUPR: 3, gicdISENABLER: 3, gicdISPENDR: 3, gicdISACTIVER: 3,
		gicdIPRIORITYR: 24, gicdICFGR: 6, gicdIROUTER: 192, 0: 3}
	if !reflect.DeepEqual(count, want) {
		t.Errorf("register counts %v, want %v", count, want)
	}
	if regs[0].Attr != gicdIIDR || regs[1].Attr != gicdCTLR {
		t.Error("IIDR and CTLR must come first")
	}
	for _, want := range []uint64{gicdISENABLER + 4, gicdIPRIORITYR + 32, gicdIPRIORITYR + 124, gicdICFGR + 8, gicdICFGR + 28, gicdIROUTER + 8*127 + 4} {
		if !seen[want] {
			t.Errorf("offset %#x missing", want)
		}
	}
	if seen[gicdISENABLER] || seen[gicdIPRIORITYR] || seen[gicdICFGR+4] {
		t.Error("the private part of the distributor was saved")
	}
	// Order: IROUTER and ICFGR before ISPENDR.
	pos := map[uint64]int{}
	for i, r := range regs {
		pos[r.Attr] = i
	}
	if pos[gicdIROUTER+8*32] > pos[gicdISPENDR+4] || pos[gicdICFGR+8] > pos[gicdISPENDR+4] {
		t.Error("targets and configuration must precede pending state")
	}
}

func TestRedistRegs(t *testing.T) {
	regs := redistRegs(hv.MPIDR(17))
	if len(regs) != 18 {
		t.Errorf("%d registers", len(regs))
	}
	for _, r := range regs {
		if r.Attr>>32 != 1<<8|1 {
			t.Errorf("attr %#x lacks vCPU 17's affinity", r.Attr)
		}
	}
	if !isSetReg(vgicGrpRedistRegs, gicrSGIBase+gicdISPENDR) || isSetReg(vgicGrpRedistRegs, gicdISPENDR) ||
		!isSetReg(vgicGrpDistRegs, gicdISACTIVER+8) || isSetReg(vgicGrpDistRegs, gicdIPRIORITYR) ||
		isSetReg(vgicGrpLevelInfo, gicdISENABLER) {
		t.Error("isSetReg")
	}
}

func TestAPRegs(t *testing.T) {
	for _, c := range []struct {
		ctlr uint64
		n    int
	}{{4 << 8, 2}, {5 << 8, 4}, {6 << 8, 8}, {0, 2}} {
		r := apRegs(c.ctlr)
		if len(r) != c.n || r[0] != gic.ICC_AP0R0_EL1 || r[c.n/2] != gic.ICC_AP1R0_EL1 {
			t.Errorf("PRIbits %d: %#x", c.ctlr>>8+1, r)
		}
	}
	if r := apRegs(6 << 8); r[3] != gic.ICC_AP0R3_EL1 || r[7] != gic.ICC_AP1R3_EL1 {
		t.Errorf("7 priority bits: %#x", r)
	}
}

func TestGICBlob(t *testing.T) {
	b := gicBlob{Version: gicBlobVersion, NrIRQs: 128, VCPUs: 2, Regs: []gicReg{{1, 8, 0x43b}, {6, 1<<32 | 0xc664, 1 << 40}}}
	data, err := b.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseGICBlob(data, 128, 2); err == nil {
		t.Error("a 64-bit value in group 6 of the blob was accepted")
	}
	b.Regs = b.Regs[:1]
	data, _ = b.marshal()
	got, err := parseGICBlob(data, 128, 2)
	if err != nil || !reflect.DeepEqual(*got, b) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for name, c := range map[string]struct {
		data  []byte
		irqs  uint32
		vcpus int
	}{
		"empty": {nil, 128, 2}, "garbage": {[]byte{0xff, 1}, 128, 2},
		"irqs": {data, 256, 2}, "vcpus": {data, 128, 1},
	} {
		if _, err := parseGICBlob(c.data, c.irqs, c.vcpus); !errors.Is(err, gic.ErrIncompatibleState) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestBlockBitmap(t *testing.T) {
	const size = 8 << 20
	// 4 KiB pages, 64 KiB blocks: pages 0, 15 → block 0; 16 → 1; 2047 → 127.
	pages := make([]uint64, size/4096/64)
	for _, p := range []int{0, 15, 16, 2047} {
		pages[p/64] |= 1 << (p % 64)
	}
	got, err := blockBitmap(pages, 4096, 64<<10, size)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{0b11, 1 << 63}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %#x, want %#x", got, want)
	}
	// Same size blocks as pages, 16 KiB.
	got, _ = blockBitmap([]uint64{0b101}, 16384, 16384, 3*16384)
	if !reflect.DeepEqual(got, []uint64{0b101}) {
		t.Errorf("identity: %#x", got)
	}
	if _, err := blockBitmap(pages, 16384, 4096, size); err == nil {
		t.Error("a block smaller than a page was accepted")
	}
	if _, err := blockBitmap(pages, 4096, 6144, size); err == nil {
		t.Error("a block not a multiple of the page was accepted")
	}
	if _, err := blockBitmap([]uint64{1 << 5}, 4096, 4096, 4*4096); err == nil {
		t.Error("a page beyond the slot was accepted")
	}
}

// listed is a register list as KVM_GET_REG_LIST gives one: the vCPU's
// fields, a few system registers (an ID register and the physical timer
// among them), a firmware register and a CCSIDR value.
func listed() []kvmReg {
	var regs []kvmReg
	for i, id := range neutralIDs {
		val := make([]byte, regSize(id))
		for j := range val {
			val[j] = byte(i + j + 1)
		}
		regs = append(regs, kvmReg{ID: id, Val: val})
	}
	for i, id := range []uint64{regSysBase | 0xc080, regSysBase | 0xc000, regPTimerCNT, regPTimerCTL,
		0x6030000000140000, 0x6020000000110000} {
		val := make([]byte, regSize(id))
		val[0] = byte(0x80 + i)
		regs = append(regs, kvmReg{ID: id, Val: val})
	}
	return regs
}

func TestSplitJoin(t *testing.T) {
	regs := listed()
	var s snapshot.VCPU
	rest := split(&s, regs)
	if s.X[0] != 0x0807060504030201 || s.V[0][1] == 0 || s.FPSR>>32 != 0 || s.MPIDR == 0 || s.Timer.Counter == 0 {
		t.Errorf("fields: X0 %#x V0 %#x FPSR %#x MPIDR %#x counter %#x", s.X[0], s.V[0], s.FPSR, s.MPIDR, s.Timer.Counter)
	}
	if len(s.Sys) != 4 || s.Sys[0xc080] != 0x80 || s.Sys[0xdf01] != 0x82 {
		t.Errorf("Sys %#x", s.Sys)
	}
	if len(rest) != 2 || rest[0].ID != 0x6030000000140000 || rest[1].ID != 0x6020000000110000 {
		t.Errorf("rest %#x", rest)
	}
	back := join(&s, rest)
	if len(back) != len(regs) {
		t.Fatalf("join gave %d registers, split had %d", len(back), len(regs))
	}
	for _, r := range regs {
		if !reflect.DeepEqual(back[r.ID], r.Val) {
			t.Errorf("%s: %#x after split and join, %#x before", regName(r.ID), back[r.ID], r.Val)
		}
	}
}

func TestRestoreOrder(t *testing.T) {
	regs := listed()
	var host []uint64
	for _, r := range regs {
		host = append(host, r.ID)
	}
	var s snapshot.VCPU
	rest := split(&s, regs)
	order, err := restoreOrder(host, join(&s, rest))
	if err != nil {
		t.Fatal(err)
	}
	pos := map[uint64]int{}
	for i, id := range order {
		pos[id] = i
	}
	if _, ok := pos[regSysBase|0xc000]; ok {
		t.Error("MIDR_EL1 is written; ID registers are only compared")
	}
	if _, ok := pos[0x6020000000110000]; ok {
		t.Error("CCSIDR is written; it is only compared")
	}
	if len(order) != len(regs)-2 {
		t.Errorf("%d registers to write, want %d", len(order), len(regs)-2)
	}
	for _, id := range []uint64{regX0, regPC, regSysBase | 0xc080, 0x6030000000140000} {
		if pos[id] > pos[regTimerCNT] || pos[id] > pos[regPTimerCNT] {
			t.Errorf("%s is written after a counter", regName(id))
		}
	}
	for _, id := range []uint64{regTimerCVAL, regTimerCTL, regPTimerCTL} {
		if pos[id] < pos[regTimerCNT] || pos[id] < pos[regPTimerCNT] {
			t.Errorf("%s is written before the counters", regName(id))
		}
	}

	// A host that lacks a saved register refuses, naming it.
	_, err = restoreOrder(slices.DeleteFunc(slices.Clone(host), func(id uint64) bool { return id == regSysBase|0xc080 }), join(&s, rest))
	if !errors.Is(err, snapshot.ErrHost) || !strings.Contains(err.Error(), "SCTLR_EL1") {
		t.Errorf("host without SCTLR_EL1: %v", err)
	}
}

func TestCheckBlob(t *testing.T) {
	ok := vcpuBlob{Version: vcpuBlobVersion, Regs: []kvmReg{{ID: 0x6030000000140000, Val: make([]byte, 8)}}}
	if err := checkBlob(&ok); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]vcpuBlob{
		"version":   {Version: 2},
		"short":     {Version: 1, Regs: []kvmReg{{ID: 0x6030000000140000, Val: make([]byte, 4)}}},
		"not arm64": {Version: 1, Regs: []kvmReg{{ID: 0x4030000000140000, Val: make([]byte, 8)}}},
		"twice":     {Version: 1, Regs: []kvmReg{ok.Regs[0], ok.Regs[0]}},
		"field":     {Version: 1, Regs: []kvmReg{{ID: regPC, Val: make([]byte, 8)}}},
		"sys":       {Version: 1, Regs: []kvmReg{{ID: regSysBase | 0xc080, Val: make([]byte, 8)}}},
	} {
		if err := checkBlob(&b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
