package netdev

import "testing"

// TestTap opens a tap (made for the test: the kernel makes one on
// TUNSETIFF when the caller may) and gives it the guest's offloads.
func TestTap(t *testing.T) {
	tap, err := OpenTap("squibtest0")
	if err != nil {
		t.Skipf("no tap here: %v", err)
	}
	defer tap.Close()
	if !tap.Offloads() {
		t.Error("a tap without offloads")
	}
	for _, f := range []uint64{0, featGuestCSUM, featGuestCSUM | featGuestTSO4 | featGuestTSO6 | featGuestUFO} {
		if err := tap.SetOffloads(f); err != nil {
			t.Errorf("offloads %#x: %v", f, err)
		}
	}
	if _, err := OpenTap("a-name-too-long-for-ifreq"); err == nil {
		t.Error("a 25-byte tap name accepted")
	}
}
