package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/bits"
	"os"
	"slices"
)

// Bitmap has one bit per block of guest RAM: block i is bit i%8 (least
// significant first) of byte i/8. That is also the byte layout of KVM's dirty
// log on a little-endian host.
type Bitmap []byte

// NewBitmap returns an empty bitmap for n blocks.
func NewBitmap(n int) Bitmap { return make(Bitmap, (n+7)/8) }

// Set marks block i.
func (b Bitmap) Set(i int) { b[i/8] |= 1 << (i % 8) }

// Has reports whether block i is marked.
func (b Bitmap) Has(i int) bool { return b[i/8]&(1<<(i%8)) != 0 }

// Count returns the number of marked blocks.
func (b Bitmap) Count() int {
	n := 0
	for len(b) >= 8 {
		n += bits.OnesCount64(binary.LittleEndian.Uint64(b))
		b = b[8:]
	}
	for _, x := range b {
		n += bits.OnesCount8(x)
	}
	return n
}

// A memory file is the guest RAM image followed by a block table and a
// footer:
//
//	[0, Size)               RAM image; blocks not carried are holes
//	[Size, Size+T)          block table: the Blocks bitmap, then the Sums
//	[Size+T, Size+T+E)      footer: an envelope (see codec.go) with magic SQUIB-MM
//	[Size+T+E, Size+T+E+8)  E, little-endian
//
// The image starts at offset 0, so a full memory file maps directly as guest
// RAM. The footer is small and fixed in size, so opening a file costs the same
// whatever the RAM size; the block table, which grows with it, is read only
// by what walks the blocks (LoadMemory, Merge, Verify).
const locatorLen = 8

// maxFooter bounds a footer envelope; real ones are about 200 bytes.
const maxFooter = 64 << 10

// footer describes a memory file.
type footer struct {
	FileID    string `cbor:"1,keyasint"` // binds the file to one state file (MemoryRef.FileID)
	Snapshot  string `cbor:"2,keyasint"` // ID of the snapshot whose memory this is
	Parent    string `cbor:"3,keyasint"` // Diff: ID of the snapshot it applies to
	Type      Type   `cbor:"4,keyasint"`
	Size      uint64 `cbor:"5,keyasint"` // RAM bytes
	BlockSize uint32 `cbor:"6,keyasint"`
	TableLen  uint64 `cbor:"7,keyasint"` // bytes in the block table
	TableSum  uint32 `cbor:"8,keyasint"` // CRC-32C of the block table

	// The block table, once read. Blocks marks the blocks the file carries:
	// for Full, those not all zero (the others are zero); for Diff, the
	// dirtied ones (the others are unchanged from the parent). A carried
	// block that is all zero is a hole. Sums holds the CRC-32C of each
	// carried block, in block order, as 4-byte little-endian values.
	Blocks Bitmap `cbor:"-"`
	Sums   []byte `cbor:"-"`
}

func (f *footer) blocks() int { return int(f.Size / uint64(f.BlockSize)) }

func (f *footer) validate() error {
	switch {
	case !validID(f.FileID) || !validID(f.Snapshot):
		return problem(ErrCorrupt, "file ID %q or snapshot ID %q is not 32 hex digits", f.FileID, f.Snapshot)
	case f.Type != Full && f.Type != Diff:
		return problem(ErrCorrupt, "unknown memory file type %d", uint8(f.Type))
	case (f.Type == Full) != (f.Parent == "") || f.Parent != "" && !validID(f.Parent):
		return problem(ErrCorrupt, "%v memory file with parent %q", f.Type, f.Parent)
	}
	if err := checkBlockSize(uint64(f.BlockSize), f.Size); err != nil {
		return problem(ErrCorrupt, "%v", err)
	}
	if f.Size > MaxRAMSize {
		return problem(ErrCorrupt, "the footer declares %#x bytes of RAM, more than the %#x a restore can map", f.Size, uint64(MaxRAMSize))
	}
	if n := uint64(f.blocks()); f.TableLen < (n+7)/8 || f.TableLen > (n+7)/8+4*n {
		return problem(ErrCorrupt, "a block table of %d bytes cannot describe %d blocks", f.TableLen, n)
	}
	return nil
}

