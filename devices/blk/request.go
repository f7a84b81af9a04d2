package blk

import (
	"encoding/binary"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// request is a parsed, checked request.
type request struct {
	typ     uint32
	sector  uint64          // IN, OUT: the first sector; DISCARD, WRITE_ZEROES: the segment's
	sectors uint64          // DISCARD, WRITE_ZEROES: the segment's length
	data    []virtio.Buffer // IN: where to read into; OUT: what to write; GET_ID: the id's buffer
}

// parse reads and checks the request of chain c (readable buffers then
// writable ones, as Pop gave it) against a capacity of sectors. The
// header is the first 16 readable bytes, the status the last writable
// byte; data lie between them, in the direction the type requires. A
// malformed request gets IOERR, an unknown type or flag UNSUPP (§5.2.6).
func parse(c *virtio.Chain, ram *memory.RAM, sectors uint64) (request, byte) {
	le := binary.LittleEndian
	if len(c.Readable) == 0 || c.Readable[0].Len < headerSize || len(c.Writable) == 0 {
		return request{}, statusIOErr
	}
	hdr, err := ram.Slice(c.Readable[0].Addr, headerSize)
	if err != nil {
		return request{}, statusIOErr
	}
	r := request{typ: le.Uint32(hdr), sector: le.Uint64(hdr[8:])}
	// What the device reads after the header, and what it writes before
	// the status byte.
	in := trim(c.Readable, headerSize, 0)
	out := trim(c.Writable, 0, 1)
	switch r.typ {
	case typeIn, typeOut:
		data, other := out, in
		if r.typ == typeOut {
			data, other = in, out
		}
		n, ok := total(data)
		if len(other) != 0 || !ok || n == 0 || n%sectorSize != 0 || !within(r.sector, n/sectorSize, sectors) {
			return request{}, statusIOErr
		}
		r.data = data
	case typeFlush:
		if len(in) != 0 || len(out) != 0 {
			return request{}, statusIOErr
		}
	case typeGetID:
		if n, _ := total(out); len(in) != 0 || len(out) == 0 || out[0].Len < idSize || n < idSize {
			return request{}, statusIOErr
		}
		r.data = out
	case typeDiscard, typeWriteZeroes:
		// One segment (max_discard_seg, max_write_zeroes_seg): sector
		// le64, num_sectors le32, flags le32 (bit 0 unmap).
		if len(in) != 1 || in[0].Len != 16 || len(out) != 0 {
			return request{}, statusIOErr
		}
		seg, err := ram.Slice(in[0].Addr, 16)
		if err != nil {
			return request{}, statusIOErr
		}
		flags := le.Uint32(seg[12:])
		if flags&^1 != 0 || r.typ == typeDiscard && flags != 0 {
			return request{}, statusUnsupp
		}
		r.sector, r.sectors = le.Uint64(seg), uint64(le.Uint32(seg[8:]))
		if r.sectors == 0 || r.sectors > maxZeroSectors || !within(r.sector, r.sectors, sectors) {
			return request{}, statusIOErr
		}
	default:
		return request{}, statusUnsupp
	}
	return r, statusOK
}

// trim returns bufs without their first head and last tail bytes, and
// without empty buffers.
func trim(bufs []virtio.Buffer, head, tail uint64) []virtio.Buffer {
	var out []virtio.Buffer
	for _, b := range bufs {
		n := uint64(b.Len)
		skip := min(head, n)
		b.Addr, n, head = b.Addr+skip, n-skip, head-skip
		out = append(out, virtio.Buffer{Addr: b.Addr, Len: uint32(n)})
	}
	for i := len(out) - 1; i >= 0 && tail > 0; i-- {
		k := min(tail, uint64(out[i].Len))
		out[i].Len -= uint32(k)
		tail -= k
	}
	kept := out[:0]
	for _, b := range out {
		if b.Len != 0 {
			kept = append(kept, b)
		}
	}
	return kept
}

// total is the length of bufs, and whether they are within segMax buffers
// of at most sizeMax bytes each.
func total(bufs []virtio.Buffer) (uint64, bool) {
	var n uint64
	for _, b := range bufs {
		if b.Len > sizeMax {
			return 0, false
		}
		n += uint64(b.Len)
	}
	return n, len(bufs) <= segMax
}

// within reports whether n sectors from sector lie inside a capacity of
// capacity sectors, without overflowing.
func within(sector, n, capacity uint64) bool {
	return sector <= capacity && n <= capacity-sector
}
