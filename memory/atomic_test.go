package memory

import (
	"encoding/binary"
	"slices"
	"sync"
	"testing"
)

func TestAtomic16LeavesTheOtherHalf(t *testing.T) {
	const base = 0x8000
	mem := make([]byte, 64)
	r := adopt(base, mem)
	for i := range mem {
		mem[i] = byte(i)
	}
	for _, gpa := range []uint64{base, base + 2, base + 62} {
		before := slices.Clone(mem)
		v, err := r.AtomicLoad16(gpa)
		if err != nil {
			t.Fatal(err)
		}
		if want := binary.LittleEndian.Uint16(mem[gpa-base:]); v != want {
			t.Fatalf("AtomicLoad16(%#x) = %#x, want %#x", gpa, v, want)
		}
		if err := r.AtomicStore16(gpa, 0xbeef); err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint16(before[gpa-base:], 0xbeef)
		if !slices.Equal(mem, before) {
			t.Fatalf("AtomicStore16(%#x) wrote % x, want % x", gpa, mem, before)
		}
		if v, _ := r.AtomicLoad16(gpa); v != 0xbeef {
			t.Fatalf("AtomicLoad16(%#x) after the store = %#x", gpa, v)
		}
	}
}

func TestAtomic16Refuses(t *testing.T) {
	const base = 0x8000
	buf := make([]byte, 72)
	aligned := adopt(base, buf[:64])
	// A mapping whose host address is not 4-aligned (Go's allocator aligns
	// buf to at least 8 bytes).
	skewed := adopt(base, buf[2:66])
	// RAM whose size is not a multiple of 4: the last field's word sticks out.
	short := adopt(base, buf[:62])
	for _, c := range []struct {
		name string
		r    *RAM
		gpa  uint64
	}{
		{"odd address", aligned, base + 1},
		{"below RAM", aligned, base - 2},
		{"above RAM", aligned, base + 64},
		{"far away", aligned, ^uint64(1)},
		{"host misaligned", skewed, base},
		{"word outside RAM", short, base + 60},
	} {
		if _, err := c.r.AtomicLoad16(c.gpa); err == nil {
			t.Errorf("%s: AtomicLoad16(%#x) succeeded", c.name, c.gpa)
		}
		if err := c.r.AtomicStore16(c.gpa, 1); err == nil {
			t.Errorf("%s: AtomicStore16(%#x) succeeded", c.name, c.gpa)
		}
	}
	if !slices.Equal(buf, make([]byte, len(buf))) {
		t.Fatalf("refused stores wrote memory: % x", buf)
	}
}

func TestAtomicStore16IsLogged(t *testing.T) {
	r := adopt(0, make([]byte, 256))
	if err := r.TrackWrites(64); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AtomicLoad16(130); err != nil {
		t.Fatal(err)
	}
	if err := r.AtomicStore16(194, 7); err != nil {
		t.Fatal(err)
	}
	if got := r.TakeWrites(); !slices.Equal(got, []uint64{1 << 3}) {
		t.Fatalf("TakeWrites = %#x, want block 3 only", got)
	}
}

// TestAtomicStore16Concurrent has two goroutines store to the two halves
// of one word: neither may undo the other's stores.
func TestAtomicStore16Concurrent(t *testing.T) {
	r := adopt(0, make([]byte, 8))
	const n = 20000
	var wg sync.WaitGroup
	for _, gpa := range []uint64{4, 6} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := r.AtomicStore16(gpa, uint16(i+1)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, gpa := range []uint64{4, 6} {
		if v, _ := r.AtomicLoad16(gpa); v != n {
			t.Errorf("field at %d = %d, want %d", gpa, v, n)
		}
	}
}

func TestHalfRoundTrip(t *testing.T) {
	for _, k := range []uint{0, 2} {
		w := withHalf(0x11223344, k, 0xabcd)
		if got := half(w, k); got != 0xabcd {
			t.Errorf("half(withHalf(k=%d)) = %#x", k, got)
		}
		if got, want := half(w, 2-k), half(0x11223344, 2-k); got != want {
			t.Errorf("k=%d: the other half became %#x, want %#x", k, got, want)
		}
	}
}