// appendTail appends what follows the RAM image of a memory file: block
// table, footer and locator. It sets f.TableLen and f.TableSum.
func appendTail(b []byte, f *footer) ([]byte, error) {
	start := len(b)
	b = slices.Grow(b, len(f.Blocks)+len(f.Sums)+1024) // the table is up to 32 MiB of bitmap: one copy, not several
	b = append(append(b, f.Blocks...), f.Sums...)
	f.TableLen, f.TableSum = uint64(len(b)-start), crc32.Checksum(b[start:], castagnoli)
	body, err := Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("snapshot: encoding memory file footer: %w", err)
	}
	env := seal(footerMagic, formatVersion, body)
	return binary.LittleEndian.AppendUint64(append(b, env...), uint64(len(env))), nil
}

// memFile is an open memory file with its footer checked.
type memFile struct {
	*os.File
	path string
	size int64 // the file's size when opened
	ft   *footer
	// Where the file holds data: one finder for the RAM image, one for the
	// block table, each remembering the run it found last.
	ext, tableExt extents

	// Once the block table is checked (readTable): the number of blocks the
	// file carries, and windows on the bitmap and the checksums.
	carried  int
	bm, sums window
	// nextMarked's last answer: no block in [markFrom, markNext) is
	// carried, and markNext is (or is the number of blocks).
	markFrom, markNext int
	markKnown          bool
}

// openMemory opens a memory file and checks its footer, and its block table
// if withTable. Its errors name path.
func openMemory(path string, withTable bool) (*memFile, error) {
	f, fi, err := openInput(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &FormatError{Path: path, Err: ErrNoMemory, Problem: "no such file"}
	} else if errors.As(err, new(*FormatError)) {
		return nil, err
	} else if err != nil {
		return nil, fmt.Errorf("snapshot: opening memory file: %w", err)
	}
	m := &memFile{File: f, path: path, size: fi.Size(), ext: extents{f: f, size: fi.Size()}}
	m.tableExt = m.ext
	if m.ft, err = readFooter(f, m.size); err == nil && withTable {
		err = m.readTable()
	}
	if err != nil {
		f.Close()
		return nil, inFile(err, path)
	}
	return m, nil
}

// readFooter reads and checks the footer of f, a file of size bytes. Every
// size it holds is checked against the file's size before it is used.
func readFooter(f *os.File, size int64) (*footer, error) {
	notOurs := problem(ErrNotSnapshot, "no memory file footer at the end: not a squib memory file, or truncated")
	var loc [locatorLen]byte
	if size < locatorLen+prefixLen+trailerLen {
		return nil, notOurs
	}
	if _, err := f.ReadAt(loc[:], size-locatorLen); err != nil {
		return nil, fmt.Errorf("snapshot: reading memory file footer: %w", err)
	}
	envLen := binary.LittleEndian.Uint64(loc[:])
	if envLen < prefixLen+trailerLen || envLen > maxFooter || envLen > uint64(size-locatorLen) {
		return nil, notOurs
	}
	env := make([]byte, envLen)
	if _, err := f.ReadAt(env, size-locatorLen-int64(envLen)); err != nil {
		return nil, fmt.Errorf("snapshot: reading memory file footer: %w", err)
	}
	_, body, err := open(footerMagic, env)
	if errors.Is(err, ErrNotSnapshot) {
		return nil, notOurs
	} else if err != nil {
		return nil, err
	}
	ft := new(footer)
	if err := Unmarshal(body, ft); err != nil {
		return nil, problem(ErrCorrupt, "decoding the footer: %v", err)
	}
	if err := ft.validate(); err != nil {
		return nil, err
	}
	// RAM image and block table fill the file up to the footer, exactly.
	// (Compared one at a time: their sum could overflow.)
	if have := uint64(size-locatorLen) - envLen; ft.Size > have || ft.TableLen != have-ft.Size {
		return nil, problem(ErrTruncated, "the footer describes %#x bytes of RAM and a %#x-byte block table, the file holds %#x bytes before the footer",
			ft.Size, ft.TableLen, have)
	}
	return ft, nil
}

