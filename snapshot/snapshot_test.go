package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The chain tests use the default block size and this host's page size.
var (
	chainBS = DefaultBlockSize()
	kvm     = Expect{Backend: "kvm"}
)

// newState returns a machine state for 1 MiB of RAM, ready for Create.
func newState(t testing.TB, parent string) *State {
	s := testState(t)
	s.Header = Header{Backend: "kvm", BackendVersion: "6.8.0", RAMBase: 0x4000_0000, RAMSize: 1 << 20, Parent: parent}
	return s
}

func files(dir, name string) Files {
	return Files{State: filepath.Join(dir, name+".state"), Memory: filepath.Join(dir, name+".mem")}
}

// dirty changes k random blocks of ram and returns the bitmap of blocks
// written: some get random data, some become zero, some are rewritten with
// what they held.
func dirty(rng *rand.Rand, ram []byte, k int) Bitmap {
	bm := NewBitmap(len(ram) / chainBS)
	for range k {
		i := rng.IntN(len(ram) / chainBS)
		b := ram[i*chainBS : (i+1)*chainBS]
		switch rng.IntN(3) {
		case 0:
			fillRandom(rng, b)
		case 1:
			clear(b)
		}
		bm.Set(i)
	}
	return bm
}

// chain writes a full snapshot and two diffs of changing RAM, and a full
// snapshot of the final RAM for comparison.
func chain(t *testing.T, dir string) (base, d1, d2, full Files, ram []byte, st2 *State) {
	rng := rand.New(rand.NewPCG(7, 8))
	ram = randomRAM(rng, 64, chainBS)
	base, d1, d2, full = files(dir, "base"), files(dir, "d1"), files(dir, "d2"), files(dir, "full")
	st0 := newState(t, "")
	if err := Create(base, st0, ram, CreateOptions{BlockSize: chainBS}); err != nil {
		t.Fatal(err)
	}
	st1 := newState(t, st0.Header.ID)
	if err := Create(d1, st1, ram, CreateOptions{BlockSize: chainBS, Dirty: dirty(rng, ram, 20)}); err != nil {
		t.Fatal(err)
	}
	st2 = newState(t, st1.Header.ID)
	st2.Machine.VCPUs[0].PC += 4 // the newest state wins
	if err := Create(d2, st2, ram, CreateOptions{BlockSize: chainBS, Dirty: dirty(rng, ram, 20)}); err != nil {
		t.Fatal(err)
	}
	if err := Create(full, newState(t, ""), ram, CreateOptions{BlockSize: chainBS}); err != nil {
		t.Fatal(err)
	}
	return base, d1, d2, full, ram, st2
}

// TestDiffMerge: base + two diffs, merged at once or one at a time, or
// restored as a chain, give the RAM a full snapshot of the final moment has.
func TestDiffMerge(t *testing.T) {
	dir := t.TempDir()
	base, d1, d2, full, ram, st2 := chain(t, dir)
	want := footerOf(t, full.Memory)

	out := files(dir, "merged")
	merged, err := Merge(base, []Files{d1, d2}, out)
	if err != nil {
		t.Fatal(err)
	}
	step := files(dir, "step")
	if _, err := Merge(base, []Files{d1}, step); err != nil {
		t.Fatal(err)
	}
	if _, err := Merge(step, []Files{d2}, step); err != nil { // in place: out names the inputs
		t.Fatal(err)
	}
	for _, f := range []Files{out, step} {
		ft := footerOf(t, f.Memory)
		if !bytes.Equal(image(t, f.Memory, len(ram)), ram) || !bytes.Equal(ft.Blocks, want.Blocks) || !bytes.Equal(ft.Sums, want.Sums) {
			t.Errorf("%s: the merged memory differs from a full snapshot's", f.Memory)
		}
		if _, err := Verify(f.State, f.Memory); err != nil {
			t.Errorf("Verify(%s): %v", f.State, err)
		}
		s, err := Load(kvm, f)
		if err != nil {
			t.Fatal(err)
		}
		if h := s.Header; h.ID != st2.Header.ID || h.Type != Full || h.Parent != "" || !reflect.DeepEqual(s.Machine, st2.Machine) {
			t.Errorf("merged header %+v; want the newest diff's state as a full snapshot", h)
		}
	}
	if merged.Header.Memory.FileID == st2.Header.Memory.FileID {
		t.Error("the merged memory file kept the diff's file ID")
	}

	// Restore the chain directly: map the base, apply the diffs.
	s, err := Load(kvm, base, d1, d2)
	if err != nil || s.Header.ID != st2.Header.ID {
		t.Fatalf("Load(chain) = %v, %v", s, err)
	}
	mem, err := MapMemory(base.Memory)
	if err != nil {
		t.Fatal(err)
	}
	defer Unmap(mem)
	for _, d := range []Files{d1, d2} {
		if err := LoadMemory(d.Memory, mem); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(mem, ram) {
		t.Error("base + diffs restored differs from the final RAM")
	}
}

// TestDiffSize: a diff carries the dirtied blocks only, and takes disk space
// for those that are not zero.
func TestDiffSize(t *testing.T) {
	dir := t.TempDir()
	_, d1, _, _, _, _ := chain(t, dir)
	ft := footerOf(t, d1.Memory)
	if got, max := ft.Blocks.Count(), 20; got == 0 || got > max {
		t.Errorf("diff carries %d blocks; want 1..%d", got, max)
	}
	if holesWork(t, dir) {
		if got, max := allocated(t, d1.Memory), int64(ft.Blocks.Count()*chainBS+16<<10); got > max {
			t.Errorf("diff of %d blocks takes %d bytes; want at most %d", ft.Blocks.Count(), got, max)
		}
	}
	if _, err := Verify(d1.State, d1.Memory); err != nil {
		t.Errorf("Verify(diff): %v", err)
	}
	if _, err := MapMemory(d1.Memory); !errors.Is(err, ErrMismatch) {
		t.Errorf("MapMemory(diff) = %v; want ErrMismatch", err)
	}
}

func TestChainRefuses(t *testing.T) {
	dir := t.TempDir()
	base, d1, d2, full, _, _ := chain(t, dir)
	tests := []struct {
		name  string
		chain []Files
		msg   string
	}{
		{"diff first", []Files{d1}, "merge the two into a full snapshot"},
		{"skipped diff", []Files{base, d2}, "but follows snapshot"},
		{"diff twice", []Files{base, d1, d1}, "but follows snapshot"},
		{"full after full", []Files{base, full}, "a full snapshot cannot follow"},
	}
	for _, tt := range tests {
		_, err := Load(kvm, tt.chain...)
		if !errors.Is(err, ErrParent) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: Load() = %v; want ErrParent mentioning %q", tt.name, err, tt.msg)
		}
	}
	if _, err := Merge(base, []Files{d2}, files(dir, "x")); !errors.Is(err, ErrParent) {
		t.Errorf("Merge of a diff onto the wrong base: %v; want ErrParent", err)
	}

	// A damaged data block in a diff stops the merge.
	ft := footerOf(t, d1.Memory)
	i := 0
	for !ft.Blocks.Has(i) {
		i++
	}
	f, err := os.OpenFile(d1.Memory, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damage"), int64(i*chainBS)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Merge(base, []Files{d1}, files(dir, "x")); !errors.Is(err, ErrChecksum) {
		t.Errorf("Merge of a damaged diff: %v; want ErrChecksum", err)
	}
	for _, name := range names(t, dir) {
		if strings.HasPrefix(name, "x.") || strings.HasPrefix(name, ".x.") {
			t.Errorf("a refused merge left %s behind", name)
		}
	}
}

