// Package blk is the virtio block device (virtio 1.2 §5.2, device ID 2)
// over a raw image: a regular file (sparse files stay sparse) or a block
// device. One queue of 256, like Firecracker's; requests are IN, OUT,
// FLUSH, GET_ID, DISCARD and WRITE_ZEROES, served on the transport's device
// goroutine with positional reads and writes (no request is in flight
// between two Handle calls). Guest buffers are written through
// memory.RAM's Mutable, so the write log sees them.
//
// Features: SEG_MAX and SIZE_MAX always; RO for a read-only drive (its
// file opened O_RDONLY, writes answered IOERR); FLUSH only for the
// Writeback cache type, as Firecracker offers it (Unsafe: a FLUSH is a
// no-op, Writeback: fdatasync); DISCARD and WRITE_ZEROES for writable
// drives, both punching holes where the platform can (else writing zeros).
// A writable image is locked (flock LOCK_EX|LOCK_NB) while open, so that a
// second squibd cannot write it too.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// CacheType is Firecracker's cache_type: what FLUSH means.
type CacheType uint8

const (
	// Unsafe does not offer FLUSH; a FLUSH sent anyway is a no-op.
	Unsafe CacheType = iota
	// Writeback offers FLUSH and makes it an fdatasync.
	Writeback
)

func (c CacheType) String() string {
	if c == Writeback {
		return "Writeback"
	}
	return "Unsafe"
}

// Config is one drive, as Firecracker's drive API has it.
type Config struct {
	ID       string // the drive's id: GET_ID's answer, and its name in errors
	Path     string
	ReadOnly bool
	Cache    CacheType
	// Root and PartUUID are the board's: the root drive is its first
	// (the guest's vda), named on the kernel command line. The device
	// ignores them.
	Root     bool
	PartUUID string
}

// State is a drive's own state in a snapshot: its configuration, and the
// size of its file when saved, which a restore requires again.
type State struct {
	ID       string    `cbor:"1,keyasint"`
	Path     string    `cbor:"2,keyasint"`
	ReadOnly bool      `cbor:"3,keyasint"`
	Cache    CacheType `cbor:"4,keyasint"`
	Root     bool      `cbor:"5,keyasint"`
	PartUUID string    `cbor:"6,keyasint"`
	Size     int64     `cbor:"7,keyasint"`
}

// Config is the drive configuration s was saved with.
func (s State) Config() Config {
	return Config{ID: s.ID, Path: s.Path, ReadOnly: s.ReadOnly, Cache: s.Cache, Root: s.Root, PartUUID: s.PartUUID}
}

// Feature bits (§5.2.3).
const (
	featSizeMax     = 1 << 1
	featSegMax      = 1 << 2
	featRO          = 1 << 5
	featFlush       = 1 << 9
	featDiscard     = 1 << 13
	featWriteZeroes = 1 << 14
)

// Request types and status values (§5.2.6).
const (
	typeIn          = 0
	typeOut         = 1
	typeFlush       = 4
	typeGetID       = 8
	typeDiscard     = 11
	typeWriteZeroes = 13

	statusOK     = 0
	statusIOErr  = 1
	statusUnsupp = 2
)

const (
	queueSize  = 256
	sectorSize = 512
	headerSize = 16
	idSize     = 20
	// segMax and sizeMax bound a request's data buffers, as the driver is
	// told in the configuration space: Linux keeps its requests within
	// them, and a request beyond them is refused. With the header and the
	// status byte a request of segMax buffers fills the queue (without
	// indirect descriptors a chain may not be longer): 1 MiB in 4 KiB
	// pages takes two requests where a seg_max of 126 took three.
	segMax  = queueSize - 2
	sizeMax = 1 << 20
	// maxZeroSectors is the most one DISCARD or WRITE_ZEROES segment may
	// cover (32 MiB), and each request carries one segment.
	maxZeroSectors = 1 << 16
	configSize     = 60
)

