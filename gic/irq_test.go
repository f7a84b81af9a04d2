package gic

import "testing"

// Worked examples from kvm-arm64.md §1.13 and §5.1.
func TestNumbering(t *testing.T) {
	if got := SPI(1).INTID(); got != 33 {
		t.Errorf("SPI 1 INTID = %d, want 33", got)
	}
	if got := KVMIRQLineSPI(SPI(1).INTID()); got != 0x01000021 {
		t.Errorf("KVMIRQLineSPI(33) = %#08x, want 0x01000021", got)
	}
	if got := PPI(11).INTID(); got != 27 {
		t.Errorf("PPI 11 INTID = %d, want 27", got)
	}
	if got := KVMIRQLineSPI(1019); got != 0x010003FB {
		t.Errorf("KVMIRQLineSPI(1019) = %#08x, want 0x010003fb", got)
	}
	if got := SPI(16).FDTCells(IRQEdgeRising); got != [3]uint32{0, 16, 1} {
		t.Errorf("SPI 16 edge cells = %v, want [0 16 1]", got)
	}
	if got := PPIMaintenance.FDTCells(IRQLevelHigh); got != [3]uint32{1, 9, 4} {
		t.Errorf("maintenance cells = %v, want [1 9 4]", got)
	}
	if got, want := SPI(2).String(), "SPI 2 (INTID 34)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := PPIPhysTimer.String(), "PPI 14 (INTID 30)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// The INTIDs of hvf.md §3.8 (hv_gic_intid_t) and the arm,armv8-timer order.
func TestPrivateINTIDs(t *testing.T) {
	for p, want := range map[PPI]uint32{
		PPIMaintenance:     25,
		PPIHypTimer:        26,
		PPIVirtTimer:       27,
		PPISecurePhysTimer: 29,
		PPIPhysTimer:       30,
	} {
		if got := p.INTID(); got != want {
			t.Errorf("%v: INTID %d, want %d", p, got, want)
		}
	}
	if got, want := TimerPPIs(), [4]PPI{13, 14, 11, 10}; got != want {
		t.Errorf("TimerPPIs() = %v, want %v", got, want)
	}
}
