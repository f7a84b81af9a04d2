package memory

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// adopt wraps a Go byte slice as guest RAM at base.
func adopt(base uint64, mem []byte) *RAM {
	return Adopt(base, mem, func([]byte) error { return nil })
}

func TestTrackWritesSetUp(t *testing.T) {
	r := adopt(0x1000, make([]byte, 4096))
	if w := r.TakeWrites(); w != nil {
		t.Fatalf("TakeWrites before TrackWrites = %v, want nil", w)
	}
	if err := r.TrackWrites(0); err == nil {
		t.Fatal("TrackWrites(0) succeeded")
	}
	if err := r.TrackWrites(512); err != nil {
		t.Fatal(err)
	}
	if err := r.TrackWrites(512); err == nil {
		t.Fatal("a second TrackWrites succeeded")
	}
	if w := r.TakeWrites(); !slices.Equal(w, []uint64{0}) {
		t.Fatalf("TakeWrites with nothing written = %v, want [0]", w)
	}
}

func TestWriteLogBlocks(t *testing.T) {
	const base, block = 0x4000_0000, 64
	r := adopt(base, make([]byte, 200*block+10)) // 201 blocks, the last one short: 4 words
	if err := r.TrackWrites(block); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Mutable(base+block-1, 2); err != nil { // blocks 0 and 1
		t.Fatal(err)
	}
	if err := r.Write(base+63*block, make([]byte, 2*block+1)); err != nil { // blocks 63..65, across a word
		t.Fatal(err)
	}
	if err := r.Write(base+200*block+9, []byte{1}); err != nil { // the last byte: block 200
		t.Fatal(err)
	}
	if _, err := r.Mutable(base+5*block, 0); err != nil { // empty: no block
		t.Fatal(err)
	}
	want := []uint64{1<<0 | 1<<1 | 1<<63, 1<<0 | 1<<1, 0, 1 << (200 - 192)}
	if got := r.TakeWrites(); !slices.Equal(got, want) {
		t.Fatalf("TakeWrites = %#x, want %#x", got, want)
	}
	if got := r.TakeWrites(); !slices.Equal(got, make([]uint64, 4)) {
		t.Fatalf("second TakeWrites = %#x, want zeros", got)
	}
}

func TestMutableRefusesOutsideRAM(t *testing.T) {
	const base = 0x1000
	r := adopt(base, make([]byte, 4096))
	if err := r.TrackWrites(256); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ gpa, n uint64 }{
		{base - 1, 2},
		{base + 4095, 2},
		{base + 4096, 1},
		{base + 16, ^uint64(0) - 8}, // gpa+n wraps around
		{^uint64(0), 2},
		{0, 1},
	} {
		if b, err := r.Mutable(c.gpa, c.n); err == nil {
			t.Errorf("Mutable(%#x, %#x) = %d bytes, want an error", c.gpa, c.n, len(b))
		}
	}
	if err := r.Write(base+4090, make([]byte, 7)); err == nil {
		t.Error("Write across the end of RAM succeeded")
	}
	if got := r.TakeWrites(); !slices.Equal(got, []uint64{0}) {
		t.Fatalf("refused writes were logged: %#x", got)
	}
}

// TestWriteLogMatchesOracle marks random ranges and compares the log with a
// block-by-block model.
func TestWriteLogMatchesOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, block := range []uint64{1, 3, 64, 100, 4096} {
		size := uint64(1 + rng.IntN(300*int(block)))
		r := adopt(0, make([]byte, size))
		if err := r.TrackWrites(block); err != nil {
			t.Fatal(err)
		}
		nblocks := (size + block - 1) / block
		for range 20 {
			want := make([]bool, nblocks)
			for range rng.IntN(8) {
				off := rng.Uint64N(size)
				n := rng.Uint64N(size - off + 1)
				if _, err := r.Mutable(off, n); err != nil {
					t.Fatal(err)
				}
				for b := off / block; n > 0 && b <= (off+n-1)/block; b++ {
					want[b] = true
				}
			}
			got := r.TakeWrites()
			if uint64(len(got)) != (nblocks+63)/64 {
				t.Fatalf("block %d: %d words for %d blocks", block, len(got), nblocks)
			}
			for b := range nblocks {
				if has := got[b/64]&(1<<(b%64)) != 0; has != want[b] {
					t.Fatalf("block size %d, RAM %d: block %d logged %v, want %v", block, size, b, has, want[b])
				}
			}
		}
	}
}
