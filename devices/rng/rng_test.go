package rng

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// The test's guest RAM: the queue's rings at ringArea (descriptor table,
// avail ring at +0x1000, used ring at +0x2000), buffers from bufArea up.
const (
	ramBase  = 0x4000_0000
	ramSize  = 1 << 20
	ringArea = ramBase
	avail    = ringArea + 0x1000
	used     = ringArea + 0x2000
	bufArea  = ramBase + 0x10000
	logBlock = 4096 // the write log's block size
)

// guest plays Linux's virtio-rng driver over the transport. Its own writes
// into RAM bypass the write log, but for avail.idx, which it stores with
// the accessor the device reads it with.
type guest struct {
	t        *testing.T
	mem      []byte
	ram      *memory.RAM
	tr       *virtio.Transport
	availIdx uint16
	nextDesc uint16
}

func newGuest(t *testing.T) *guest {
	t.Helper()
	mem := make([]byte, ramSize)
	ram := memory.Adopt(ramBase, mem, func([]byte) error { return nil })
	if err := ram.TrackWrites(logBlock); err != nil {
		t.Fatal(err)
	}
	tr, err := virtio.New(New(ram), ram, func(bool) {}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	g := &guest{t: t, mem: mem, ram: ram, tr: tr}
	// virtio-mmio registers (virtio 1.2 §4.2.2), set up in the driver's
	// order (§3.1.1, §4.2.3.2): features VERSION_1 (bit 32) only.
	if g.r(0x000) != 0x74726976 || g.r(0x008) != 4 || g.r(0x010)&(1<<24-1) != 0 {
		t.Fatalf("magic %#x, device ID %d, device features[0:32] %#x; want virt, 4 (entropy), no device-type features",
			g.r(0x000), g.r(0x008), g.r(0x010))
	}
	for _, w := range [][2]uint32{
		{0x070, 0}, {0x070, 1}, {0x070, 3}, // reset, ACKNOWLEDGE, DRIVER
		{0x024, 1}, {0x020, 1}, {0x024, 0}, {0x020, 0}, // DriverFeatures: VERSION_1
		{0x070, 11},              // FEATURES_OK
		{0x030, 0}, {0x038, 256}, // queue 0, of 256
		{0x080, ringArea}, {0x090, avail}, {0x0a0, used},
		{0x044, 1},  // QueueReady
		{0x070, 15}, // DRIVER_OK
	} {
		tr.Write(uint64(w[0]), 4, uint64(w[1]))
	}
	if s := g.r(0x070); s != 15 {
		t.Fatalf("status %#x after set-up, want 15", s)
	}
	return g
}

func (g *guest) r(off uint64) uint32 { return uint32(g.tr.Read(off, 4)) }

// buf is one buffer of a chain: write is device-writable.
type buf struct {
	addr  uint64
	n     uint32
	write bool
}

// give makes a chain of bufs available, notifies the device and waits
// until it has given the chain back; it returns the used length.
func (g *guest) give(bufs ...buf) uint32 {
	g.t.Helper()
	le := binary.LittleEndian
	head := g.nextDesc
	for i, b := range bufs {
		d := g.mem[(g.nextDesc%256)*16:]
		g.nextDesc++
		var flags uint16
		if b.write {
			flags = 2
		}
		if i < len(bufs)-1 {
			flags |= 1 // NEXT
		}
		le.PutUint64(d, b.addr)
		le.PutUint32(d[8:], b.n)
		le.PutUint16(d[12:], flags)
		le.PutUint16(d[14:], g.nextDesc%256)
	}
	le.PutUint16(g.mem[avail-ramBase+4+2*uint64(g.availIdx%256):], head)
	g.availIdx++
	if err := g.ram.AtomicStore16(avail+2, g.availIdx); err != nil { // the device may be reading it
		g.t.Fatal(err)
	}
	g.tr.Write(0x050, 4, 0) // QueueNotify
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if idx, _ := g.ram.AtomicLoad16(used + 2); idx == g.availIdx {
			break
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("chain %d not given back", head)
		}
	}
	e := g.mem[used-ramBase+4+8*uint64((g.availIdx-1)%256):]
	if id := le.Uint32(e); id != uint32(head) {
		g.t.Fatalf("used element names chain %d, want %d", id, head)
	}
	return le.Uint32(e[4:])
}

func (g *guest) bytes(addr uint64, n uint32) []byte {
	return g.mem[addr-ramBase : addr-ramBase+uint64(n)]
}

// TestFill: the device fills every writable buffer of a chain with random
// bytes, through the write log, and says how many it wrote.
func TestFill(t *testing.T) {
	g := newGuest(t)
	a, b := uint64(bufArea+100), uint64(bufArea+3*logBlock)
	g.ram.TakeWrites() // the driver's set-up
	if n := g.give(buf{a, 1000, true}, buf{b, 24, true}); n != 1024 {
		t.Fatalf("used length %d, want 1024", n)
	}
	zero := make([]byte, 16)
	for _, s := range [][]byte{g.bytes(a, 1000), g.bytes(b, 24)} {
		if bytes.Equal(s[:16], zero) || bytes.Equal(s[len(s)-16:], zero) {
			t.Errorf("buffer not filled: % x ... % x", s[:16], s[len(s)-16:])
		}
	}
	if g.bytes(a-1, 1)[0] != 0 || g.bytes(a+1000, 1)[0] != 0 || g.bytes(b+24, 1)[0] != 0 {
		t.Error("the device wrote outside the buffers")
	}
	// The buffers' blocks and the used ring's (and the avail ring's, for
	// the driver's avail.idx), and nothing else.
	var want uint64 = 1<<((a-ramBase)/logBlock) | 1<<((b-ramBase)/logBlock) | 1<<((used-ramBase)/logBlock) | 1<<((avail-ramBase)/logBlock)
	if got := g.ram.TakeWrites(); got[0] != want || slices.ContainsFunc(got[1:], func(w uint64) bool { return w != 0 }) {
		t.Errorf("write log %#x, want %#x", got, want)
	}
}

// TestFillBound: a chain gets at most 64 KiB, however long its buffers
// say they are (here one 48 KiB buffer given three times over).
func TestFillBound(t *testing.T) {
	g := newGuest(t)
	big := buf{bufArea, 48 << 10, true}
	if n := g.give(big, big, big); n != maxFill {
		t.Fatalf("used length %d, want %d", n, maxFill)
	}
}

// TestReadableBufferRefused: a chain with a buffer for the device to read
// is malformed for this device and given back unused.
func TestReadableBufferRefused(t *testing.T) {
	g := newGuest(t)
	if n := g.give(buf{bufArea, 64, false}, buf{bufArea + 64, 64, true}); n != 0 {
		t.Fatalf("used length %d, want 0", n)
	}
	if !bytes.Equal(g.bytes(bufArea, 128), make([]byte, 128)) {
		t.Error("the device wrote into a malformed chain")
	}
	if n := g.give(buf{bufArea, 64, true}); n != 64 { // and the queue goes on
		t.Fatalf("used length %d after a malformed chain, want 64", n)
	}
}
