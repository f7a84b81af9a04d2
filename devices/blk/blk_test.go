package blk

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
	"github.com/squibvm/squib/virtio/virtiotest"
)

// The test's guest RAM: the queue's rings at ringArea (descriptor table,
// avail ring at +0x1000, used ring at +0x2000), request headers at hdrArea,
// status bytes at statArea, data from bufArea up.
const (
	ramBase  = 0x4000_0000
	ramSize  = 4 << 20
	ringArea = ramBase
	avail    = ringArea + 0x1000
	used     = ringArea + 0x2000
	hdrArea  = ramBase + 0x8000
	statArea = ramBase + 0x9000
	bufArea  = ramBase + 0x10000
	logBlock = 4096

	imageSize = 1 << 20 // 2048 sectors
)

// guest plays Linux's virtio-blk driver over the transport.
type guest struct {
	*virtiotest.Driver
	dev *Device
}

type buf = virtiotest.Buf

// image makes a file of imageSize bytes, byte i being i*7.
func image(t *testing.T) string {
	t.Helper()
	b := make([]byte, imageSize)
	for i := range b {
		b[i] = byte(i * 7)
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newGuest(t *testing.T, c Config) *guest {
	t.Helper()
	mem := make([]byte, ramSize)
	ram := memory.Adopt(ramBase, mem, func([]byte) error { return nil })
	if err := ram.TrackWrites(logBlock); err != nil {
		t.Fatal(err)
	}
	dev, err := Open(c, ram)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	tr, err := virtio.New(dev, ram, func(bool) {}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return &guest{virtiotest.Start(t, tr, ram, mem, 2), dev} // 2: block
}

func (g *guest) req(typ uint32, sector uint64, data []buf) (uint32, byte) {
	g.T.Helper()
	h := g.Bytes(hdrArea, headerSize)
	binary.LittleEndian.PutUint32(h, typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	g.Bytes(statArea, 1)[0] = 0xff
	chain := append([]buf{{Addr: hdrArea, N: headerSize, Write: false}}, data...)
	n := g.Give(append(chain, buf{Addr: statArea, N: 1, Write: true})...)
	return n, g.Bytes(statArea, 1)[0]
}

func TestReadWrite(t *testing.T) {
	p := image(t)
	g := newGuest(t, Config{ID: "rootfs", Path: p, Cache: Writeback})
	if cap := binary.LittleEndian.Uint64(g.dev.Config()); cap != imageSize/512 {
		t.Fatalf("capacity %d, want %d", cap, imageSize/512)
	}
	g.RAM.TakeWrites()
	// IN: sectors 3-4, in two buffers.
	if n, s := g.req(typeIn, 3, []buf{{Addr: bufArea, N: 512, Write: true}, {Addr: bufArea + 0x4000, N: 512, Write: true}}); n != 1025 || s != statusOK {
		t.Fatalf("IN: used %d status %d, want 1025, 0", n, s)
	}
	want, _ := os.ReadFile(p)
	if !bytes.Equal(g.Bytes(bufArea, 512), want[3*512:4*512]) || !bytes.Equal(g.Bytes(bufArea+0x4000, 512), want[4*512:5*512]) {
		t.Fatal("IN read the wrong bytes")
	}
	if w := g.RAM.TakeWrites(); w[0]&(1<<((bufArea-ramBase)/logBlock)) == 0 || w[0]&(1<<((bufArea+0x4000-ramBase)/logBlock)) == 0 {
		t.Errorf("write log %#x misses the IN buffers", w[0])
	}
	// OUT, then FLUSH, then GET_ID.
	copy(g.Bytes(bufArea, 1024), bytes.Repeat([]byte{0xab}, 1024))
	if n, s := g.req(typeOut, 2046, []buf{{Addr: bufArea, N: 1024, Write: false}}); n != 1 || s != statusOK {
		t.Fatalf("OUT: used %d status %d, want 1, 0", n, s)
	}
	if n, s := g.req(typeFlush, 0, nil); n != 1 || s != statusOK {
		t.Fatalf("FLUSH: used %d status %d", n, s)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got[2046*512:], bytes.Repeat([]byte{0xab}, 1024)) || !bytes.Equal(got[:2046*512], want[:2046*512]) {
		t.Fatal("OUT wrote the wrong bytes")
	}
	if n, s := g.req(typeGetID, 0, []buf{{Addr: bufArea, N: 20, Write: true}}); n != 21 || s != statusOK || string(g.Bytes(bufArea, 20)) != "rootfs\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" {
		t.Fatalf("GET_ID: used %d status %d id %q", n, s, g.Bytes(bufArea, 20))
	}
	if f := g.dev.Features(); f&featFlush == 0 || f&featRO != 0 {
		t.Errorf("features %#x: want FLUSH, not RO", f)
	}
}

// TestZeroes: WRITE_ZEROES and DISCARD leave zeros, and the file keeps
// its size.
func TestZeroes(t *testing.T) {
	p := image(t)
	g := newGuest(t, Config{ID: "d", Path: p})
	for _, typ := range []uint32{typeWriteZeroes, typeDiscard} {
		seg := g.Bytes(bufArea, 16)
		binary.LittleEndian.PutUint64(seg, 8)
		binary.LittleEndian.PutUint32(seg[8:], 16)
		binary.LittleEndian.PutUint32(seg[12:], 0)
		if n, s := g.req(typ, 0, []buf{{Addr: bufArea, N: 16, Write: false}}); n != 1 || s != statusOK {
			t.Fatalf("type %d: used %d status %d", typ, n, s)
		}
		got, _ := os.ReadFile(p)
		if len(got) != imageSize || !bytes.Equal(got[8*512:24*512], make([]byte, 16*512)) || got[24*512+1] != byte((24*512+1)*7%256) {
			t.Fatalf("type %d: sectors 8-23 not zeroed, or more", typ)
		}
	}
	// DISCARD with unmap, and unknown flags: UNSUPP.
	binary.LittleEndian.PutUint32(g.Bytes(bufArea+12, 4), 1)
	if _, s := g.req(typeDiscard, 0, []buf{{Addr: bufArea, N: 16, Write: false}}); s != statusUnsupp {
		t.Errorf("DISCARD with unmap: status %d, want UNSUPP", s)
	}
	binary.LittleEndian.PutUint32(g.Bytes(bufArea+12, 4), 2)
	if _, s := g.req(typeWriteZeroes, 0, []buf{{Addr: bufArea, N: 16, Write: false}}); s != statusUnsupp {
		t.Errorf("WRITE_ZEROES with flag 2: status %d, want UNSUPP", s)
	}
}

// TestHostile: bad requests are answered IOERR or UNSUPP and change
// nothing; the queue goes on.
func TestHostile(t *testing.T) {
	p := image(t)
	g := newGuest(t, Config{ID: "d", Path: p})
	seg := func(sector uint64, n uint32) []buf {
		s := g.Bytes(bufArea+0x100000, 16)
		binary.LittleEndian.PutUint64(s, sector)
		binary.LittleEndian.PutUint32(s[8:], n)
		binary.LittleEndian.PutUint32(s[12:], 0)
		return []buf{{Addr: bufArea + 0x100000, N: 16, Write: false}}
	}
	for _, c := range []struct {
		name   string
		typ    uint32
		sector uint64
		data   []buf
		want   byte
	}{
		{"IN beyond capacity", typeIn, 2048, []buf{{Addr: bufArea, N: 512, Write: true}}, statusIOErr},
		{"IN across the end", typeIn, 2047, []buf{{Addr: bufArea, N: 1024, Write: true}}, statusIOErr},
		{"IN at a sector that overflows", typeIn, 1<<64 - 1, []buf{{Addr: bufArea, N: 512, Write: true}}, statusIOErr},
		{"IN not a sector multiple", typeIn, 0, []buf{{Addr: bufArea, N: 100, Write: true}}, statusIOErr},
		{"IN over size_max", typeIn, 0, []buf{{Addr: bufArea, N: sizeMax + 512, Write: true}}, statusIOErr},
		{"IN with a readable buffer", typeIn, 0, []buf{{Addr: bufArea, N: 512, Write: false}}, statusIOErr},
		{"IN with no data", typeIn, 0, nil, statusIOErr},
		{"OUT with a writable buffer", typeOut, 0, []buf{{Addr: bufArea, N: 512, Write: true}}, statusIOErr},
		{"OUT beyond capacity", typeOut, 1 << 40, []buf{{Addr: bufArea, N: 512, Write: false}}, statusIOErr},
		{"FLUSH with data", typeFlush, 0, []buf{{Addr: bufArea, N: 512, Write: true}}, statusIOErr},
		{"GET_ID too short", typeGetID, 0, []buf{{Addr: bufArea, N: 19, Write: true}}, statusIOErr},
		{"WRITE_ZEROES beyond capacity", typeWriteZeroes, 0, seg(2040, 16), statusIOErr},
		{"WRITE_ZEROES overflowing", typeWriteZeroes, 0, seg(1<<64-8, 16), statusIOErr},
		{"WRITE_ZEROES too long", typeWriteZeroes, 0, seg(0, maxZeroSectors+1), statusIOErr},
		{"unknown type", 99, 0, nil, statusUnsupp},
	} {
		if n, s := g.req(c.typ, c.sector, c.data); s != c.want || n != 1 {
			t.Errorf("%s: used %d status %d, want 1, %d", c.name, n, s, c.want)
		}
	}
	// A header split short, and chains without a status byte or header:
	// the first answered IOERR, the others given back unused by Pop.
	g.Bytes(statArea, 1)[0] = 0xff
	if n := g.Give(buf{Addr: hdrArea, N: 8, Write: false}, buf{Addr: statArea, N: 1, Write: true}); n != 1 || g.Bytes(statArea, 1)[0] != statusIOErr {
		t.Errorf("short header: used %d status %d", n, g.Bytes(statArea, 1)[0])
	}
	if n := g.Give(buf{Addr: hdrArea, N: 16, Write: false}); n != 0 {
		t.Errorf("no status byte: used %d, want 0", n)
	}
	if n := g.Give(buf{Addr: hdrArea, N: 16, Write: true}, buf{Addr: statArea, N: 1, Write: true}); n != 0 {
		t.Errorf("writable header: used %d, want 0", n)
	}
	if n := g.Give(buf{Addr: hdrArea, N: 16, Write: false}, buf{Addr: statArea, N: 0, Write: true}); n != 0 {
		t.Errorf("empty status buffer: used %d, want 0", n)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, mustRead(t, image(t))) {
		t.Error("a bad request changed the image")
	}
	if n, s := g.req(typeIn, 0, []buf{{Addr: bufArea, N: 512, Write: true}}); n != 513 || s != statusOK {
		t.Fatalf("IN after the bad requests: used %d status %d", n, s)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadOnly: a read-only drive says RO and refuses writes with IOERR,
// its file opened read-only (so a file without write permission serves).
func TestReadOnly(t *testing.T) {
	p := image(t)
	if err := os.Chmod(p, 0o400); err != nil {
		t.Fatal(err)
	}
	g := newGuest(t, Config{ID: "ro", Path: p, ReadOnly: true, Cache: Writeback})
	if f := g.dev.Features(); f&featRO == 0 || f&(featDiscard|featWriteZeroes) != 0 {
		t.Errorf("features %#x: want RO, no DISCARD or WRITE_ZEROES", f)
	}
	if _, s := g.req(typeOut, 0, []buf{{Addr: bufArea, N: 512, Write: false}}); s != statusIOErr {
		t.Errorf("OUT: status %d, want IOERR", s)
	}
	seg := g.Bytes(bufArea, 16)
	binary.LittleEndian.PutUint64(seg, 0)
	binary.LittleEndian.PutUint32(seg[8:], 1)
	if _, s := g.req(typeWriteZeroes, 0, []buf{{Addr: bufArea, N: 16, Write: false}}); s != statusIOErr {
		t.Errorf("WRITE_ZEROES: status %d, want IOERR", s)
	}
	if n, s := g.req(typeIn, 0, []buf{{Addr: bufArea, N: 512, Write: true}}); n != 513 || s != statusOK {
		t.Errorf("IN: used %d status %d", n, s)
	}
}

// TestLock: a writable image cannot be opened for writing twice; read-only
// opens are not refused.
func TestLock(t *testing.T) {
	p := image(t)
	d, err := Open(Config{ID: "a", Path: p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{ID: "b", Path: p}, nil); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "drive b") {
		t.Fatalf("second writable open: %v, want an error naming drive b and %s", err, p)
	}
	ro, err := Open(Config{ID: "c", Path: p, ReadOnly: true}, nil)
	if err != nil {
		t.Fatalf("read-only open of a locked image: %v", err)
	}
	ro.Close()
	d.Close()
	d, err = Open(Config{ID: "b", Path: p}, nil)
	if err != nil {
		t.Fatalf("open after the first closed: %v", err)
	}
	d.Close()
}

// TestState: a drive's state names its file and size.
func TestState(t *testing.T) {
	p := image(t)
	d, err := Open(Config{ID: "a", Path: p, Cache: Writeback}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := d.State()
	if err != nil || s != (State{ID: "a", Path: p, Cache: Writeback, Size: imageSize}) {
		t.Fatalf("State() = %+v, %v", s, err)
	}
}

// TestSwap gives a running drive a new image, as PATCH /drives does: with
// the transport quiesced across the swap and then told the new
// configuration, the driver sees the new capacity under a new
// ConfigGeneration with a configuration change interrupt, reads the new
// file's bytes, and the old file's lock is gone. A file that cannot be
// opened leaves the drive on its old one; the file the drive has open,
// resized, is taken again without a second lock.
func TestSwap(t *testing.T) {
	old := image(t)
	g := newGuest(t, Config{ID: "d", Path: old})
	next := filepath.Join(t.TempDir(), "next.img")
	want := bytes.Repeat([]byte{0x5a}, 2*imageSize)
	if err := os.WriteFile(next, want, 0o600); err != nil {
		t.Fatal(err)
	}
	capacity := func() uint64 { return g.Tr.Read(0x100, 8) }
	swap := func(path string) error {
		g.Tr.Quiesce()
		defer g.Tr.Unquiesce()
		if err := g.dev.Swap(path); err != nil {
			return err
		}
		return g.Tr.UpdateConfig(0, g.dev.Config())
	}
	gen := g.R(0x0fc)
	if err := swap(next); err != nil {
		t.Fatal(err)
	}
	if c := capacity(); c != 2*imageSize/512 || g.R(0x0fc) == gen || g.R(0x060)&2 == 0 {
		t.Fatalf("after the swap: capacity %d, generation %d (was %d), interrupt status %#x; want %d, a new generation, bit 1",
			c, g.R(0x0fc), gen, g.R(0x060), 2*imageSize/512)
	}
	g.Tr.Write(0x064, 4, 2) // InterruptACK
	if n, s := g.req(typeIn, 2*imageSize/512-1, []buf{{Addr: bufArea, N: 512, Write: true}}); n != 513 || s != statusOK ||
		!bytes.Equal(g.Bytes(bufArea, 512), want[:512]) {
		t.Fatalf("IN of the new image's last sector: used %d status %d", n, s)
	}
	if d, err := Open(Config{ID: "other", Path: old}, nil); err != nil {
		t.Errorf("the old image is still locked: %v", err)
	} else {
		d.Close()
	}
	if _, err := Open(Config{ID: "other", Path: next}, nil); err == nil || !strings.Contains(err.Error(), "is locked") {
		t.Errorf("a second writer of the new image: %v, want it refused as locked", err)
	}

	gen = g.R(0x0fc)
	missing := filepath.Join(t.TempDir(), "missing.img")
	if err := swap(missing); err == nil || !strings.Contains(err.Error(), "drive d: open "+missing) {
		t.Errorf("swap to a missing file: %v", err)
	}
	if s, _ := g.dev.State(); s.Path != next || s.Size != 2*imageSize || capacity() != 2*imageSize/512 || g.R(0x0fc) != gen {
		t.Errorf("after a failed swap: state %+v, capacity %d; want the new image kept", s, capacity())
	}
	if _, s := g.req(typeIn, 0, []buf{{Addr: bufArea, N: 512, Write: true}}); s != statusOK || !bytes.Equal(g.Bytes(bufArea, 512), want[:512]) {
		t.Errorf("IN after a failed swap: status %d, or not the new image's bytes", s)
	}

	if err := os.Truncate(next, imageSize); err != nil {
		t.Fatal(err)
	}
	if err := swap(next); err != nil {
		t.Fatalf("swap to the same file, resized: %v", err)
	}
	if s, _ := g.dev.State(); capacity() != imageSize/512 || s.Size != imageSize {
		t.Errorf("after the resize: capacity %d, size %d", capacity(), s.Size)
	}
	if _, s := g.req(typeIn, imageSize/512, []buf{{Addr: bufArea, N: 512, Write: true}}); s != statusIOErr {
		t.Errorf("IN beyond the shrunk capacity: status %d, want IOERR", s)
	}
}

// TestSwapReadOnly: a read-only drive's new image is opened read-only (a
// file without write permission serves) and not locked.
func TestSwapReadOnly(t *testing.T) {
	g := newGuest(t, Config{ID: "ro", Path: image(t), ReadOnly: true})
	next := image(t)
	if err := os.Chmod(next, 0o400); err != nil {
		t.Fatal(err)
	}
	g.Tr.Quiesce()
	err := g.dev.Swap(next)
	g.Tr.Unquiesce()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(next, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := Open(Config{ID: "w", Path: next}, nil)
	if err != nil {
		t.Fatalf("a writer of the read-only drive's new image: %v", err)
	}
	d.Close()
	if _, s := g.req(typeOut, 0, []buf{{Addr: bufArea, N: 512, Write: false}}); s != statusIOErr {
		t.Errorf("OUT after the swap: status %d, want IOERR", s)
	}
}

// TestZeroPunches: zero leaves zeros in exactly its range, and the
// file-system blocks wholly inside it are given back (a hole), where the
// file system of the test's directory can punch holes.
func TestZeroPunches(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	data := bytes.Repeat([]byte{0xa5}, 1<<20)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Sync()
	before := allocated(t, f)
	const off, n = 4096 + 100, 256 << 10
	if err := zero(f, off, n); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	copy(data[off:off+n], make([]byte, n))
	if !bytes.Equal(got, data) {
		t.Fatal("the file after zero differs from its data with the range zeroed")
	}
	if after := allocated(t, f); after > before-200<<10 {
		t.Errorf("allocated %d bytes before, %d after: no hole punched", before, after)
	}
}

// allocated is the file's allocated size in bytes.
func allocated(t *testing.T, f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}
