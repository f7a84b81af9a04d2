package netdev

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
	"github.com/squibvm/squib/virtio/virtiotest"
)

// The test guest's RAM: the two queues' rings from its base (virtiotest's
// layout), frames to send from txArea, receive buffers from rxArea.
const (
	ramBase  = 0x4000_0000
	ramSize  = 16 << 20
	txArea   = ramBase + 0x10000
	txStride = 0x800
	rxArea   = ramBase + 0x100000
	rxLen    = HeaderSize + 1514 // Linux's buffers for a 1500-byte MTU
	rxStride = 0x800
)

// rig is a device on a unixgram backend whose peer (gvproxy's side) is the
// test's socket, driven by a test guest.
type rig struct {
	t    *testing.T
	d    *Device
	drv  *virtiotest.Driver
	peer *net.UnixConn // bound at the path squibd connects to
	to   *net.UnixAddr // squibd's socket
	logs *virtiotest.Logs
	rx   map[uint16]uint64 // posted receive buffers by head
	slot int               // the next transmit slot
}

func newRig(t *testing.T, mac net.HardwareAddr) *rig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gvproxy.sock")
	peer, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	cfg := Config{ID: "eth0", MAC: mac, Unixgram: path, VfkitMagic: true}
	l := &virtiotest.Logs{}
	be, err := Open(cfg, slog.New(l))
	if err != nil {
		t.Fatal(err)
	}
	// vfkit's handshake: the first datagram is VFKT, and names squibd's
	// socket, to which the peer then sends.
	b := make([]byte, 64)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := peer.ReadFromUnix(b)
	if err != nil || string(b[:n]) != "VFKT" {
		t.Fatalf("first datagram %q, %v; want VFKT", b[:n], err)
	}
	if !strings.HasPrefix(filepath.Base(from.Name), "squibd-") || filepath.Dir(from.Name) != filepath.Dir(path) {
		t.Fatalf("squibd's socket is %q, want squibd-*.sock beside %s", from.Name, path)
	}
	mem := make([]byte, ramSize)
	ram := memory.Adopt(ramBase, mem, func([]byte) error { return nil })
	d := New(cfg, be, ram, slog.New(l))
	tr, err := virtio.New(d, ram, func(bool) {}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d.SetNotify(tr.Notify)
	t.Cleanup(func() { tr.Close(); d.Close() })
	r := &rig{t: t, d: d, peer: peer, to: from, logs: l, rx: map[uint16]uint64{}, drv: virtiotest.StartQueues(t, tr, ram, mem, 1, 2)}
	return r
}

// postRx posts n receive buffers of size bytes.
func (r *rig) postRx(n int, size uint32) {
	for range n {
		addr := rxArea + uint64(len(r.rx))*rxStride
		r.rx[r.drv.Post(rxQueue, virtiotest.Buf{Addr: addr, N: size, Write: true})] = addr
	}
}

// frame is an Ethernet frame of n bytes numbered i.
func frame(i, n int) []byte {
	f := make([]byte, n)
	copy(f, "\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00")
	binary.BigEndian.PutUint32(f[14:], uint32(i))
	for j := 18; j < n; j++ {
		f[j] = byte(i + j)
	}
	return f
}

// send transmits frames, each after a header hdr, without waiting.
func (r *rig) send(hdr []byte, frames ...[]byte) {
	for _, f := range frames {
		addr := txArea + uint64(r.slot%256)*txStride
		r.slot++
		copy(r.drv.Bytes(addr, uint32(len(hdr))), hdr)
		copy(r.drv.Bytes(addr+uint64(len(hdr)), uint32(len(f))), f)
		// The header and the frame in two buffers, as Linux sends them.
		bufs := []virtiotest.Buf{{Addr: addr + uint64(len(hdr)), N: uint32(len(f))}}
		if len(hdr) > 0 {
			bufs = append([]virtiotest.Buf{{Addr: addr, N: uint32(len(hdr))}}, bufs...)
		}
		r.drv.Add(txQueue, bufs...)
	}
	r.drv.Kick(txQueue)
}

// peerSend sends f to squibd as one datagram.
func (r *rig) peerSend(f []byte) {
	r.t.Helper()
	if _, err := r.peer.WriteToUnix(f, r.to); err != nil {
		r.t.Fatal(err)
	}
}

