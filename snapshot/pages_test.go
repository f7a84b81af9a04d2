package snapshot

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeProbe answers from hold, a page at a time from page first; with
// short, one page short.
type fakeProbe struct {
	first int
	hold  []bool
	short bool
}

func (p fakeProbe) mayHold(data []byte) []bool {
	ps := uintptr(pageSize)
	from, to := int(addrOf(data)/ps)-p.first, int((addrOf(data)+uintptr(len(data))+ps-1)/ps)-p.first
	if p.short {
		to--
	}
	return p.hold[from:to]
}

func (fakeProbe) Close() error { return nil }

// TestZeroBlocks: a block is skipped only when every page under it may not
// hold data, whatever the block size, page size and alignment.
func TestZeroBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	buf := make([]byte, 64*pageSize)
	first := int(addrOf(buf) / uintptr(pageSize))
	for iter := range 200 {
		bs := []int{pageSize / 4, pageSize / 2, pageSize, 2 * pageSize, 4 * pageSize}[rng.IntN(5)]
		if bs < minBlockSize {
			continue
		}
		off := rng.IntN(8) * min(bs, 4096) // not always page-aligned
		data := buf[off : off+(len(buf)-off-pageSize)/bs*bs]
		hold := make([]bool, len(buf)/pageSize+1)
		for i := range hold {
			hold[i] = rng.IntN(3) == 0
		}
		p := fakeProbe{first: first, hold: hold}
		skip := zeroBlocks(p, data, bs)
		for j := range len(data) / bs {
			a := addrOf(data) + uintptr(j*bs)
			want := true
			for pg := int(a / uintptr(pageSize)); pg <= int((a+uintptr(bs)-1)/uintptr(pageSize)); pg++ {
				want = want && !hold[pg-first]
			}
			if skip.Has(j) != want {
				t.Fatalf("%d: bs %d offset %d: block %d skipped %v, want %v", iter, bs, off, j, skip.Has(j), want)
			}
		}
	}
	if zeroBlocks(nil, buf, pageSize) != nil || zeroBlocks(fakeProbe{first: first, hold: make([]bool, 65), short: true}, buf, pageSize) != nil {
		t.Error("zeroBlocks skips blocks without a probe, or with a short answer")
	}
}

// noHugePages keeps a touched page of b from bringing in a transparent huge
// page around it, for the tests that expect given pages to be skipped (set
// in pages_linux_test.go).
var noHugePages = func(b []byte) {}

func mapAnon(t *testing.T, size, flags int) []byte {
	t.Helper()
	ram, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, flags|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(ram) })
	noHugePages(ram)
	return ram
}

// touch does one of the things a guest does to a block: leaves it alone (0),
// fills it (1), writes one byte in one of its pages (2), fills and clears it
// (3), reads it (4), fills it and has the host discard it (5), fills it and
// has the host discard its first page (6). It reports whether the block has
// surely not been touched since the host last backed it (0, 5: the
// pagemap probe must skip it) and whether it may have been (1, 2, 3, 6: it
// must not; 4 maps the shared zero page, either way).
func touch(t *testing.T, rng *rand.Rand, b []byte, kind int) (untouched, touched bool) {
	switch kind {
	case 1, 3, 5, 6:
		fillRandom(rng, b)
	case 2:
		b[rng.IntN(len(b))] = byte(1 + rng.IntN(255))
	case 4:
		for i := 0; i < len(b); i += pageSize {
			sink += b[i]
		}
	}
	switch kind {
	case 3:
		clear(b)
	case 5:
		madvise(t, b, unix.MADV_DONTNEED)
	case 6:
		madvise(t, b[:pageSize], unix.MADV_DONTNEED)
	}
	return kind == 0 || kind == 5, kind != 0 && kind != 4 && kind != 5
}

var sink byte

func madvise(t *testing.T, b []byte, advice int) {
	if err := unix.Madvise(b, advice); err != nil {
		t.Fatal(err)
	}
}

// checkSkips checks the blocks the probe of ram skips, before anything reads
// ram: none may have been touched, and on Linux every untouched one is.
func checkSkips(t *testing.T, ram []byte, bs int, untouched, touched Bitmap) {
	t.Helper()
	p := newProbe(ram)
	if p == nil {
		if runtime.GOOS == "linux" || runtime.GOOS == "darwin" {
			t.Fatal("no page probe on this host")
		}
		return
	}
	defer p.Close()
	skip := zeroBlocks(p, ram, bs)
	if skip == nil {
		t.Fatal("the probe cannot tell")
	}
	for j := range len(ram) / bs {
		switch {
		case skip.Has(j) && touched.Has(j):
			t.Errorf("block %d was written, and would be skipped", j)
		case !skip.Has(j) && untouched.Has(j) && runtime.GOOS == "linux":
			t.Errorf("block %d was never touched, and would be read", j)
		}
	}
}