// tableWindow is how much of each part of a block table (bitmap,
// checksums) a reader holds at a time, so walking the blocks of a memory
// file takes the same memory for any RAM size.
const tableWindow = 64 << 10

// window holds part of a region of a file: n bytes from file offset off.
type window struct {
	off, n int64
	at     int64 // region offset of buf[0]
	buf    []byte
}

// from returns the bytes of w's region from i on that w holds, at least one,
// reading them first if w does not hold byte i.
func (m *memFile) from(w *window, i int64) ([]byte, error) {
	if i < w.at || i >= w.at+int64(len(w.buf)) {
		if i < 0 || i >= w.n {
			return nil, fmt.Errorf("snapshot: %s: block table offset %d out of range", m.path, i)
		}
		if w.buf == nil {
			w.buf = make([]byte, min(tableWindow, w.n))
		}
		w.buf = w.buf[:min(int64(cap(w.buf)), w.n-i)]
		if _, err := m.ReadAt(w.buf, w.off+i); err != nil {
			w.buf = w.buf[:0]
			return nil, fmt.Errorf("snapshot: reading the block table of %s: %w", m.path, err)
		}
		w.at = i
	}
	return w.buf[i-w.at:], nil
}

// readTable checks the block table: its checksum, that the bitmap marks no
// block past the end of RAM, and that it holds one checksum per carried
// block. It reads the table through a window (holes in it as zeros, without
// reading them), and sets m.carried and m's windows on the table.
func (m *memFile) readTable() error {
	ft := m.ft
	n := ft.blocks()
	start, bmLen, end := int64(ft.Size), int64(n+7)/8, int64(ft.Size+ft.TableLen)
	var (
		crc   uint32
		count int
		last  byte // the bitmap's last byte
		buf   = make([]byte, min(tableWindow, end-start))
	)
	for off := start; off < end; {
		data, stop := m.tableExt.at(off)
		if stop = min(stop, end); !data {
			crc = crcZeros(crc, stop-off)
			off = stop
			continue
		}
		for off < stop {
			c := buf[:min(int64(len(buf)), stop-off)]
			if _, err := m.ReadAt(c, off); err != nil {
				return fmt.Errorf("snapshot: reading the block table of %s: %w", m.path, err)
			}
			crc = crc32.Update(crc, castagnoli, c)
			if rest := start + bmLen - off; rest > 0 {
				b := Bitmap(c[:min(int64(len(c)), rest)])
				count += b.Count()
				if rest <= int64(len(c)) {
					last = b[len(b)-1]
				}
			}
			off += int64(len(c))
		}
	}
	switch sums := ft.TableLen - uint64(bmLen); {
	case crc != ft.TableSum:
		return inFile(problem(ErrChecksum, "block table CRC-32C is %#08x, stored %#08x", crc, ft.TableSum), m.path)
	case n%8 != 0 && last>>(n%8) != 0:
		return inFile(problem(ErrCorrupt, "the block bitmap marks blocks past the end of RAM"), m.path)
	case sums != 4*uint64(count):
		return inFile(problem(ErrCorrupt, "%d bytes of checksums for %d data blocks", sums, count), m.path)
	}
	m.carried = count
	m.bm = window{off: start, n: bmLen}
	m.sums = window{off: start + bmLen, n: end - start - bmLen}
	return nil
}

// zeros is a run of zero bytes to checksum holes with.
var zeros [64 << 10]byte

// crcZeros continues a CRC-32C over n zero bytes.
func crcZeros(crc uint32, n int64) uint32 {
	for n > 0 {
		c := min(n, int64(len(zeros)))
		crc = crc32.Update(crc, castagnoli, zeros[:c])
		n -= c
	}
	return crc
}

// marked reports whether the file carries block i. The table must have been
// read.
func (m *memFile) marked(i int) (bool, error) {
	b, err := m.from(&m.bm, int64(i/8))
	if err != nil {
		return false, err
	}
	return b[0]&(1<<(i%8)) != 0, nil
}