// peerRecv reads one datagram the device sent.
func (r *rig) peerRecv(timeout time.Duration) ([]byte, error) {
	b := make([]byte, MaxFrame)
	r.peer.SetReadDeadline(time.Now().Add(timeout))
	n, err := r.peer.Read(b)
	return b[:n], err
}

func TestConfigSpace(t *testing.T) {
	mac := net.HardwareAddr{0x06, 0, 0xac, 0x10, 0, 2}
	r := newRig(t, mac)
	if got := r.d.Features(); got != featMAC {
		t.Errorf("features %#x on a unixgram backend, want MAC alone (%#x)", got, featMAC)
	}
	if got := r.d.Config(); !bytes.Equal(got, append(mac[:6:6], 0, 0, 0, 0, 0, 0)) {
		t.Errorf("config space % x", got)
	}
	if got := newRig(t, nil).d.Features(); got != 0 {
		t.Errorf("features %#x without a MAC, want none", got)
	}
}

func TestTransmit(t *testing.T) {
	r := newRig(t, nil)
	want := [][]byte{frame(1, 60), frame(2, 1514), frame(3, 9000)}
	r.send(make([]byte, HeaderSize), want...)
	for i, w := range want {
		got, err := r.peerRecv(5 * time.Second)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("frame %d: peer got %d bytes, want the %d-byte frame without its header", i, len(got), len(w))
		}
	}
	if u := r.drv.Wait(txQueue, 3, 5*time.Second); len(u) != 3 {
		t.Fatalf("%d of 3 chains given back", len(u))
	}
}

func TestReceive(t *testing.T) {
	r := newRig(t, nil)
	r.postRx(4, rxLen)
	want := [][]byte{frame(1, 60), frame(2, 1514)}
	for _, f := range want {
		r.peerSend(f)
	}
	u := r.drv.Wait(rxQueue, 2, 5*time.Second)
	if len(u) != 2 {
		t.Fatalf("%d of 2 frames received", len(u))
	}
	for i, e := range u {
		got := r.drv.Bytes(r.rx[e.Head], e.Len)
		hdr := make([]byte, HeaderSize)
		hdr[10] = 1 // num_buffers
		if !bytes.Equal(got[:HeaderSize], hdr) || !bytes.Equal(got[HeaderSize:], want[i]) {
			t.Errorf("frame %d: received %d bytes, header % x; want a zero header with num_buffers 1 and the %d-byte frame", i, e.Len, got[:HeaderSize], len(want[i]))
		}
	}
}

// TestHostileTransmit: chains too short, too long, or asking for an
// offload the device did not offer are dropped, each kind logged once, and
// the device goes on.
func TestHostileTransmit(t *testing.T) {
	r := newRig(t, nil)
	hdr := make([]byte, HeaderSize)
	csum := append([]byte{hdrNeedsCsum}, hdr[1:]...)
	gso := append([]byte{0, 1}, hdr[2:]...) // TCPV4
	r.send(nil, []byte("short"))
	r.send(csum, frame(1, 100), frame(2, 100))
	r.send(gso, frame(3, 100))
	// Longer than MaxFrame, in buffers of 4 KiB.
	var long []virtiotest.Buf
	for i := range 17 {
		long = append(long, virtiotest.Buf{Addr: rxArea + uint64(i)*0x1000, N: 0x1000})
	}
	r.drv.Post(txQueue, long...)
	r.send(hdr, frame(4, 100))
	got, err := r.peerRecv(5 * time.Second)
	if err != nil || !bytes.Equal(got, frame(4, 100)) {
		t.Fatalf("the peer got %d bytes (%v) first, want the one good frame", len(got), err)
	}
	if u := r.drv.Wait(txQueue, 6, 5*time.Second); len(u) != 6 {
		t.Fatalf("%d of 6 chains given back", len(u))
	}
	if _, err := r.peerRecv(200 * time.Millisecond); err == nil {
		t.Error("a bad frame reached the peer")
	}
	for _, m := range []string{"shorter than the 12-byte header", "longer than 65562", "offload the device did not offer"} {
		if n := r.logs.Count(m); n != 1 {
			t.Errorf("%q logged %d times, want once", m, n)
		}
	}
}

