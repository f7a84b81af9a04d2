package vmm

import (
	"testing"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/snapshot"
)

// TestLimits: what a state file may hold (checked when it is read or
// verified) is what a restore accepts, so no snapshot verifies and then
// fails to restore for its size.
func TestLimits(t *testing.T) {
	if RAMBase+MaxRAM != 1<<40 {
		t.Errorf("RAM [%#x, +%#x) does not end at the 40-bit limit", uint64(RAMBase), uint64(MaxRAM))
	}
	if MaxRAM != snapshot.MaxRAMSize {
		t.Errorf("MaxRAM = %#x, snapshot.MaxRAMSize = %#x", uint64(MaxRAM), uint64(snapshot.MaxRAMSize))
	}
	if snapshot.MaxVCPUs != gic.MaxVCPUs() {
		t.Errorf("snapshot.MaxVCPUs = %d, the GIC layout (Prepare, Restore) holds %d", snapshot.MaxVCPUs, gic.MaxVCPUs())
	}
}
