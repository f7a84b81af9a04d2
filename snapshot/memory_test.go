package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// randomRAM returns n blocks of RAM. Each block is, at random: zero; random
// bytes; a single non-zero byte anywhere; a non-zero last byte.
func randomRAM(rng *rand.Rand, n, bs int) []byte {
	ram := make([]byte, n*bs)
	for i := range n {
		b := ram[i*bs : (i+1)*bs]
		switch rng.IntN(5) {
		case 0:
			fillRandom(rng, b)
		case 1:
			b[rng.IntN(bs)] = byte(1 + rng.IntN(255))
		case 2:
			b[bs-1] = 1
		}
	}
	return ram
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// nonZero is the oracle: the blocks of ram that are not all zero.
func nonZero(ram []byte, bs int) (Bitmap, int) {
	bm, n := NewBitmap(len(ram)/bs), 0
	for i := range len(ram) / bs {
		for _, c := range ram[i*bs : (i+1)*bs] {
			if c != 0 {
				bm.Set(i)
				n++
				break
			}
		}
	}
	return bm, n
}

// image returns the RAM image part of a memory file.
func image(t testing.TB, path string, size int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b[:size]
}

func footerOf(t testing.TB, path string) *footer {
	t.Helper()
	m, err := openMemory(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	return m.ft
}

func allocated(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// holesWork reports whether dir's file system keeps holes in sparse files.
func holesWork(t testing.TB, dir string) bool {
	path := filepath.Join(dir, "hole-probe")
	defer os.Remove(path)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	return allocated(t, path) < 1<<20
}

// TestWriteMemoryOracle is a property test of the sparse writer: for random
// RAM, the file's image equals the RAM, the footer lists exactly the non-zero
// blocks, and the disk space used is about the non-zero blocks only.
func TestWriteMemoryOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dir := t.TempDir()
	sparse := holesWork(t, dir)
	if !sparse {
		t.Logf("%s keeps no holes; not checking disk use", dir)
	}
	for iter := range 60 {
		bs := []int{4 << 10, 16 << 10, 64 << 10}[rng.IntN(3)]
		n := 1 + rng.IntN(200)
		ram := randomRAM(rng, n, bs)
		path := filepath.Join(dir, fmt.Sprintf("mem%d", iter))
		ref, err := WriteMemory(path, ram, MemoryOptions{Snapshot: NewID(), BlockSize: bs})
		if err != nil {
			t.Fatal(err)
		}
		want, data := nonZero(ram, bs)
		ft := footerOf(t, path)
		if !bytes.Equal(image(t, path, len(ram)), ram) {
			t.Fatalf("%d: the file's image differs from the RAM", iter)
		}
		if !bytes.Equal(ft.Blocks, want) || ft.FileID != ref.FileID || ref.Size != uint64(len(ram)) || ref.BlockSize != uint32(bs) {
			t.Fatalf("%d: footer %+v / ref %+v; want blocks %x", iter, ft, ref, want)
		}
		if !sparse {
			continue
		}
		fi, _ := os.Stat(path)
		tail := (fi.Size() - int64(len(ram)) + 4095) &^ 4095 // footer, in file system blocks
		lo, hi := int64(data*bs), int64(data*bs)+tail+16<<10
		if got := allocated(t, path); got < lo || got > hi {
			t.Errorf("%d: %d bytes allocated for %d non-zero %d-byte blocks; want [%d, %d]", iter, got, data, bs, lo, hi)
		}
	}
}

func TestMapMemoryCopyOnWrite(t *testing.T) {
	const bs = 16 << 10
	ram := randomRAM(rand.New(rand.NewPCG(3, 4)), 64, bs)
	path := filepath.Join(t.TempDir(), "mem")
	if _, err := WriteMemory(path, ram, MemoryOptions{Snapshot: NewID(), BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	a, err := MapMemory(path)
	if err != nil {
		t.Fatal(err)
	}
	defer Unmap(a)
	if !bytes.Equal(a, ram) {
		t.Fatal("the mapping differs from the RAM")
	}
	for i := range a {
		a[i] ^= 0x5a
	}
	if !bytes.Equal(image(t, path, len(ram)), ram) {
		t.Error("writing the mapping changed the file")
	}
	b, err := MapMemory(path)
	if err != nil {
		t.Fatal(err)
	}
	defer Unmap(b)
	if !bytes.Equal(b, ram) {
		t.Error("a second mapping sees the first one's writes")
	}
}

func TestLoadMemory(t *testing.T) {
	const bs = 4 << 10
	rng := rand.New(rand.NewPCG(5, 6))
	ram := randomRAM(rng, 300, bs)
	path := filepath.Join(t.TempDir(), "mem")
	if _, err := WriteMemory(path, ram, MemoryOptions{Snapshot: NewID(), BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, len(ram))
	fillRandom(rng, dst)
	if err := LoadMemory(path, dst); err != nil || !bytes.Equal(dst, ram) {
		t.Fatalf("LoadMemory into used memory: %v, or the result differs from the RAM", err)
	}
	if err := LoadMemory(path, dst[bs:]); !errors.Is(err, ErrMismatch) {
		t.Errorf("LoadMemory into a smaller destination: %v; want ErrMismatch", err)
	}

	// Corrupt one data block: loading refuses it, naming the block.
	want, _ := nonZero(ram, bs)
	i := 0
	for !want.Has(i) {
		i++
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{ram[i*bs] ^ 1}, int64(i*bs)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	err = LoadMemory(path, dst)
	if msg := fmt.Sprintf("block %d (offset %#x): CRC-32C", i, i*bs); !errors.Is(err, ErrChecksum) || !bytes.Contains([]byte(err.Error()), []byte(msg)) {
		t.Errorf("LoadMemory of a corrupt file: %v; want ErrChecksum mentioning %q", err, msg)
	}
}

func TestWriteMemoryRefuses(t *testing.T) {
	dir := t.TempDir()
	ram := make([]byte, 64<<10)
	tests := map[string]MemoryOptions{
		"no snapshot ID":     {BlockSize: 4096},
		"odd block size":     {Snapshot: NewID(), BlockSize: 12 << 10},
		"block too big":      {Snapshot: NewID(), BlockSize: 128 << 10},
		"diff of itself":     {Snapshot: "0123456789abcdef0123456789abcdef", Parent: "0123456789abcdef0123456789abcdef", Dirty: NewBitmap(16), BlockSize: 4096},
		"diff, no parent":    {Snapshot: NewID(), Dirty: NewBitmap(16), BlockSize: 4096},
		"full with parent":   {Snapshot: NewID(), Parent: NewID(), BlockSize: 4096},
		"short dirty bitmap": {Snapshot: NewID(), Parent: NewID(), Dirty: NewBitmap(8), BlockSize: 4096},
	}
	for name, o := range tests {
		if _, err := WriteMemory(filepath.Join(dir, "mem"), ram, o); err == nil {
			t.Errorf("%s: WriteMemory succeeded", name)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused writes left %d files behind", len(ents))
	}
}
