package rng

import (
	"bytes"
	"log/slog"
	"slices"
	"testing"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
	"github.com/squibvm/squib/virtio/virtiotest"
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

// guest plays Linux's virtio-rng driver over the transport.
type guest struct{ *virtiotest.Driver }

type buf = virtiotest.Buf

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
	if f := uint32(tr.Read(0x010, 4)) & (1<<24 - 1); f != 0 {
		t.Fatalf("device features[0:24] %#x; want no device-type features", f)
	}
	return &guest{virtiotest.Start(t, tr, ram, mem, 4)} // 4: entropy
}

// TestFill: the device fills every writable buffer of a chain with random
// bytes, through the write log, and says how many it wrote.
func TestFill(t *testing.T) {
	g := newGuest(t)
	a, b := uint64(bufArea+100), uint64(bufArea+3*logBlock)
	g.RAM.TakeWrites() // the driver's set-up
	if n := g.Give(buf{Addr: a, N: 1000, Write: true}, buf{Addr: b, N: 24, Write: true}); n != 1024 {
		t.Fatalf("used length %d, want 1024", n)
	}
	zero := make([]byte, 16)
	for _, s := range [][]byte{g.Bytes(a, 1000), g.Bytes(b, 24)} {
		if bytes.Equal(s[:16], zero) || bytes.Equal(s[len(s)-16:], zero) {
			t.Errorf("buffer not filled: % x ... % x", s[:16], s[len(s)-16:])
		}
	}
	if g.Bytes(a-1, 1)[0] != 0 || g.Bytes(a+1000, 1)[0] != 0 || g.Bytes(b+24, 1)[0] != 0 {
		t.Error("the device wrote outside the buffers")
	}
	// The buffers' blocks and the used ring's (and the avail ring's, for
	// the driver's avail.idx), and nothing else.
	var want uint64 = 1<<((a-ramBase)/logBlock) | 1<<((b-ramBase)/logBlock) | 1<<((used-ramBase)/logBlock) | 1<<((avail-ramBase)/logBlock)
	if got := g.RAM.TakeWrites(); got[0] != want || slices.ContainsFunc(got[1:], func(w uint64) bool { return w != 0 }) {
		t.Errorf("write log %#x, want %#x", got, want)
	}
}

// TestFillBound: a chain gets at most 64 KiB, however long its buffers
// say they are (here one 48 KiB buffer given three times over).
func TestFillBound(t *testing.T) {
	g := newGuest(t)
	big := buf{Addr: bufArea, N: 48 << 10, Write: true}
	if n := g.Give(big, big, big); n != maxFill {
		t.Fatalf("used length %d, want %d", n, maxFill)
	}
}

// TestReadableBufferRefused: a chain with a buffer for the device to read
// is malformed for this device and given back unused.
func TestReadableBufferRefused(t *testing.T) {
	g := newGuest(t)
	if n := g.Give(buf{Addr: bufArea, N: 64, Write: false}, buf{Addr: bufArea + 64, N: 64, Write: true}); n != 0 {
		t.Fatalf("used length %d, want 0", n)
	}
	if !bytes.Equal(g.Bytes(bufArea, 128), make([]byte, 128)) {
		t.Error("the device wrote into a malformed chain")
	}
	if n := g.Give(buf{Addr: bufArea, N: 64, Write: true}); n != 64 { // and the queue goes on
		t.Fatalf("used length %d after a malformed chain, want 64", n)
	}
}