// TestLoadRefuses covers missing, mismatched and damaged files and a host
// that cannot restore the snapshot.
func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	base, _, _, full, _, _ := chain(t, dir)
	copyFile := func(from, name string, edit func(b []byte) []byte) string {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, edit(b), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	same := func(b []byte) []byte { return b }
	flipLast := func(b []byte) []byte { b[len(b)-9] ^= 1; return b } // the footer's CRC-64
	truncated := func(b []byte) []byte { return b[:len(b)/2] }
	tests := []struct {
		name string
		e    Expect
		f    Files
		want error
		msg  string
	}{
		{"missing memory", kvm, Files{base.State, filepath.Join(dir, "nope")}, ErrNoMemory, "nope: memory file missing: no such file"},
		{"other memory", kvm, Files{base.State, full.Memory}, ErrMismatch, "the state file " + footerOf(t, base.Memory).Snapshot},
		{"truncated memory", kvm, Files{base.State, copyFile(base.Memory, "t.mem", truncated)}, ErrNotSnapshot, "or truncated"},
		{"footer bit flip", kvm, Files{base.State, copyFile(base.Memory, "f.mem", flipLast)}, ErrChecksum, "CRC-64"},
		{"state as memory", kvm, Files{base.State, base.State}, ErrNotSnapshot, "no memory file footer"},
		{"memory as state", kvm, Files{base.Memory, base.Memory}, ErrNotSnapshot, "magic"},
		{"truncated state", kvm, Files{copyFile(base.State, "t.state", truncated), base.Memory}, ErrTruncated, "t.state: file truncated"},
		{"wrong backend", Expect{Backend: "hvf"}, base, ErrBackend, `saved by the "kvm" backend`},
		{"wrong page size", Expect{Backend: "kvm", PageSize: 4 * os.Getpagesize()}, base, ErrPageSize, fmt.Sprintf("has %d-byte pages", 4*os.Getpagesize())},
		{"copy is fine", kvm, Files{copyFile(base.State, "c.state", same), copyFile(base.Memory, "c.mem", same)}, nil, ""},
	}
	for _, tt := range tests {
		_, err := Load(tt.e, tt.f)
		if tt.want == nil && err != nil || tt.want != nil && (!errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg)) {
			t.Errorf("%s: Load() = %v; want %v mentioning %q", tt.name, err, tt.want, tt.msg)
		}
	}
}

func TestCreateRefusesInvalidState(t *testing.T) {
	dir := t.TempDir()
	s := newState(t, "")
	s.Machine.Config.VCPUs = 5
	if err := Create(files(dir, "x"), s, make([]byte, 1<<20), CreateOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Create() = %v; want ErrCorrupt", err)
	}
	if err := Create(files(dir, "x"), newState(t, ""), make([]byte, 2<<20), CreateOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Create() with RAM of the wrong size = %v; want ErrCorrupt", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused snapshots left %d files behind", len(ents))
	}
}
