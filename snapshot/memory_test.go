package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// footerOf returns the footer of the memory file at path, checked, with its
// block table (which readers only walk through windows) in Blocks and Sums.
func footerOf(t testing.TB, path string) *footer {
	t.Helper()
	m, err := openMemory(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	table := make([]byte, m.ft.TableLen)
	if _, err := m.ReadAt(table, int64(m.ft.Size)); err != nil {
		t.Fatal(err)
	}
	bm := (m.ft.blocks() + 7) / 8
	m.ft.Blocks, m.ft.Sums = Bitmap(table[:bm]), table[bm:]
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

// writeFooterOnly writes a memory file of image bytes (a hole) and a table
// of table bytes of zeros, followed by ft's footer, keeping ft's sizes,
// whatever they say.
func writeFooterOnly(t *testing.T, path string, ft *footer, image, table int64) {
	t.Helper()
	body, err := Marshal(ft)
	if err != nil {
		t.Fatal(err)
	}
	env := seal(footerMagic, formatVersion, body)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(image + table); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(binary.LittleEndian.AppendUint64(env, uint64(len(env))), image+table); err != nil {
		t.Fatal(err)
	}
}

// TestFooterSizes: the sizes in a memory file's footer are checked against
// the file's own size and the limits before anything is allocated or mapped,
// in sums that cannot overflow.
func TestFooterSizes(t *testing.T) {
	dir := t.TempDir()
	ft := func(size, table uint64) *footer {
		return &footer{FileID: NewID(), Snapshot: NewID(), Type: Full, Size: size, BlockSize: 4096, TableLen: table}
	}
	// RAM and table sizes whose sum wraps around to the 4096 bytes the file
	// holds before its footer: a table of 4 PiB.
	const wrap = 1<<64 - 1<<52
	tests := []struct {
		name         string
		ft           *footer
		image, table int64
		want         error
	}{
		{"sizes overflowing", ft(wrap, 1<<52+4096), 4096, 0, ErrCorrupt},
		{"more than MaxRAMSize", ft(MaxRAMSize+1<<20, (MaxRAMSize+1<<20)/4096/8), MaxRAMSize + 1<<20, (MaxRAMSize + 1<<20) / 4096 / 8, ErrCorrupt},
		{"RAM beyond the file", ft(1<<40-1<<30, 1<<25), 4096, 1 << 15, ErrTruncated},
		{"table beyond the file", ft(1<<20, 1<<5+4*256), 1 << 20, 1 << 5, ErrTruncated},
		{"bytes after the table", ft(1<<20, 1<<5), 1 << 20, 1<<5 + 4, ErrTruncated},
	}
	for _, tt := range tests {
		path := filepath.Join(dir, "mem")
		if tt.image+tt.table > 1<<30 && !holesWork(t, dir) {
			continue
		}
		writeFooterOnly(t, path, tt.ft, tt.image, tt.table)
		for what, f := range map[string]func() error{
			"openMemory": func() error { m, err := openMemory(path, true); m.closeIfOpen(); return err },
			"MapMemory":  func() error { mem, err := MapMemory(path); Unmap(mem); return err },
			"LoadMemory": func() error { return LoadMemory(path, make([]byte, 4096)) },
		} {
			err := promptly(t, 5*time.Second, tt.name, f)
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, tt.want) || fe.Path != path {
				t.Errorf("%s: %s = %v; want %v naming the file", tt.name, what, err, tt.want)
			}
		}
	}
}

// closeIfOpen closes m unless it is nil.
func (m *memFile) closeIfOpen() {
	if m != nil {
		m.Close()
	}
}

// TestMarkedHoles: a block the file carries that lies in a hole reads as
// zeros and must have a zero block's checksum; loading it writes zeros.
func TestMarkedHoles(t *testing.T) {
	dir := t.TempDir()
	const bs = 4096
	rng := rand.New(rand.NewPCG(9, 10))
	ram := randomRAM(rng, 64, bs)
	ram[5*bs] = 1 // block 5 holds data
	path := filepath.Join(dir, "d.mem")
	dirty := NewBitmap(64)
	for _, i := range []int{3, 4, 5, 40} {
		dirty.Set(i)
	}
	clear(ram[3*bs : 5*bs])   // blocks 3 and 4 dirtied and zeroed: holes
	clear(ram[40*bs : 41*bs]) // block 40 too
	if _, err := WriteMemory(path, ram, MemoryOptions{Snapshot: NewID(), Parent: NewID(), Dirty: dirty, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, len(ram))
	fillRandom(rng, dst)
	want := bytes.Clone(dst)
	for _, i := range []int{3, 4, 5, 40} {
		copy(want[i*bs:(i+1)*bs], ram[i*bs:(i+1)*bs])
	}
	if err := LoadMemory(path, dst); err != nil || !bytes.Equal(dst, want) {
		t.Fatalf("LoadMemory of a diff with zeroed blocks: %v, or the result differs", err)
	}
	m, err := openMemory(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.scan(); err != nil {
		t.Errorf("scan: %v", err)
	}
	m.Close()

	// The checksum of hole block 4 (the second carried) no longer that of
	// zeros: the block now fails its check, though nothing reads it.
	ft := footerOf(t, path)
	sums := bytes.Clone(ft.Sums)
	binary.LittleEndian.PutUint32(sums[4:], 0x12345678)
	table := append(bytes.Clone(ft.Blocks), sums...)
	ft.TableSum = crc32.Checksum(table, castagnoli)
	body, err := Marshal(ft)
	if err != nil {
		t.Fatal(err)
	}
	env := seal(footerMagic, formatVersion, body)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(append(append(table, env...), binary.LittleEndian.AppendUint64(nil, uint64(len(env)))...), int64(ft.Size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m, err = openMemory(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for what, err := range map[string]error{"scan": m.scan(), "LoadMemory": LoadMemory(path, dst)} {
		if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "block 4 (offset 0x4000), a hole in the file,") {
			t.Errorf("%s with a wrong checksum for a hole: %v", what, err)
		}
	}
}
