package snapshot

import (
	"bytes"
	"fmt"
	"hash/crc32"

	"golang.org/x/sys/unix"
)

// MapMemory maps a full memory file as guest RAM: private and copy-on-write,
// read lazily from the page cache. Mapping costs the same whatever the RAM
// size, clones mapping one file share its cached pages, and guest writes
// never reach the file. The file must not change while mapped: pages not yet
// touched would show the change (and truncating it makes their access raise
// SIGBUS). A diff memory file cannot be mapped; map its base and apply the
// diffs with LoadMemory. Release the mapping with Unmap.
func MapMemory(path string) ([]byte, error) {
	m, err := openMemory(path, false)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if m.ft.Type != Full {
		return nil, &FormatError{Path: path, Err: ErrMismatch,
			Problem: "a diff memory file cannot be mapped; map the full snapshot it applies to and apply it with LoadMemory"}
	}
	mem, err := unix.Mmap(int(m.Fd()), 0, int(m.ft.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("snapshot: mapping %s: %w", path, err)
	}
	return mem, nil
}

// Unmap releases a mapping MapMemory returned.
func Unmap(mem []byte) error { return unix.Munmap(mem) }

// LoadMemory copies a memory file into dst, eagerly, checking every data
// block against its checksum; use it when the file may change while the VM
// runs. A full file replaces all of dst (holes become zeros, written only
// where dst is not already zero, so fresh memory stays unallocated). A diff
// file overwrites only the blocks it carries, so loading a full file and then
// its diffs in order rebuilds the newest snapshot's RAM. On error, dst may
// hold part of the file.
func LoadMemory(path string, dst []byte) error {
	m, err := openMemory(path, true)
	if err != nil {
		return err
	}
	defer m.Close()
	if uint64(len(dst)) != m.ft.Size {
		return &FormatError{Path: path, Err: ErrMismatch,
			Problem: fmt.Sprintf("the file holds %#x bytes of RAM, the destination is %#x bytes", m.ft.Size, len(dst))}
	}
	r, bs := newReader(m), int(m.ft.BlockSize)
	zero := make([]byte, bs)
	for off := 0; off < len(dst); off += chunkSize {
		c := dst[off:min(off+chunkSize, len(dst))]
		if err := r.read(c); err != nil {
			return err
		}
		if m.ft.Type != Full {
			continue
		}
		for j := 0; j < len(c); j += bs {
			if b := c[j : j+bs]; !m.ft.Blocks.Has((off+j)/bs) && !bytes.Equal(b, zero) {
				clear(b)
			}
		}
	}
	return nil
}

// chunkSize is the unit in which memory files are read: a multiple of every
// block size.
const chunkSize = 2 * maxBlockSize

// reader reads the RAM image of a chain of memory files, front to back: each
// block comes from the last file that carries it. It checks every block it
// reads against the checksum in that file's footer.
type reader struct {
	files    []*memFile
	bs       int
	at       int   // next block to read
	next     []int // per file: index in Sums of its next carried block
	src, sum []int // per block of the current read: source file (-1: none) and checksum index
}

func newReader(files ...*memFile) *reader {
	return &reader{files: files, bs: int(files[0].ft.BlockSize), next: make([]int, len(files))}
}

// read fills dst with the next len(dst)/bs blocks. Blocks no file carries are
// left as they are.
func (r *reader) read(dst []byte) error {
	n := len(dst) / r.bs
	r.src, r.sum = r.src[:0], r.sum[:0]
	for j := range n {
		src, sum := -1, 0
		for f, m := range r.files {
			if m.ft.Blocks.Has(r.at + j) {
				src, sum = f, r.next[f]
				r.next[f]++
			}
		}
		r.src, r.sum = append(r.src, src), append(r.sum, sum)
	}
	for j := 0; j < n; {
		end := j + 1
		for end < n && r.src[end] == r.src[j] {
			end++
		}
		if s := r.src[j]; s >= 0 {
			m := r.files[s]
			if _, err := m.ReadAt(dst[j*r.bs:end*r.bs], int64(r.at+j)*int64(r.bs)); err != nil {
				return fmt.Errorf("snapshot: reading %s: %w", m.path, err)
			}
			for t := j; t < end; t++ {
				if err := m.check(r.at+t, r.sum[t], dst[t*r.bs:(t+1)*r.bs]); err != nil {
					return err
				}
			}
		}
		j = end
	}
	r.at += n
	return nil
}

// check compares block i, the k-th carried block of m, with its checksum.
func (m *memFile) check(i, k int, b []byte) error {
	if got, want := crc32.Checksum(b, castagnoli), m.ft.sum(k); got != want {
		return &FormatError{Path: m.path, Err: ErrChecksum, Problem: fmt.Sprintf(
			"block %d (offset %#x): CRC-32C is %#08x, stored %#08x", i, uint64(i)*uint64(len(b)), got, want)}
	}
	return nil
}