// Device is one drive over guest RAM.
type Device struct {
	ram     *memory.RAM
	cfg     Config
	f       *os.File
	size    int64  // bytes, when opened or swapped in
	sectors uint64 // capacity: size / 512 (a partial last sector is hidden)
}

// Open opens c's image for a device over ram: read-only drives O_RDONLY,
// writable ones O_RDWR and locked. Errors name the drive and the file.
func Open(c Config, ram *memory.RAM) (*Device, error) {
	d := &Device{ram: ram}
	if err := d.open(c); err != nil {
		return nil, err
	}
	return d, nil
}

// Swap makes the image at path the drive's medium (PATCH /drives), opened
// as Open opens it, and closes the old one, letting its lock go; the
// capacity becomes the new file's. A path naming the file the drive has
// open (the same path after the file was resized, or the file moved) keeps
// its descriptor and lock, and only the size is read again. On an error
// the old medium stays. The transport must be quiesced, so that no request
// is half-served across the swap; it then has to be told the new Config.
func (d *Device) Swap(path string) error {
	old := d.f
	c := d.cfg
	c.Path = path
	if err := d.open(c); err != nil {
		return err
	}
	if d.f != old {
		old.Close()
	}
	return nil
}

// open opens c's image and makes it the device's, with its configuration
// and size, unless that fails. The file d has open already, if c names it,
// is kept instead of opened again: a second descriptor could not take the
// lock the first holds.
func (d *Device) open(c Config) error {
	flag := os.O_RDWR
	if c.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(c.Path, flag, 0)
	if err != nil {
		return fmt.Errorf("drive %s: %w", c.ID, err)
	}
	if d.f != nil && sameFile(f, d.f) {
		f.Close()
		f = d.f
	} else if !c.ReadOnly {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return fmt.Errorf("drive %s: %s is locked by another process that has it open for writing", c.ID, c.Path)
			}
			return fmt.Errorf("drive %s: locking %s: %w", c.ID, c.Path, err)
		}
	}
	size, err := f.Seek(0, io.SeekEnd) // a block device's size too
	if err != nil {
		if f != d.f {
			f.Close()
		}
		return fmt.Errorf("drive %s: %s: %w", c.ID, c.Path, err)
	}
	d.cfg, d.f, d.size, d.sectors = c, f, size, uint64(size)/sectorSize
	return nil
}

// sameFile reports whether a and b are open on the same file.
func sameFile(a, b *os.File) bool {
	ai, err := a.Stat()
	if err != nil {
		return false
	}
	bi, err := b.Stat()
	return err == nil && os.SameFile(ai, bi)
}

// Close closes the image, letting its lock go.
func (d *Device) Close() error { return d.f.Close() }

// Size is the image's size in bytes when it was opened or swapped in.
func (d *Device) Size() int64 { return d.size }

// State flushes a Writeback drive's writes to stable storage and returns
// the drive's state; the device is quiesced.
func (d *Device) State() (State, error) {
	if err := d.flush(); err != nil {
		return State{}, fmt.Errorf("drive %s: flushing %s: %w", d.cfg.ID, d.cfg.Path, err)
	}
	c := d.cfg
	return State{ID: c.ID, Path: c.Path, ReadOnly: c.ReadOnly, Cache: c.Cache, Root: c.Root, PartUUID: c.PartUUID, Size: d.size}, nil
}

func (*Device) ID() uint32           { return 2 }
func (*Device) QueueSizes() []uint16 { return []uint16{queueSize} }

func (d *Device) Features() uint64 {
	f := uint64(featSizeMax | featSegMax)
	if d.cfg.ReadOnly {
		f |= featRO
	} else {
		f |= featDiscard | featWriteZeroes
	}
	if d.cfg.Cache == Writeback {
		f |= featFlush
	}
	return f
}

