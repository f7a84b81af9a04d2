package blk

import (
	"encoding/binary"
	"testing"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// FuzzParse: whatever a chain's buffers and their bytes say, parse
// returns a status, and an accepted request lies within the capacity and
// in guest RAM.
func FuzzParse(f *testing.F) {
	hdr := func(typ uint32, sector uint64) []byte {
		b := make([]byte, 32)
		binary.LittleEndian.PutUint32(b, typ)
		binary.LittleEndian.PutUint64(b[8:], sector)
		return b
	}
	f.Add(hdr(typeIn, 0), uint8(1), uint8(2), uint32(512), uint32(1))
	f.Add(hdr(typeOut, 2047), uint8(2), uint8(1), uint32(512), uint32(1))
	f.Add(hdr(typeGetID, 0), uint8(1), uint8(2), uint32(20), uint32(1))
	f.Add(hdr(typeFlush, 0), uint8(1), uint8(1), uint32(0), uint32(1))
	f.Add(append(hdr(typeWriteZeroes, 0)[:16], 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0), uint8(2), uint8(1), uint32(16), uint32(1))
	f.Add(hdr(typeIn, 1<<63), uint8(1), uint8(3), uint32(1<<31), uint32(7))
	const base, size, capacity = 0x1000, 1 << 16, 2048
	f.Fuzz(func(t *testing.T, data []byte, nr, nw uint8, dlen, slen uint32) {
		mem := make([]byte, size)
		copy(mem, data)
		ram := memory.Adopt(base, mem, func([]byte) error { return nil })
		c := &virtio.Chain{Readable: []virtio.Buffer{{Addr: base, Len: min(uint32(len(data)), 32)}}}
		for range nr % 4 {
			c.Readable = append(c.Readable, virtio.Buffer{Addr: base + 16, Len: dlen % (size / 2)})
		}
		for range nw % 4 {
			c.Writable = append(c.Writable, virtio.Buffer{Addr: base + 64, Len: dlen % (size / 2)})
		}
		c.Writable = append(c.Writable, virtio.Buffer{Addr: base + 128, Len: slen%8 + 1})
		if len(data) < 16 {
			c.Readable[0].Len = uint32(len(data))
		}
		r, s := parse(c, ram, capacity)
		if s != statusOK {
			return
		}
		var n uint64
		for _, b := range r.data {
			if !ram.Contains(b.Addr, uint64(b.Len)) {
				t.Fatalf("buffer %+v outside RAM", b)
			}
			n += uint64(b.Len)
		}
		switch r.typ {
		case typeIn, typeOut:
			if n%512 != 0 || r.sector+n/512 > capacity || r.sector > capacity {
				t.Fatalf("accepted %+v beyond the capacity", r)
			}
		case typeDiscard, typeWriteZeroes:
			if r.sector+r.sectors > capacity || r.sector > capacity {
				t.Fatalf("accepted %+v beyond the capacity", r)
			}
		}
	})
}
