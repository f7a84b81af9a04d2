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
// its diffs in order rebuilds the newest snapshot's RAM. Blocks lying in
// holes of the file are not read (see holes.go). On error, dst may hold part
// of the file.
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
	bs, n := int(m.ft.BlockSize), m.ft.blocks()
	zero := make([]byte, bs)
	zsum := crc32.Checksum(zero, castagnoli)
	clearBlocks := func(b []byte) {
		for j := 0; j < len(b); j += bs {
			if c := b[j : j+bs]; !bytes.Equal(c, zero) {
				clear(c)
			}
		}
	}
	k := 0 // the index of the next carried block's checksum
	for i := 0; i < n; {
		j, err := m.nextMarked(i)
		if err != nil {
			return err
		}
		if m.ft.Type == Full {
			clearBlocks(dst[i*bs : j*bs]) // not carried: zeros
		}
		if j == n {
			break
		}
		if m.hole(j) {
			if err := m.checkSum(j, k, zsum, true); err != nil {
				return err
			}
			clearBlocks(dst[j*bs : (j+1)*bs])
			i, k = j+1, k+1
			continue
		}
		// The carried blocks from j on that hold data, read in one piece.
		// (Where that data ends is asked only for a run of more than one.)
		e, limit := j+1, min(n, j+chunkSize/bs)
		for ; e < limit; e++ {
			if mk, err := m.marked(e); err != nil {
				return err
			} else if !mk {
				break
			}
			if e == j+1 {
				if limit = m.dataEnd(j, limit); e == limit {
					break
				}
			}
		}
		if _, err := m.ReadAt(dst[j*bs:e*bs], int64(j)*int64(bs)); err != nil {
			return fmt.Errorf("snapshot: reading %s: %w", path, err)
		}
		for b := j; b < e; b++ {
			if err := m.check(b, k, dst[b*bs:(b+1)*bs]); err != nil {
				return err
			}
			k++
		}
		i = e
	}
	return nil
}

// chunkSize is the most a walk over the blocks of memory files reads at
// once: a multiple of every block size.
const chunkSize = 2 * maxBlockSize

// mergeInto writes the RAM of a chain of memory files (a full one, then
// diffs that apply to it in order) to w: each block as the last file that
// carries it holds it, zeros where none does. It checks every block it takes
// against its checksum. Only data is read and written: a block no file
// carries, or whose copy lies in a hole, is zeros, which the output's holes
// already read as, so the work grows with what the files hold, not with the
// RAM size.
func mergeInto(w *blockWriter, files []*memFile) error {
	bs, n := int(files[0].ft.BlockSize), files[0].ft.blocks()
	zsum := crc32.Checksum(make([]byte, bs), castagnoli)
	// Blocks of data go out in batches of up to chunkSize bytes: a run of
	// blocks from first on, with short stretches of zeros allowed between
	// them so that scattered data does not make many small writes.
	per, maxGap := chunkSize/bs, max(1, (64<<10)/bs)
	buf := make([]byte, min(chunkSize, n*bs))
	first := 0
	var src, sum []int // per block of the batch: its file (-1: zeros) and that file's checksum index
	flush := func() error {
		c := buf[:len(src)*bs]
		for j := 0; j < len(src); {
			end := j + 1
			for end < len(src) && src[end] == src[j] {
				end++
			}
			if s := src[j]; s < 0 {
				clear(c[j*bs : end*bs])
			} else {
				m := files[s]
				if _, err := m.ReadAt(c[j*bs:end*bs], int64(first+j)*int64(bs)); err != nil {
					return fmt.Errorf("snapshot: reading %s: %w", m.path, err)
				}
				for t := j; t < end; t++ {
					if err := m.check(first+t, sum[t], c[t*bs:(t+1)*bs]); err != nil {
						return err
					}
				}
			}
			j = end
		}
		src, sum = src[:0], sum[:0]
		return w.write(first, c)
	}
	next := make([]int, len(files)) // per file: the index of its next carried block's checksum
	for i := 0; i < n; i++ {
		j := n // the next block some file carries
		for _, m := range files {
			mk, err := m.nextMarked(i)
			if err != nil {
				return err
			}
			j = min(j, mk)
		}
		if j == n {
			break
		}
		s, k := -1, 0
		for f, m := range files {
			mk, err := m.marked(j)
			if err != nil {
				return err
			}
			if mk {
				s, k = f, next[f]
				next[f]++
			}
		}
		i = j
		if m := files[s]; m.hole(j) { // zeros
			if err := m.checkSum(j, k, zsum, true); err != nil {
				return err
			}
			continue
		}
		if len(src) > 0 && (j-first >= per || j-(first+len(src)) > maxGap) {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(src) == 0 {
			first = j
		}
		for len(src) < j-first {
			src, sum = append(src, -1), append(sum, 0)
		}
		src, sum = append(src, s), append(sum, k)
	}
	if len(src) > 0 {
		return flush()
	}
	return nil
}

// check compares b, block i and the k-th block m carries, with its
// checksum.
func (m *memFile) check(i, k int, b []byte) error {
	return m.checkSum(i, k, crc32.Checksum(b, castagnoli), false)
}

// checkSum compares got, the CRC-32C of block i, the k-th block m carries,
// with the checksum m holds for it. hole says the block lies in a hole of
// the file.
func (m *memFile) checkSum(i, k int, got uint32, hole bool) error {
	want, err := m.sum(k)
	if err != nil {
		return err
	}
	if got != want {
		what := ""
		if hole {
			what = ", a hole in the file,"
		}
		return &FormatError{Path: m.path, Err: ErrChecksum, Problem: fmt.Sprintf(
			"block %d (offset %#x)%s: CRC-32C is %#08x, stored %#08x", i, uint64(i)*uint64(m.ft.BlockSize), what, got, want)}
	}
	return nil
}