// TestReceiveTooLong: a frame longer than the guest's buffer is dropped,
// its chain given back unused, and the next frame arrives.
func TestReceiveTooLong(t *testing.T) {
	r := newRig(t, nil)
	r.postRx(2, rxLen)
	r.peerSend(frame(1, 4000))
	r.peerSend(frame(2, 100))
	u := r.drv.Wait(rxQueue, 2, 5*time.Second)
	if len(u) != 2 || u[0].Len != 0 || u[1].Len != HeaderSize+100 {
		t.Fatalf("used %+v, want the first chain unused and the second with the 100-byte frame", u)
	}
	if n := r.logs.Count("longer than the guest's receive buffer"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
}

// TestBackpressure: while the peer reads nothing, the device stops taking
// the guest's frames (and blocks nothing else); once it reads, every frame
// arrives, in order.
func TestBackpressure(t *testing.T) {
	r := newRig(t, nil)
	const n = 120 // two descriptors each: the whole table
	var frames [][]byte
	for i := range n {
		frames = append(frames, frame(i, 1514))
	}
	r.send(make([]byte, HeaderSize), frames...)
	time.Sleep(300 * time.Millisecond)
	taken := len(r.drv.Used(txQueue))
	if taken >= n {
		t.Fatalf("the device took all %d frames while the peer read none", n)
	}
	// Receiving still works meanwhile.
	r.postRx(1, rxLen)
	r.peerSend(frame(999, 100))
	if u := r.drv.Wait(rxQueue, 1, 5*time.Second); len(u) != 1 {
		t.Fatal("no frame received while transmission was stalled")
	}
	for i := range n {
		got, err := r.peerRecv(5 * time.Second)
		if err != nil {
			t.Fatalf("frame %d: %v (the device had taken %d before the peer read)", i, err, taken)
		}
		if !bytes.Equal(got, frames[i]) {
			t.Fatalf("frame %d out of order or damaged: got %d bytes numbered %d", i, len(got), binary.BigEndian.Uint32(got[14:]))
		}
	}
	if u := r.drv.Wait(txQueue, n-taken, 5*time.Second); taken+len(u) != n {
		t.Fatalf("%d of %d chains given back", taken+len(u), n)
	}
	t.Logf("taken before the peer read: %d of %d", taken, n)
}

func TestStateConfig(t *testing.T) {
	fwd, err := ParseForward("8080:80")
	if err != nil {
		t.Fatal(err)
	}
	c := Config{ID: "eth0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, User: true, Publish: []Forward{fwd}}
	got, err := c.state().Config()
	if err != nil || fmt.Sprint(got) != fmt.Sprint(c) {
		t.Fatalf("round trip gave %+v, %v; want %+v", got, err, c)
	}
	for _, s := range []State{
		{ID: "eth0"},                                          // no backend
		{ID: "eth0", Tap: "a", User: true},                    // two
		{ID: "eth0", Tap: "a", MAC: []byte{1, 2}},             // short MAC
		{ID: "eth0", Tap: "a", MAC: []byte{1, 0, 0, 0, 0, 1}}, // multicast
		{ID: "eth0", Tap: "a", Publish: []string{"1:2"}},      // forwards without user
		{ID: "eth0", User: true, Publish: []string{"x"}},
		{ID: "", User: true},
		{ID: "eth0", Tap: "a-name-longer-than-15"},
	} {
		if _, err := s.Config(); err == nil {
			t.Errorf("state %+v accepted", s)
		}
	}
}

// TestUserMTU: on the user-mode network the device offers MTU and its
// configuration space's mtu is UserMTU, so that Linux takes 64 KiB frames.
func TestUserMTU(t *testing.T) {
	be, err := NewUser(UserConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := New(Config{ID: "eth0", User: true}, be, nil, nil)
	defer d.Close()
	if d.Features()&featMTU == 0 {
		t.Errorf("features %#x, want MTU", d.Features())
	}
	if c := d.Config(); len(c) != 12 || binary.LittleEndian.Uint16(c[10:]) != UserMTU {
		t.Errorf("config space % x, want mtu %d at 10", c, UserMTU)
	}
}
