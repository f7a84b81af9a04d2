package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/bits"
	"os"
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

// sum returns the checksum of the k-th carried block.
func (f *footer) sum(k int) uint32 { return binary.LittleEndian.Uint32(f.Sums[4*k:]) }

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
	if n := uint64(f.blocks()); f.TableLen < (n+7)/8 || f.TableLen > (n+7)/8+4*n {
		return problem(ErrCorrupt, "a block table of %d bytes cannot describe %d blocks", f.TableLen, n)
	}
	return nil
}

// setTable splits a block table into f.Blocks and f.Sums, checking it.
func (f *footer) setTable(t []byte) error {
	n := f.blocks()
	bm := Bitmap(t[:(n+7)/8])
	switch {
	case crc32.Checksum(t, castagnoli) != f.TableSum:
		return problem(ErrChecksum, "block table CRC-32C is %#08x, stored %#08x", crc32.Checksum(t, castagnoli), f.TableSum)
	case n%8 != 0 && bm[n/8]>>(n%8) != 0:
		return problem(ErrCorrupt, "the block bitmap marks blocks past the end of RAM")
	case len(t)-len(bm) != 4*bm.Count():
		return problem(ErrCorrupt, "%d bytes of checksums for %d data blocks", len(t)-len(bm), bm.Count())
	}
	f.Blocks, f.Sums = bm, t[len(bm):]
	return nil
}

// appendTail appends what follows the RAM image of a memory file: block
// table, footer and locator. It sets f.TableLen and f.TableSum.
func appendTail(b []byte, f *footer) ([]byte, error) {
	start := len(b)
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
	ft   *footer
}

// openMemory opens a memory file and checks its footer, and its block table
// if withTable. Its errors name path.
func openMemory(path string, withTable bool) (*memFile, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &FormatError{Path: path, Err: ErrNoMemory, Problem: "no such file"}
	} else if err != nil {
		return nil, fmt.Errorf("snapshot: opening memory file: %w", err)
	}
	m := &memFile{File: f, path: path}
	if m.ft, err = readFooter(f); err == nil && withTable {
		err = m.readTable()
	}
	if err != nil {
		f.Close()
		return nil, inFile(err, path)
	}
	return m, nil
}

func (m *memFile) readTable() error {
	t := make([]byte, m.ft.TableLen)
	if _, err := m.ReadAt(t, int64(m.ft.Size)); err != nil {
		return fmt.Errorf("snapshot: reading the block table of %s: %w", m.path, err)
	}
	return inFile(m.ft.setTable(t), m.path)
}

func readFooter(f *os.File) (*footer, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		return nil, problem(ErrNotSnapshot, "not a regular file")
	}
	notOurs := problem(ErrNotSnapshot, "no memory file footer at the end: not a squib memory file, or truncated")
	var loc [locatorLen]byte
	if size < locatorLen+prefixLen+trailerLen {
		return nil, notOurs
	}
	if _, err := f.ReadAt(loc[:], size-locatorLen); err != nil {
		return nil, fmt.Errorf("snapshot: reading memory file footer: %w", err)
	}
	envLen := int64(binary.LittleEndian.Uint64(loc[:]))
	if envLen < prefixLen+trailerLen || envLen > maxFooter || envLen > size-locatorLen {
		return nil, notOurs
	}
	env := make([]byte, envLen)
	if _, err := f.ReadAt(env, size-locatorLen-envLen); err != nil {
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
	if have := uint64(size - locatorLen - envLen); have != ft.Size+ft.TableLen {
		return nil, problem(ErrTruncated, "the footer describes %#x bytes of RAM and block table, the file holds %#x", ft.Size+ft.TableLen, have)
	}
	return ft, nil
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
