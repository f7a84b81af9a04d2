package hvf

import (
	"errors"
	"fmt"
	"math/bits"
)

// Pure parts of the snapshot support (hv.StateVCPU, hv.StateVM), tested on
// any host.

// savedSysRegs are the system registers SaveState keeps in snapshot.VCPU.Sys,
// keyed by encoding: the EL1 state a Linux guest needs to continue, the ten
// pointer-authentication key halves Hypervisor.framework exposes (a Linux
// guest keeps per-task keys in them) and the software context numbers
// (macOS 15.2 and later). SP_EL0, SP_EL1, ELR_EL1, SPSR_EL1, MPIDR_EL1 and
// the timer have fields of their own; ID registers are saved apart (idRegs).
var savedSysRegs = []SysReg{
	SCTLR_EL1, CPACR_EL1, TTBR0_EL1, TTBR1_EL1, TCR_EL1, AFSR0_EL1, AFSR1_EL1,
	ESR_EL1, FAR_EL1, PAR_EL1, MAIR_EL1, AMAIR_EL1, VBAR_EL1, CONTEXTIDR_EL1,
	TPIDR_EL1, CNTKCTL_EL1, CSSELR_EL1, TPIDR_EL0, TPIDRRO_EL0, MDSCR_EL1,
	APIAKEYLO_EL1, APIAKEYHI_EL1, APIBKEYLO_EL1, APIBKEYHI_EL1,
	APDAKEYLO_EL1, APDAKEYHI_EL1, APDBKEYLO_EL1, APDBKEYHI_EL1,
	APGAKEYLO_EL1, APGAKEYHI_EL1,
	SCXTNUM_EL1, SCXTNUM_EL0,
}

// blockBitmap converts the dirty tracker's bitmap (bit i: the pageSize page
// i of RAM) into one bit per block of blockSize bytes for size bytes of RAM.
func blockBitmap(pages []uint64, blockSize, size uint64) ([]uint64, error) {
	if err := checkBlockSize(blockSize); err != nil {
		return nil, err
	}
	per := blockSize / pageSize
	nblocks := (size + blockSize - 1) / blockSize
	out := make([]uint64, (nblocks+63)/64)
	for w, word := range pages {
		for word != 0 {
			b := uint64(bits.TrailingZeros64(word))
			word &^= 1 << b
			page := uint64(w)*64 + b
			if page*pageSize >= size {
				return nil, errors.New("dirty bitmap reports a page beyond guest RAM")
			}
			blk := page / per
			out[blk/64] |= 1 << (blk % 64)
		}
	}
	return out, nil
}

// checkBlockSize accepts a dirty-tracking block size that is a multiple of
// the 16 KiB stage-2 page.
func checkBlockSize(blockSize uint64) error {
	if blockSize < pageSize || blockSize%pageSize != 0 {
		return fmt.Errorf("dirty block size %d is not a multiple of the host page size %d", blockSize, pageSize)
	}
	return nil
}
