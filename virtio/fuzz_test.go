package virtio

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"math"
	"testing"

	"github.com/squibvm/squib/memory"
)

// The fuzz targets' guest RAM: 4 KiB at fuzzBase, inside a larger slice
// whose guard bytes on either side must stay untouched. Seeds put the
// descriptor table at offset 0, the avail ring at 0x100, the used ring at
// 0x200 and buffers from 0x400.
const (
	fuzzBase  = 0x1000
	fuzzRAM   = 0x1000
	fuzzGuard = 64
)

type fuzzMem struct {
	backing []byte
	ram     *memory.RAM
}

func newFuzzMem(contents []byte) *fuzzMem {
	m := &fuzzMem{backing: make([]byte, fuzzGuard+fuzzRAM+fuzzGuard)}
	for i := range m.backing {
		m.backing[i] = 0xa5
	}
	mem := m.backing[fuzzGuard : fuzzGuard+fuzzRAM : fuzzGuard+fuzzRAM]
	clear(mem)
	copy(mem, contents)
	m.ram = memory.Adopt(fuzzBase, mem, func([]byte) error { return nil })
	return m
}

func (m *fuzzMem) guardsIntact() bool {
	for _, b := range m.backing[:fuzzGuard] {
		if b != 0xa5 {
			return false
		}
	}
	for _, b := range m.backing[fuzzGuard+fuzzRAM:] {
		if b != 0xa5 {
			return false
		}
	}
	return true
}

// seedMem returns a RAM image with the given descriptors at offset 0 and
// the given heads made available in a ring at 0x100.
func seedMem(descs []descriptor, heads ...uint16) []byte {
	b := make([]byte, fuzzRAM)
	for i, d := range descs {
		putDesc(b, i, d.addr, d.len, d.flags, d.next)
	}
	for i, h := range heads {
		binary.LittleEndian.PutUint16(b[0x104+2*i:], h)
	}
	binary.LittleEndian.PutUint16(b[0x102:], uint16(len(heads)))
	return b
}

const buf0 = fuzzBase + 0x400

var seedChains = [][]descriptor{
	{{buf0, 16, descNext, 1}, {buf0 + 16, 8, descWrite, 0}},                                                   // request and reply
	{{buf0, 64, descIndirect, 0}, {}, {}, {}},                                                                 // an indirect table (its entries at buf0: zeros)
	{{buf0 + 0x100, 4, descNext, 1}, {buf0, 32, descIndirect, 0}},                                             // direct, then indirect
	{{buf0, 8, descNext, 1}, {buf0, 8, descNext, 0}},                                                          // a loop
	{{buf0, 8, descNext | descWrite, 1}, {buf0, 8, 0, 0}},                                                     // readable after writable
	{{fuzzBase + fuzzRAM - 4, 8, 0, 0}},                                                                       // across the end of RAM
	{{math.MaxUint64 - 3, 8, descWrite, 0}},                                                                   // wrapping around
	{{buf0, 48, descIndirect, 0}, {buf0 + 0x100, 24, descIndirect, 0}},                                        // chained indirect pointers
	{{buf0, 8, descNext, 200}},                                                                                // next beyond the table
	{{buf0, 1, descWrite | descNext, 1}, {buf0 + 1, 1, descWrite | descNext, 2}, {buf0 + 2, 1, descWrite, 0}}, // receive buffers
}

// FuzzChain feeds the chain walker random descriptor tables: it must
// return, and a chain it accepts must have every buffer inside RAM, the
// shape asked for, and a total length that fits 32 bits.
func FuzzChain(f *testing.F) {
	for i, c := range seedChains {
		f.Add(seedMem(c), uint8(3), uint16(0), uint8(i%3), i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, contents []byte, sizeExp uint8, head uint16, layout uint8, indirect bool) {
		m := newFuzzMem(contents)
		size := uint16(1) << (sizeExp % 5)
		feat := uint64(featVersion1)
		if indirect {
			feat |= featIndirectDesc
		}
		q, err := newQueue(m.ram, size, fuzzBase, fuzzBase+0x100, fuzzBase+0x200, feat)
		if err != nil {
			t.Fatal(err)
		}
		before := bytes.Clone(m.backing)
		l := Layout(layout % 3)
		c, err := q.walk(head, l)
		if !bytes.Equal(m.backing, before) {
			t.Fatal("walk wrote memory")
		}
		if err != nil {
			return
		}
		if n := len(c.Readable) + len(c.Writable); n == 0 || n > int(size)+maxIndirect {
			t.Fatalf("chain of %d buffers from a %d-entry queue", n, size)
		}
		var total, room uint64
		for _, b := range append(append([]Buffer(nil), c.Readable...), c.Writable...) {
			if !m.ram.Contains(b.Addr, uint64(b.Len)) {
				t.Fatalf("buffer [%#x, +%#x) outside RAM", b.Addr, b.Len)
			}
			total += uint64(b.Len)
		}
		for _, b := range c.Writable {
			room += uint64(b.Len)
		}
		switch {
		case total > math.MaxUint32:
			t.Fatalf("total length %#x", total)
		case room != c.room:
			t.Fatalf("room %d, buffers %d", c.room, room)
		case l == ReadOnly && len(c.Writable) > 0, l == WriteOnly && len(c.Readable) > 0,
			l == ReadThenWrite && (len(c.Readable) == 0 || len(c.Writable) == 0):
			t.Fatalf("layout %d: chain %+v", l, c)
		}
	})
}

