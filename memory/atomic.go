package memory

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// The split virtqueue's shared indices (avail and used flags and idx,
// used_event, avail_event) are little-endian 16-bit fields at 2-aligned
// guest addresses, read and written by the guest while squib reads and
// writes them. Go's sync/atomic has no 16-bit operations, so AtomicLoad16
// and AtomicStore16 work on the naturally aligned 32-bit word that contains
// the field: a 2-aligned field never straddles a 4-aligned word.
//
//   - Load: one atomic 32-bit load of the word. An aligned word load is
//     single-copy atomic, and on arm64 it sees each of the guest's (aligned
//     16-bit) stores either whole or not at all, so the field is never torn.
//   - Store: the other half of the word may be the guest's (the two bytes
//     after avail_event lie outside the used ring), so the word is not
//     simply overwritten: a compare-and-swap replaces it only if it has not
//     changed since it was loaded, and is retried if the guest changed the
//     other half meanwhile, up to casTries times.
//
// Ordering: Go's atomic operations are sequentially consistent (the Go
// memory model), which is what the ring protocol needs. AtomicLoad16 is an
// acquire (the ring entries and descriptors read after avail.idx are not
// read before it), AtomicStore16 a release (the used elements and buffer
// bytes written before used.idx are visible before it), and an AtomicStore16
// followed by an AtomicLoad16 is not reordered: the full barrier that
// EVENT_IDX needs between publishing used.idx and reading used_event, and
// between writing avail_event and re-reading avail.idx (virtio 1.2
// §2.7.10). On arm64 these are LDAR and CASAL (or an LDAXR/STLXR loop).
//
// The field's bytes are little-endian in guest memory whatever the host's
// byte order: the word is decoded through binary.NativeEndian.

// casTries bounds AtomicStore16's compare-and-swap loop. The other half of
// the word changes only if the guest keeps writing memory next to a ring
// field; a guest that does so without pause must not hold squib forever.
const casTries = 1000

// AtomicLoad16 atomically reads the little-endian 16-bit field at gpa, which
// must be 2-aligned, with acquire ordering (see above).
func (r *RAM) AtomicLoad16(gpa uint64) (uint16, error) {
	w, k, err := r.halfword(gpa)
	if err != nil {
		return 0, err
	}
	return half(atomic.LoadUint32(w), k), nil
}

// AtomicStore16 atomically writes the little-endian 16-bit field at gpa,
// which must be 2-aligned, with release ordering (see above), leaving the
// other half of its word as the guest last wrote it. It records the write
// in the write log.
func (r *RAM) AtomicStore16(gpa uint64, v uint16) error {
	w, k, err := r.halfword(gpa)
	if err != nil {
		return err
	}
	r.logWrite(gpa-r.base, 2)
	for range casTries {
		old := atomic.LoadUint32(w)
		if atomic.CompareAndSwapUint32(w, old, withHalf(old, k, v)) {
			return nil
		}
	}
	return fmt.Errorf("guest word at %#x kept changing: %d attempts to store into it failed", gpa&^3, casTries)
}

// halfword returns the aligned host word that holds the 16-bit field at gpa,
// and the field's byte offset in it (0 or 2).
func (r *RAM) halfword(gpa uint64) (*uint32, uint, error) {
	if gpa%2 != 0 {
		return nil, 0, fmt.Errorf("16-bit guest field at %#x is not 2-byte aligned", gpa)
	}
	word := gpa &^ 3
	if !r.Contains(word, 4) {
		return nil, 0, fmt.Errorf("guest word [%#x, +4) is outside RAM [%#x, +%#x)", word, r.base, r.Size())
	}
	w := r.word32(word - r.base)
	if w == nil {
		return nil, 0, fmt.Errorf("the host mapping of guest RAM at %#x is not 4-byte aligned", word)
	}
	return w, uint(gpa - word), nil
}

// half returns the little-endian 16-bit field at byte k of w, a word as
// sync/atomic loaded it (in host byte order).
func half(w uint32, k uint) uint16 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], w)
	return binary.LittleEndian.Uint16(b[k:])
}

// withHalf returns w with the little-endian 16-bit field at byte k set to v.
func withHalf(w uint32, k uint, v uint16) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], w)
	binary.LittleEndian.PutUint16(b[k:], v)
	return binary.NativeEndian.Uint32(b[:])
}
