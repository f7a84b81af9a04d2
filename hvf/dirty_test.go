package hvf

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
)

// fakeProtector records hv_vm_protect calls and the resulting permission of
// every page.
type fakeProtector struct {
	mu    sync.Mutex
	base  uint64
	perm  map[uint64]uint64 // page index → flags
	calls []string
	fail  bool
}

func (f *fakeProtector) protect(ipa, size, flags uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return ErrBadArgument
	}
	if ipa%pageSize != 0 || size%pageSize != 0 || size == 0 {
		return fmt.Errorf("unaligned protect(%#x, %#x)", ipa, size)
	}
	f.calls = append(f.calls, fmt.Sprintf("%#x+%#x:%d", ipa, size, flags))
	for p := (ipa - f.base) / pageSize; p < (ipa-f.base+size)/pageSize; p++ {
		f.perm[p] = flags
	}
	return nil
}

func newTestTracker(pages uint64) (*dirtyTracker, *fakeProtector) {
	f := &fakeProtector{base: testRAMBase, perm: map[uint64]uint64{}}
	return newDirtyTracker(f, testRAMBase, pages*pageSize), f
}

func TestDirtyTracker(t *testing.T) {
	tr, f := newTestTracker(200)
	if ok, err := tr.fault(testRAMBase); ok || err != nil {
		t.Fatalf("fault while off = %v, %v; want false", ok, err)
	}
	if _, err := tr.collect(); err == nil {
		t.Error("collect while off succeeded")
	}
	if err := tr.start(); err != nil {
		t.Fatal(err)
	}
	if err := tr.start(); err == nil {
		t.Error("second start succeeded")
	}
	for p := range uint64(200) {
		if f.perm[p] != writeProtected {
			t.Fatalf("page %d not write-protected after start", p)
		}
	}
	// Writes to pages 1 (twice), 2, 63, 64 and 199; one outside RAM.
	for _, ipa := range []uint64{1 * pageSize, 1*pageSize + 8, 2*pageSize + 0x3ff8, 63 * pageSize, 64 * pageSize, 199*pageSize + 1} {
		if ok, err := tr.fault(testRAMBase + ipa); !ok || err != nil {
			t.Fatalf("fault at +%#x = %v, %v", ipa, ok, err)
		}
	}
	if ok, _ := tr.fault(testRAMBase + 200*pageSize); ok {
		t.Error("fault past RAM handled")
	}
	if ok, _ := tr.fault(testRAMBase - 1); ok {
		t.Error("fault below RAM handled")
	}
	for _, p := range []uint64{1, 2, 63, 64, 199} {
		if f.perm[p] != writable {
			t.Errorf("dirty page %d still write-protected", p)
		}
	}
	f.calls = nil
	dirty, err := tr.collect()
	if err != nil {
		t.Fatal(err)
	}
	want := make([]uint64, 4)
	want[0] = 1<<1 | 1<<2 | 1<<63
	want[1] = 1 << 0
	want[3] = 1 << (199 - 192)
	if !reflect.DeepEqual(dirty, want) {
		t.Errorf("dirty bitmap %x, want %x", dirty, want)
	}
	wantCalls := []string{
		fmt.Sprintf("%#x+%#x:%d", testRAMBase+pageSize, 2*pageSize, writeProtected),
		fmt.Sprintf("%#x+%#x:%d", testRAMBase+63*pageSize, 2*pageSize, writeProtected),
		fmt.Sprintf("%#x+%#x:%d", testRAMBase+199*pageSize, pageSize, writeProtected),
	}
	if !reflect.DeepEqual(f.calls, wantCalls) {
		t.Errorf("re-protect calls %q, want %q", f.calls, wantCalls)
	}
	if dirty, _ := tr.collect(); !reflect.DeepEqual(dirty, make([]uint64, 4)) {
		t.Errorf("second collect %x, want empty", dirty)
	}
	if err := tr.stop(); err != nil {
		t.Fatal(err)
	}
	if f.perm[5] != writable {
		t.Error("RAM not writable after stop")
	}
	if ok, _ := tr.fault(testRAMBase); ok {
		t.Error("fault after stop handled")
	}
}

func TestDirtyTrackerProtectFailure(t *testing.T) {
	tr, f := newTestTracker(8)
	tr.start()
	tr.fault(testRAMBase + 3*pageSize)
	f.fail = true
	if _, err := tr.collect(); !errors.Is(err, ErrBadArgument) {
		t.Fatalf("collect error %v, want the protect error", err)
	}
	f.fail = false
	if dirty, _ := tr.collect(); dirty[0] != 1<<3 {
		t.Errorf("page 3 lost after a failed collect: %x", dirty)
	}
	f.fail = true
	if ok, err := tr.fault(testRAMBase); ok || err == nil {
		t.Errorf("fault with failing protect = %v, %v", ok, err)
	}
}

// Faults from many vCPUs while collect runs: every page written shows up in
// some bitmap, and after the last collect every page is write-protected
// again.
func TestDirtyTrackerConcurrent(t *testing.T) {
	tr, f := newTestTracker(256)
	tr.start()
	var wg sync.WaitGroup
	for v := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 { // 7 is prime to 256: every page is written
				tr.fault(testRAMBase + uint64((v*31+i*7)%256)*pageSize)
			}
		}()
	}
	union := make([]uint64, 4)
	merge := func() {
		dirty, err := tr.collect()
		if err != nil {
			t.Error(err)
		}
		for i, w := range dirty {
			union[i] |= w
		}
	}
	for range 50 {
		merge()
	}
	wg.Wait()
	merge()
	for i, w := range union {
		if w != ^uint64(0) {
			t.Errorf("pages %d-%d: union of bitmaps %x, want all written", 64*i, 64*i+63, w)
		}
	}
	for p := range uint64(256) {
		if f.perm[p] != writeProtected {
			t.Fatalf("page %d writable after the final collect", p)
		}
	}
}

func TestPageRuns(t *testing.T) {
	for _, c := range []struct {
		bitmap []uint64
		want   [][2]uint64
	}{
		{nil, nil},
		{[]uint64{0, 0}, nil},
		{[]uint64{1}, [][2]uint64{{0, 1}}},
		{[]uint64{0b1011_0110}, [][2]uint64{{1, 3}, {4, 6}, {7, 8}}},
		{[]uint64{1 << 63, 1}, [][2]uint64{{63, 65}}},
		{[]uint64{^uint64(0), ^uint64(0), 0, 1 << 63}, [][2]uint64{{0, 128}, {255, 256}}},
		{[]uint64{^uint64(1)}, [][2]uint64{{1, 64}}},
	} {
		if got := pageRuns(c.bitmap); !reflect.DeepEqual(got, c.want) {
			t.Errorf("pageRuns(%x) = %v, want %v", c.bitmap, got, c.want)
		}
	}
}
