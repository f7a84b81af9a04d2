package hvf

import (
	"reflect"
	"testing"

	"github.com/squibvm/squib/snapshot"
)

func TestSavedSysRegs(t *testing.T) {
	seen := map[SysReg]bool{}
	for _, r := range savedSysRegs {
		if seen[r] {
			t.Errorf("%#x twice", uint16(r))
		}
		seen[r] = true
		for _, d := range []SysReg{SP_EL0, SP_EL1, ELR_EL1, SPSR_EL1, MPIDR_EL1, CNTV_CTL_EL0, CNTV_CVAL_EL0} {
			if r == d {
				t.Errorf("%s has a field of its own in snapshot.VCPU", snapshot.SysRegName(uint16(r)))
			}
		}
	}
	// The ten pointer-authentication key halves of hvf.md §3.5.
	for _, k := range []SysReg{
		APIAKEYLO_EL1, APIAKEYHI_EL1, APIBKEYLO_EL1, APIBKEYHI_EL1, APDAKEYLO_EL1,
		APDAKEYHI_EL1, APDBKEYLO_EL1, APDBKEYHI_EL1, APGAKEYLO_EL1, APGAKEYHI_EL1,
	} {
		if !seen[k] {
			t.Errorf("pointer-authentication key %s is not saved", snapshot.SysRegLabel(uint16(k)))
		}
	}
	for _, r := range savedSysRegs {
		if snapshot.IDReg(uint16(r)) {
			t.Errorf("ID register %s among the saved registers: RestoreState checks ID registers, never writes them", snapshot.SysRegLabel(uint16(r)))
		}
	}
	if uint16(TPIDR_EL0) != snapshot.SysReg(3, 3, 13, 0, 2) {
		t.Error("TPIDR_EL0 encoding")
	}
}

func TestBlockBitmap(t *testing.T) {
	const size = 4 << 20 // 256 pages
	pages := make([]uint64, 4)
	for _, p := range []int{0, 3, 4, 255} {
		pages[p/64] |= 1 << (p % 64)
	}
	got, err := blockBitmap(pages, 64<<10, size) // 4 pages a block
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{0b11 | 1<<63}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %#x, want %#x", got, want)
	}
	if got, _ := blockBitmap(pages, pageSize, size); !reflect.DeepEqual(got, pages) {
		t.Errorf("page-sized blocks: %#x", got)
	}
	for _, bad := range []uint64{0, 4096, pageSize + 4096} {
		if _, err := blockBitmap(pages, bad, size); err == nil {
			t.Errorf("block size %d accepted", bad)
		}
	}
	if _, err := blockBitmap([]uint64{1 << 9}, pageSize, 8*pageSize); err == nil {
		t.Error("a page beyond RAM was accepted")
	}
}