// checkSnapshot snapshots ram and checks the result against a plain read of
// ram made afterwards: the memory file's image and block table, and what
// Verify, Load and LoadMemory make of it; then the same for a diff carrying
// every block.
func checkSnapshot(t *testing.T, ram []byte, bs int) {
	t.Helper()
	dir := t.TempDir()
	full, diff := files(dir, "full"), files(dir, "diff")
	st := newState(t, "")
	st.Header.RAMSize, st.Machine.Config.MemoryMiB = uint64(len(ram)), uint64(len(ram)>>20)
	if err := Create(full, st, ram, CreateOptions{BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	all := NewBitmap(len(ram) / bs)
	for i := range all {
		all[i] = 0xff
	}
	std := newState(t, st.Header.ID)
	std.Header.RAMSize, std.Machine.Config.MemoryMiB = st.Header.RAMSize, st.Machine.Config.MemoryMiB
	if err := Create(diff, std, ram, CreateOptions{BlockSize: bs, Dirty: all}); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(ram) // the plain read, which faults everything in
	if !bytes.Equal(image(t, full.Memory, len(ram)), want) {
		t.Error("the memory file's image differs from the RAM")
	}
	if blocks, _ := nonZero(want, bs); !bytes.Equal(footerOf(t, full.Memory).Blocks, blocks) {
		t.Error("the block table does not list exactly the non-zero blocks")
	}
	for _, f := range []Files{full, diff} {
		if _, err := Verify(f.State, f.Memory); err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
	if _, err := Load(kvm, full, diff); err != nil {
		t.Fatalf("Load: %v", err)
	}
	got := make([]byte, len(ram))
	fillRandom(rand.New(rand.NewPCG(1, 1)), got)
	if err := LoadMemory(full.Memory, got); err != nil || !bytes.Equal(got, want) {
		t.Errorf("LoadMemory(full): %v, or it differs from the RAM", err)
	}
	fillRandom(rand.New(rand.NewPCG(1, 1)), got)
	if err := LoadMemory(diff.Memory, got); err != nil || !bytes.Equal(got, want) {
		t.Errorf("LoadMemory(diff of every block): %v, or it differs from the RAM", err)
	}
}

// TestSnapshotAnonymous snapshots anonymous RAM (a booted VM's) of which
// some blocks were touched in every way touch knows, and some never.
func TestSnapshotAnonymous(t *testing.T) {
	const size = 8 << 20 // two scan segments
	bs := DefaultBlockSize()
	rng := rand.New(rand.NewPCG(13, 14))
	ram := mapAnon(t, size, unix.MAP_PRIVATE)
	untouched, touched := NewBitmap(size/bs), NewBitmap(size/bs)
	for j := range size / bs {
		kind := rng.IntN(7)
		if rng.IntN(2) == 0 {
			kind = 0 // mostly untouched, as guests are
		}
		u, w := touch(t, rng, ram[j*bs:(j+1)*bs], kind)
		if u {
			untouched.Set(j)
		}
		if w {
			touched.Set(j)
		}
	}
	checkSkips(t, ram, bs, untouched, touched)
	checkSnapshot(t, ram, bs)
}

// TestSnapshotFileMapping snapshots RAM restored from a file (a private file
// mapping, at an offset into the file) whose pages hold data or holes, with
// private writes and discards on top. With replaced, another file takes the
// mapped file's name first, so the path names the wrong file.
func TestSnapshotFileMapping(t *testing.T) {
	for _, replaced := range []bool{false, true} {
		const size = 8 << 20
		bs := DefaultBlockSize()
		rng := rand.New(rand.NewPCG(15, 16))
		dir := t.TempDir()
		path := filepath.Join(dir, "ram")
		off := 3 * pageSize
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(int64(off + size)); err != nil {
			t.Fatal(err)
		}
		// Data in the file: whole blocks, or single pages.
		filed := NewBitmap(size / bs)
		page := make([]byte, pageSize)
		for j := range size / bs {
			switch rng.IntN(4) {
			case 0:
				b := make([]byte, bs)
				fillRandom(rng, b)
				_, err = f.WriteAt(b, int64(off+j*bs))
				filed.Set(j)
			case 1:
				fillRandom(rng, page)
				_, err = f.WriteAt(page, int64(off+j*bs+rng.IntN(bs/pageSize)*pageSize))
				filed.Set(j)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		ram, err := unix.Mmap(int(f.Fd()), int64(off), size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		defer unix.Munmap(ram)
		noHugePages(ram)
		if replaced {
			other := filepath.Join(dir, "other")
			if err := os.WriteFile(other, make([]byte, off+size), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}
		sparse := holesWork(t, dir)
		untouched, touched := NewBitmap(size/bs), NewBitmap(size/bs)
		for j := range size / bs {
			kind := rng.IntN(7)
			if rng.IntN(2) == 0 {
				kind = 0
			}
			u, w := touch(t, rng, ram[j*bs:(j+1)*bs], kind)
			if u && !filed.Has(j) && sparse {
				untouched.Set(j) // a hole in the file, no private copy
			}
			if w || filed.Has(j) {
				touched.Set(j)
			}
		}
		if !replaced || os.Geteuid() == 0 { // as root, the probe opens the mapped file itself
			checkSkips(t, ram, bs, untouched, touched)
		} else {
			checkSkips(t, ram, bs, NewBitmap(size/bs), touched)
		}
		checkSnapshot(t, ram, bs)
	}
}

// TestSnapshotSharedAnonymous: pages of shared memory may live outside the
// process, so none is skipped.
func TestSnapshotSharedAnonymous(t *testing.T) {
	const size = 4 << 20
	bs := DefaultBlockSize()
	ram := mapAnon(t, size, unix.MAP_SHARED)
	copy(ram[5*bs:], "data")
	all := NewBitmap(size / bs)
	for i := range all {
		all[i] = 0xff
	}
	if runtime.GOOS == "linux" {
		checkSkips(t, ram, bs, NewBitmap(size/bs), all)
	}
	checkSnapshot(t, ram, bs)
}