// FuzzQueue runs a device's rounds of Pop and Push over random RAM, with
// the rings anywhere in it, overlapping or not: every round must end
// within a queue's worth of chains, and the queue must write nothing but
// its used ring.
func FuzzQueue(f *testing.F) {
	for i, c := range seedChains {
		f.Add(seedMem(c, 0, 0, 1), uint8(3), uint16(0), uint16(0x100), uint16(0x200), uint8(i), uint8(i%3))
	}
	f.Add(seedMem(seedChains[0], 0), uint8(3), uint16(0), uint16(0x100), uint16(0x100), uint8(1), uint8(0)) // used ring on the avail ring
	f.Add(seedMem(seedChains[0], 0), uint8(4), uint16(0), uint16(0x100), uint16(0xff8), uint8(1), uint8(0)) // used ring at the end of RAM
	f.Fuzz(func(t *testing.T, contents []byte, sizeExp uint8, desc, avail, used uint16, feat, layout uint8) {
		m := newFuzzMem(contents)
		size := uint16(1) << (sizeExp % 5)
		features := uint64(featVersion1)
		if feat&1 != 0 {
			features |= featEventIdx
		}
		if feat&2 != 0 {
			features |= featIndirectDesc
		}
		at := func(off uint16, align uint64) uint64 { return fuzzBase + uint64(off)%fuzzRAM&^(align-1) }
		q, err := newQueue(m.ram, size, at(desc, 16), at(avail, 2), at(used, 4), features)
		if err != nil {
			return // rings that do not fit: the transport refuses them at DRIVER_OK
		}
		before := bytes.Clone(m.backing)
		l := Layout(layout % 3)
		for range 3 {
			q.budget, q.more = int(size), false
			pops := 0
			for {
				if pops++; pops > int(size)+1 {
					t.Fatalf("more than %d Pops in a round", size+1)
				}
				c, err := q.Pop(l)
				if err != nil || c == nil {
					break
				}
				if err := q.Push(c, uint32(min(c.room, 7))); err != nil {
					break
				}
			}
			if _, err := q.interrupt(); err != nil {
				break
			}
		}
		if !m.guardsIntact() {
			t.Fatal("wrote outside RAM")
		}
		usedOff := q.used - fuzzBase
		usedEnd := usedOff + 6 + 8*uint64(size)
		for i, b := range m.backing[fuzzGuard : fuzzGuard+fuzzRAM] {
			if o := uint64(i); (o < usedOff || o >= usedEnd) && b != before[fuzzGuard+i] {
				t.Fatalf("wrote RAM offset %#x, outside the used ring [%#x, %#x)", o, usedOff, usedEnd)
			}
		}
	})
}

// FuzzTransport drives the registers with random accesses, then serves the
// queues: nothing may panic or hang, and guest RAM outside it stays
// untouched.
func FuzzTransport(f *testing.F) {
	// A driver's initialization with one queue at the seed layout, then a
	// notification, as (offset, value) pairs of 32-bit writes.
	init := []uint32{
		regStatus, 0, regStatus, 1, regStatus, 3, regDriverFeaturesSel, 1, regDriverFeatures, 1,
		regDriverFeaturesSel, 0, regDriverFeatures, 1 << 29, regStatus, 11,
		regQueueSel, 0, regQueueNum, 8, regQueueDescLow, fuzzBase, regQueueAvailLow, fuzzBase + 0x100,
		regQueueUsedLow, fuzzBase + 0x200, regQueueReady, 1, regStatus, 15, regQueueNotify, 0,
	}
	var ops []byte
	for i := 0; i < len(init); i += 2 {
		ops = binary.LittleEndian.AppendUint16(ops, uint16(init[i]))
		ops = append(ops, 4|0x80) // a 4-byte write
		ops = binary.LittleEndian.AppendUint32(ops, init[i+1])
	}
	f.Add(seedMem(seedChains[0], 0), ops)
	f.Add(seedMem(seedChains[3], 0, 0), ops)
	f.Fuzz(func(t *testing.T, contents, ops []byte) {
		m := newFuzzMem(contents)
		dev := &testDevice{ram: m.ram, sizes: []uint16{8, 2}, config: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
		tr, err := New(dev, m.ram, func(bool) {}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		for ; len(ops) >= 7; ops = ops[7:] {
			off := uint64(binary.LittleEndian.Uint16(ops)) % (Size + 0x10)
			size := []int{1, 2, 4, 8}[ops[2]&3]
			if ops[2]&4 != 0 {
				size = 4
			}
			v := uint64(binary.LittleEndian.Uint32(ops[3:]))
			if ops[2]&0x80 != 0 {
				tr.Write(off, size, v)
			} else {
				tr.Read(off, size)
			}
		}
		tr.serve()
		if !m.guardsIntact() {
			t.Fatal("wrote outside RAM")
		}
	})
}
