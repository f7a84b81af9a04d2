package hvf

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
)

// Dirty-page tracking for diff snapshots. Hypervisor.framework has no dirty
// log, so the tracker write-protects guest RAM (hv_vm_protect without
// HV_MEMORY_WRITE); the guest's first write to a page then exits as a
// stage-2 permission fault, and the vCPU records the page, makes it writable
// again and retries the instruction. Pages are pageSize (16 KiB), the
// stage-2 granule.
//
// Writes squib itself makes to guest RAM through its host mapping (device
// DMA) do not fault and are not seen here.

// protector changes the stage-2 permissions of [ipa, ipa+size):
// hv_vm_protect on a Mac, a fake in tests.
type protector interface {
	protect(ipa, size uint64, flags uint64) error
}

const (
	writeProtected = HV_MEMORY_READ | HV_MEMORY_EXEC
	writable       = HV_MEMORY_READ | HV_MEMORY_WRITE | HV_MEMORY_EXEC
)

// dirtyTracker is the dirty-page state of one VM's RAM.
type dirtyTracker struct {
	p          protector
	base, size uint64 // RAM, in pageSize multiples

	mu   sync.Mutex
	on   bool
	bits []uint64 // bit i: page i was written since the last collect
}

func newDirtyTracker(p protector, base, size uint64) *dirtyTracker {
	return &dirtyTracker{p: p, base: base, size: size}
}

// start write-protects all of RAM and clears the bitmap.
func (t *dirtyTracker) start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.on {
		return errors.New("dirty-page tracking is already on")
	}
	if err := t.p.protect(t.base, t.size, writeProtected); err != nil {
		return fmt.Errorf("write-protecting guest RAM: %w", err)
	}
	t.on = true
	t.bits = make([]uint64, (t.size/pageSize+63)/64)
	return nil
}

// stop makes all of RAM writable again and drops the bitmap.
func (t *dirtyTracker) stop() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.on {
		return nil
	}
	t.on, t.bits = false, nil
	if err := t.p.protect(t.base, t.size, writable); err != nil {
		return fmt.Errorf("unprotecting guest RAM: %w", err)
	}
	return nil
}

// fault handles a permission fault at ipa: it records the page as dirty and
// makes it writable, so that the faulting instruction succeeds when the vCPU
// retries it. It reports false when tracking is off or ipa is not RAM: then
// the fault is not the tracker's.
func (t *dirtyTracker) fault(ipa uint64) (bool, error) {
	if ipa < t.base || ipa-t.base >= t.size {
		return false, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.on {
		return false, nil
	}
	page := (ipa - t.base) / pageSize
	t.bits[page/64] |= 1 << (page % 64)
	// Unprotect even if the bit was already set: another vCPU may have
	// faulted on the page just before this one saw it made writable.
	if err := t.p.protect(t.base+page*pageSize, pageSize, writable); err != nil {
		return false, fmt.Errorf("unprotecting dirty page at IPA %#x: %w", t.base+page*pageSize, err)
	}
	return true, nil
}

// collect returns the pages written since start or the previous collect (bit
// i of the bitmap is the pageSize page at base + i*pageSize) and
// write-protects them again, so the next collect sees only later writes.
// Holding the lock throughout makes a concurrent fault land either before
// (in this bitmap) or after (in the next).
func (t *dirtyTracker) collect() ([]uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.on {
		return nil, errors.New("dirty-page tracking is off")
	}
	dirty := t.bits
	t.bits = make([]uint64, len(dirty))
	for _, r := range pageRuns(dirty) {
		if err := t.p.protect(t.base+r[0]*pageSize, (r[1]-r[0])*pageSize, writeProtected); err != nil {
			// The pages stay dirty: a later collect retries them.
			for i, w := range dirty {
				t.bits[i] |= w
			}
			return nil, fmt.Errorf("write-protecting dirty pages: %w", err)
		}
	}
	return dirty, nil
}

// pageRuns returns the runs of set bits in a bitmap as [first, end) page
// indexes, so consecutive dirty pages cost one hv_vm_protect.
func pageRuns(bitmap []uint64) [][2]uint64 {
	var runs [][2]uint64
	for i, w := range bitmap {
		for w != 0 {
			start := uint64(bits.TrailingZeros64(w))
			n := uint64(bits.TrailingZeros64(^(w >> start)))
			first := uint64(i)*64 + start
			if k := len(runs); k > 0 && runs[k-1][1] == first {
				runs[k-1][1] += n
			} else {
				runs = append(runs, [2]uint64{first, first + n})
			}
			if start+n == 64 {
				w = 0
			} else {
				w &^= (1<<n - 1) << start
			}
		}
	}
	return runs
}
