package gic

import (
	"strings"
	"testing"
)

func TestMaxVCPUs(t *testing.T) {
	if got := MaxVCPUs(); got != 123 {
		t.Errorf("MaxVCPUs() = %d, want 123", got)
	}
	end := uint64(RedistBase) + uint64(MaxVCPUs())*RedistSizePerCPU
	if end > RedistLimit || end+RedistSizePerCPU <= RedistLimit {
		t.Errorf("%d redistributors end at %#x; limit %#x is not the tight bound", MaxVCPUs(), end, RedistLimit)
	}
}

func TestMapAlignedDisjoint(t *testing.T) {
	for name, v := range map[string]uint64{"DistBase": DistBase, "RedistBase": RedistBase, "RedistSizePerCPU": RedistSizePerCPU} {
		if v%0x10000 != 0 {
			t.Errorf("%s = %#x is not 64 KiB aligned", name, v)
		}
	}
	if DistBase+DistSize > RedistBase {
		t.Errorf("distributor [%#x, %#x) overlaps the redistributors at %#x", DistBase, DistBase+DistSize, RedistBase)
	}
}

func TestNewLayout(t *testing.T) {
	for _, n := range []int{-1, 0, 124, 1000} {
		if l, err := NewLayout(n); err == nil || !strings.Contains(err.Error(), "1 to 123") {
			t.Errorf("NewLayout(%d) = %+v, %v; want an error naming the range 1 to 123", n, l, err)
		}
	}
	for n, want := range map[int]uint64{1: 0x20000, 4: 0x80000, 123: 0xf60000} {
		l, err := NewLayout(n)
		if err != nil {
			t.Fatalf("NewLayout(%d): %v", n, err)
		}
		if l.VCPUs != n || l.NumIRQs != 128 {
			t.Errorf("NewLayout(%d) = %+v, want VCPUs %d, NumIRQs 128", n, l, n)
		}
		if got := l.RedistSize(); got != want {
			t.Errorf("NewLayout(%d).RedistSize() = %#x, want %#x", n, got, want)
		}
		if RedistBase+l.RedistSize() > RedistLimit {
			t.Errorf("%d redistributors run past %#x", n, RedistLimit)
		}
	}
}

func TestAllocSPI(t *testing.T) {
	for _, tt := range []struct {
		numIRQs uint32
		spis    int
	}{
		{128, 96},
		{64, 32},
		{1024, 988}, // INTIDs 1020-1023 are special
		{16, 0},     // misconfigured: no SPI range at all
	} {
		l, err := NewLayout(1)
		if err != nil {
			t.Fatal(err)
		}
		l.NumIRQs = tt.numIRQs
		for want := range SPI(tt.spis) {
			got, err := l.AllocSPI()
			if err != nil || got != want {
				t.Fatalf("NumIRQs %d: AllocSPI() = %v, %v; want %v", tt.numIRQs, got, err, want)
			}
		}
		if got, err := l.AllocSPI(); err == nil {
			t.Errorf("NumIRQs %d: AllocSPI() after %d SPIs = %v, want an error", tt.numIRQs, tt.spis, got)
		}
	}
}