// Config is the configuration space (§5.2.4): capacity, size_max,
// seg_max, and the discard and write-zeroes limits.
func (d *Device) Config() []byte {
	c := make([]byte, configSize)
	le := binary.LittleEndian
	le.PutUint64(c[0:], d.sectors)
	le.PutUint32(c[8:], sizeMax)
	le.PutUint32(c[12:], segMax)
	le.PutUint32(c[36:], maxZeroSectors) // max_discard_sectors
	le.PutUint32(c[40:], 1)              // max_discard_seg
	le.PutUint32(c[44:], 1)              // discard_sector_alignment
	le.PutUint32(c[48:], maxZeroSectors) // max_write_zeroes_sectors
	le.PutUint32(c[52:], 1)              // max_write_zeroes_seg
	c[56] = 1                            // write_zeroes_may_unmap
	return c
}

// Handle serves every request the driver made available.
func (d *Device) Handle(_ int, q *virtio.Queue) error {
	for {
		c, err := q.Pop(virtio.ReadThenWrite)
		if err != nil || c == nil {
			return err
		}
		used := uint32(0) // no room for a status byte: given back unused
		if st, ok := statusByte(c); ok {
			n, status := d.serve(c)
			b, err := d.ram.Mutable(st, 1)
			if err != nil {
				return err // not reached: Pop checked that the buffers lie in RAM
			}
			b[0] = status
			used = n + 1
		}
		if err := q.Push(c, used); err != nil {
			return err
		}
	}
}

// statusByte is the address of a request's status byte, the last byte of
// its writable buffers, if they have one.
func statusByte(c *virtio.Chain) (uint64, bool) {
	for i := len(c.Writable) - 1; i >= 0; i-- {
		if b := c.Writable[i]; b.Len > 0 {
			return b.Addr + uint64(b.Len) - 1, true
		}
	}
	return 0, false
}

// serve carries out one request and returns the bytes it wrote into guest
// buffers (besides the status byte) and the status.
func (d *Device) serve(c *virtio.Chain) (uint32, byte) {
	r, status := parse(c, d.ram, d.sectors)
	if status != statusOK {
		return 0, status
	}
	if d.cfg.ReadOnly && (r.typ == typeOut || r.typ == typeDiscard || r.typ == typeWriteZeroes) {
		return 0, statusIOErr
	}
	off := int64(r.sector * sectorSize)
	var err error
	switch r.typ {
	case typeIn:
		n := uint32(0)
		for _, b := range r.data {
			dst, _ := d.ram.Mutable(b.Addr, uint64(b.Len)) // in RAM: Pop checked
			if _, err := d.f.ReadAt(dst, off); err != nil {
				return n, statusIOErr // a file shrunk since it was opened
			}
			off += int64(b.Len)
			n += b.Len
		}
		return n, statusOK
	case typeOut:
		for _, b := range r.data {
			src, _ := d.ram.Slice(b.Addr, uint64(b.Len))
			if _, err = d.f.WriteAt(src, off); err != nil {
				break
			}
			off += int64(b.Len)
		}
	case typeFlush:
		err = d.flush()
	case typeGetID:
		var id [idSize]byte
		copy(id[:], d.cfg.ID)
		dst, _ := d.ram.Mutable(r.data[0].Addr, idSize)
		copy(dst, id[:])
		return idSize, statusOK
	case typeDiscard, typeWriteZeroes:
		err = zero(d.f, off, int64(r.sectors)*sectorSize)
	}
	if err != nil {
		return 0, statusIOErr
	}
	return 0, statusOK
}

// flush makes a Writeback drive's completed writes stable; on an Unsafe
// one it does nothing.
func (d *Device) flush() error {
	if d.cfg.Cache != Writeback || d.cfg.ReadOnly {
		return nil
	}
	return fdatasync(d.f)
}

// zeroFallback writes n zero bytes at off: for platforms and files that
// cannot punch holes.
func zeroFallback(f *os.File, off, n int64) error {
	buf := make([]byte, min(n, sizeMax))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := f.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}