// nextMarked returns the first block from i on that the file carries, or the
// number of blocks if there is none. A hole in the bitmap is skipped without
// being read.
func (m *memFile) nextMarked(i int) (int, error) {
	if m.markKnown && m.markFrom <= i && i <= m.markNext {
		return m.markNext, nil
	}
	j, err := m.findMarked(i)
	if err == nil {
		m.markFrom, m.markNext, m.markKnown = i, j, true
	}
	return j, err
}

func (m *memFile) findMarked(i int) (int, error) {
	n := m.ft.blocks()
	for i < n {
		k := int64(i / 8)
		if end := m.tableExt.holeEnd(m.bm.off + k); end > m.bm.off+k {
			i = int(end-m.bm.off) * 8 // a hole: zero bytes, no block marked
			continue
		}
		b, err := m.from(&m.bm, k)
		if err != nil {
			return 0, err
		}
		if x := b[0] >> (i % 8); x != 0 {
			return min(n, i+bits.TrailingZeros8(x)), nil
		}
		j := 1
		for j < len(b) && b[j] == 0 {
			j++
		}
		if j < len(b) {
			return min(n, int(k+int64(j))*8+bits.TrailingZeros8(b[j])), nil
		}
		i = int(k+int64(len(b))) * 8
	}
	return n, nil
}

// sum returns the checksum of the k-th block the file carries.
func (m *memFile) sum(k int) (uint32, error) {
	b, err := m.from(&m.sums, 4*int64(k))
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

// hole reports whether block i lies wholly in a hole of the file, and so
// reads as zeros.
func (m *memFile) hole(i int) bool {
	bs := int64(m.ft.BlockSize)
	return m.ext.holeEnd(int64(i)*bs) >= int64(i+1)*bs
}

// nextData returns the first block from i on that does not lie wholly in a
// hole, or the number of blocks if there is none.
func (m *memFile) nextData(i int) int {
	bs, n := int64(m.ft.BlockSize), m.ft.blocks()
	for i < n {
		j := int(m.ext.holeEnd(int64(i)*bs) / bs) // the first block not wholly in a hole there
		if j <= i {
			return i
		}
		i = j
	}
	return n
}

// dataEnd returns the end of the run of blocks from block i, which does not
// lie wholly in a hole, that hold the data found there: the block after the
// one where that data ends, at most limit.
func (m *memFile) dataEnd(i, limit int) int {
	bs := int64(m.ft.BlockSize)
	end := int64(i+1) * bs
	if off := m.ext.holeEnd(int64(i) * bs); off < m.size { // where the data starts, inside block i
		end = m.ext.dataEnd(off)
	}
	return min(limit, max(i+1, int((end+bs-1)/bs)))
}

// checkBinding returns an ErrMismatch error unless m is the memory file the
// state file s names.
func checkBinding(s *State, m *memFile) error {
	h, ft := &s.Header, m.ft
	mismatch := func(format string, args ...any) error {
		return &FormatError{Path: m.path, Err: ErrMismatch, Problem: fmt.Sprintf(format, args...)}
	}
	switch {
	case ft.FileID != h.Memory.FileID:
		return mismatch("file ID %s (memory of snapshot %s), the state file %s wants file ID %s",
			ft.FileID, ft.Snapshot, h.ID, h.Memory.FileID)
	case ft.Snapshot != h.ID || ft.Parent != h.Parent || ft.Type != h.Type:
		return mismatch("%v memory of snapshot %s (parent %q), the state file is %v snapshot %s (parent %q)",
			ft.Type, ft.Snapshot, ft.Parent, h.Type, h.ID, h.Parent)
	case ft.Size != h.Memory.Size || ft.BlockSize != h.Memory.BlockSize:
		return mismatch("%#x bytes in %d-byte blocks, the state file wants %#x bytes in %d-byte blocks",
			ft.Size, ft.BlockSize, h.Memory.Size, h.Memory.BlockSize)
	}
	return nil
}
