package virtio

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/squibvm/squib/memory"
)

// Descriptor flags (virtio 1.2 §2.7.5).
const (
	descNext     = 1
	descWrite    = 2 // the buffer is device-writable
	descIndirect = 4 // the buffer is a table of descriptors
)

const (
	descSize = 16 // bytes per descriptor: addr le64, len le32, flags le16, next le16
	// maxIndirect caps an indirect table at what 16-bit next fields can
	// index.
	maxIndirect = 1 << 16
)

// Layout is the shape a queue's chains must have: which buffers the device
// reads and which it writes. Virtio puts every readable buffer before the
// writable ones (§2.7.4.2).
type Layout uint8

const (
	// ReadThenWrite is a request and room for its reply: one or more
	// readable buffers, then one or more writable ones.
	ReadThenWrite Layout = iota
	// ReadOnly chains have readable buffers only (a transmit queue).
	ReadOnly
	// WriteOnly chains have writable buffers only (a receive queue).
	WriteOnly
)

// Buffer is one buffer of a chain: Len bytes of guest RAM at guest physical
// address Addr. Pop has checked that it lies inside RAM.
type Buffer struct {
	Addr uint64
	Len  uint32
}

// Chain is a descriptor chain the driver made available, read once from
// guest memory and checked; later changes by the guest to the descriptors
// do not change it.
type Chain struct {
	Head     uint16   // the chain's first descriptor: what the used element names
	Readable []Buffer // the buffers the device reads, in order
	Writable []Buffer // the buffers the device writes, in order

	room   uint64 // total length of Writable
	pushed bool
}

// Why a chain is malformed. Pop returns such a chain to the driver unused.
var (
	errDescIndex       = errors.New("descriptor index beyond its table")
	errChainLoop       = errors.New("chain longer than its table: a loop")
	errBufferRange     = errors.New("buffer not inside guest RAM")
	errTotalLen        = errors.New("chain's total length over 2^32-1 bytes")
	errIndirectFeature = errors.New("indirect descriptor without VIRTIO_F_INDIRECT_DESC")
	errIndirectNested  = errors.New("indirect descriptor inside an indirect table")
	errIndirectNext    = errors.New("indirect descriptor with NEXT set")
	errIndirectLen     = errors.New("indirect table length not a multiple of 16 from 16 to 1 MiB")
	errIndirectRange   = errors.New("indirect table not inside guest RAM")
	errWritable        = errors.New("writable buffer in a chain the device only reads")
	errReadable        = errors.New("readable buffer in a chain the device only writes")
	errReadAfterWrite  = errors.New("readable buffer after a writable one")
	errNoReadable      = errors.New("request chain without a readable buffer")
	errNoWritable      = errors.New("request chain without a writable buffer")
)

type descriptor struct {
	addr        uint64
	len         uint32
	flags, next uint16
}

// walk reads and checks the chain whose first descriptor is head, in q's
// table and in at most one indirect table: every index inside its table,
// every buffer and table inside RAM (gpa+len not wrapping), no more
// descriptors than the table has (which ends loops), the indirect rules of
// §2.7.5.3, readable before writable and as l requires, and a total length
// that fits the used element's 32 bits. Each descriptor is read once.
// The direct chain may be as long as the queue; an indirect table's chain
// as long as the table, which Linux may make longer than the queue (as
// QEMU and rust-vmm allow).
func (q *Queue) walk(head uint16, l Layout) (*Chain, error) {
	c := &Chain{Head: head}
	table, n := q.desc, uint32(q.size)
	ttl, inIndirect := n, false
	var total uint64
	for i := uint32(head); ; {
		if i >= n {
			return nil, errDescIndex
		}
		d, err := q.descriptor(table + uint64(i)*descSize)
		if err != nil {
			return nil, errIndirectRange // not reached: both tables were checked to lie in RAM
		}
		if d.flags&descIndirect != 0 {
			switch {
			case inIndirect:
				return nil, errIndirectNested
			case !q.indirect:
				return nil, errIndirectFeature
			case d.flags&descNext != 0:
				return nil, errIndirectNext
			case d.len == 0 || d.len%descSize != 0 || d.len/descSize > maxIndirect:
				return nil, errIndirectLen
			case !q.ram.Contains(d.addr, uint64(d.len)):
				return nil, errIndirectRange
			}
			table, n, i = d.addr, d.len/descSize, 0
			ttl, inIndirect = n, true
			continue
		}
		if ttl == 0 {
			return nil, errChainLoop
		}
		ttl--
		if !q.ram.Contains(d.addr, uint64(d.len)) {
			return nil, errBufferRange
		}
		if total += uint64(d.len); total > math.MaxUint32 {
			return nil, errTotalLen
		}
		b := Buffer{d.addr, d.len}
		if d.flags&descWrite != 0 {
			if l == ReadOnly {
				return nil, errWritable
			}
			c.Writable = append(c.Writable, b)
			c.room += uint64(d.len)
		} else {
			switch {
			case l == WriteOnly:
				return nil, errReadable
			case len(c.Writable) > 0:
				return nil, errReadAfterWrite
			}
			c.Readable = append(c.Readable, b)
		}
		if d.flags&descNext == 0 {
			break
		}
		i = uint32(d.next)
	}
	if l != ReadOnly && l != WriteOnly {
		switch {
		case len(c.Readable) == 0:
			return nil, errNoReadable
		case len(c.Writable) == 0:
			return nil, errNoWritable
		}
	}
	return c, nil
}

// descriptor reads the descriptor at gpa.
func (q *Queue) descriptor(gpa uint64) (descriptor, error) {
	b, err := q.ram.Slice(gpa, descSize)
	if err != nil {
		return descriptor{}, err
	}
	le := binary.LittleEndian
	return descriptor{le.Uint64(b), le.Uint32(b[8:]), le.Uint16(b[12:]), le.Uint16(b[14:])}, nil
}

// Room is the total length of the chain's writable buffers.
func (c *Chain) Room() uint64 { return c.room }

// Gather copies the chain's readable buffers, in order, into b and returns
// the bytes copied; more reports that the buffers hold more than b (empty
// buffers after b is full hold nothing more).
func (c *Chain) Gather(ram *memory.RAM, b []byte) (n int, more bool) {
	for _, buf := range c.Readable {
		if n == len(b) && buf.Len > 0 {
			return n, true
		}
		src, err := ram.Slice(buf.Addr, uint64(min(buf.Len, uint32(len(b)-n))))
		if err != nil {
			return n, false // not reached: Pop checked that the buffers lie in RAM
		}
		n += copy(b[n:], src)
		if uint64(len(src)) < uint64(buf.Len) {
			return n, true
		}
	}
	return n, false
}

// Scatter copies ps, one after the other, into the chain's writable
// buffers, through RAM's write log, and returns the bytes written: all of
// them, or the writable buffers' Room if that is less.
func (c *Chain) Scatter(ram *memory.RAM, ps ...[]byte) uint32 {
	var n uint32
	bufs, off := c.Writable, uint32(0)
	for _, p := range ps {
		for len(p) > 0 && len(bufs) > 0 {
			b := bufs[0]
			k := min(uint32(len(p)), b.Len-off)
			dst, err := ram.Mutable(b.Addr+uint64(off), uint64(k))
			if err != nil {
				return n // not reached: Pop checked that the buffers lie in RAM
			}
			copy(dst, p)
			p, off, n = p[k:], off+k, n+k
			if off == b.Len {
				bufs, off = bufs[1:], 0
			}
		}
	}
	return n
}
