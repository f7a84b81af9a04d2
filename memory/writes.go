package memory

import (
	"errors"
	"sync/atomic"
)

// writeLog is one bit per block of RAM, set when squib writes into the
// block. Bits are set with atomic OR and taken with atomic swaps, so writers
// and TakeWrites need no lock.
type writeLog struct {
	block uint64
	words []atomic.Uint64
}

// TrackWrites starts recording the blocks of blockSize bytes that squib
// writes into (through Mutable, Write and AtomicStore16). The VMM turns it
// on together with the backend's dirty log (hv.StateVM.TrackDirty), with the
// same block size, so the two logs can be merged word by word.
func (r *RAM) TrackWrites(blockSize uint64) error {
	if blockSize == 0 {
		return errors.New("write-log block size 0")
	}
	blocks := (r.Size() + blockSize - 1) / blockSize
	l := &writeLog{block: blockSize, words: make([]atomic.Uint64, (blocks+63)/64)}
	if !r.writes.CompareAndSwap(nil, l) {
		return errors.New("guest RAM writes are already tracked")
	}
	return nil
}

// TakeWrites returns the blocks written since TrackWrites or the previous
// TakeWrites, in the layout of hv.StateVM.CollectDirty (bit i of word i/64:
// the block at Base + i*blockSize), and starts a new interval. It returns
// nil when writes are not tracked.
//
// A write is logged when Mutable hands out its bytes, before they are
// written: a TakeWrites that runs while a writer still holds bytes may put
// the block in the interval that is ending, not the next one. Take the log
// once the writers have stopped (the devices are quiesced).
func (r *RAM) TakeWrites() []uint64 {
	l := r.writes.Load()
	if l == nil {
		return nil
	}
	out := make([]uint64, len(l.words))
	for i := range l.words {
		out[i] = l.words[i].Swap(0)
	}
	return out
}

// logWrite records a write of n bytes at offset off into RAM, a range
// already checked to lie inside it.
func (r *RAM) logWrite(off, n uint64) {
	l := r.writes.Load()
	if l == nil || n == 0 {
		return
	}
	first, last := off/l.block, (off+n-1)/l.block
	for w := first / 64; w <= last/64; w++ {
		lo, hi := max(first, w*64)-w*64, min(last, w*64+63)-w*64
		mask := (^uint64(0) >> (63 - hi)) &^ (1<<lo - 1) // bits lo..hi
		// Most writes land in blocks already marked: a load spares the
		// cache line an atomic read-modify-write.
		if l.words[w].Load()&mask != mask {
			l.words[w].Or(mask)
		}
	}
}
