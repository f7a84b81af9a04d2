package vsock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
	"github.com/squibvm/squib/virtio/virtiotest"
)

// The test guest's RAM: the three queues' rings from its base
// (virtiotest's layout), event buffers at evArea, packets to send at
// txArea (a header and its payload per slot), receive buffers from rxArea.
const (
	ramBase  = 0x4000_0000
	ramSize  = 4 << 20
	evArea   = ramBase + 0x10000
	txArea   = ramBase + 0x20000
	txSlot   = hdrSize + maxPayload
	txSlots  = 8
	rxArea   = ramBase + 0x100000
	rxLen    = hdrSize + 4096 // Linux's receive buffers
	rxStride = 0x2000
	rxCount  = 64
	guestCID = 3
	// guestBufAlloc is the receive buffer the test guest advertises;
	// echoLimit the echo it holds before it stops reading.
	guestBufAlloc = 64 << 10
	echoLimit     = 256 << 10
)

// guest plays Linux's vsock driver over a device's rings, on the test's
// goroutine: it keeps receive buffers posted, sends packets, and answers
// what it receives as a small AF_VSOCK stack would. Guest ports in listen
// accept connections; those in echo send back what they receive; those in
// stalled hold what they receive without consuming it; REQUESTs to ports
// in ignore get no answer.
type guest struct {
	t       *testing.T
	d       *Device
	tr      *virtio.Transport
	drv     *virtiotest.Driver
	path    string
	logs    *virtiotest.Logs
	rx      map[uint16]posted
	conns   map[[2]uint32]*gconn // by guest port, host port
	listen  map[uint32]bool
	echo    map[uint32]bool
	stalled map[uint32]bool
	ignore  map[uint32]bool
	seen    []pkt // every packet received, in order
	cursor  int   // seen[cursor:] are the packets expect has not passed
}

type posted struct {
	addr uint64
	n    uint32
}

// pkt is a packet with its payload.
type pkt struct {
	h    header
	data []byte
}

// gconn is the guest's side of a connection.
type gconn struct {
	guestPort, hostPort uint32
	fwdCnt, reported    uint32 // bytes consumed; fwd_cnt as last sent
	rcvd, txCnt         uint32 // payload bytes received and sent
	peerAlloc, peerFwd  uint32 // the device's credit
	in, got, out        []byte // received and not consumed; consumed; to send
	shut                uint32 // SHUTDOWN flags received
	echo, sentShut      bool
	open, reset         bool
}

// newGuest makes a device on a socket in a temporary directory (path, if
// not empty), restores it from s if given, and starts the test guest's
// driver on it with receive buffers posted.
func newGuest(t *testing.T, path string, s *State) *guest {
	t.Helper()
	mem := make([]byte, ramSize)
	ram := memory.Adopt(ramBase, mem, func([]byte) error { return nil })
	if path == "" {
		path = filepath.Join(t.TempDir(), "v.sock")
	}
	l := &virtiotest.Logs{}
	d, err := New(Config{CID: guestCID, UDSPath: path}, ram, slog.New(l))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := virtio.New(d, ram, func(bool) {}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d.SetNotify(tr.Notify)
	t.Cleanup(func() { tr.Close(); d.Close() })
	if s != nil {
		if err := d.Restore(*s); err != nil {
			t.Fatal(err)
		}
	}
	g := &guest{t: t, d: d, tr: tr, path: path, logs: l, rx: map[uint16]posted{}, conns: map[[2]uint32]*gconn{},
		listen: map[uint32]bool{}, echo: map[uint32]bool{}, stalled: map[uint32]bool{}, ignore: map[uint32]bool{},
		drv: virtiotest.StartQueues(t, tr, ram, mem, 19, 3)}
	for i := range uint64(rxCount) {
		g.postRx(rxArea+i*rxStride, rxLen)
	}
	return g
}

func (g *guest) postRx(addr uint64, n uint32) {
	g.rx[g.drv.Post(rxQueue, virtiotest.Buf{Addr: addr, N: n, Write: true})] = posted{addr, n}
}

// send transmits packets as one batch, with one notification, and waits
// until the device has taken them all.
func (g *guest) send(ps ...pkt) {
	g.t.Helper()
	if len(ps) > txSlots {
		g.t.Fatalf("%d packets in a batch, at most %d", len(ps), txSlots)
	}
	for i, p := range ps {
		addr := txArea + uint64(i)*txSlot
		copy(g.drv.Bytes(addr, hdrSize), p.h.encode())
		bufs := []virtiotest.Buf{{Addr: addr, N: hdrSize}}
		if len(p.data) > 0 {
			copy(g.drv.Bytes(addr+hdrSize, uint32(len(p.data))), p.data)
			bufs = append(bufs, virtiotest.Buf{Addr: addr + hdrSize, N: uint32(len(p.data))})
		}
		g.drv.Add(txQueue, bufs...)
	}
	g.drv.Kick(txQueue)
	if u := g.drv.Wait(txQueue, len(ps), 5*time.Second); len(u) != len(ps) {
		g.t.Fatalf("the device took %d of %d packets", len(u), len(ps))
	}
}

// hdr is the header of a packet from the guest on c.
func (g *guest) hdr(c *gconn, op uint16) header {
	c.reported = c.fwdCnt
	return header{srcCID: guestCID, dstCID: HostCID, srcPort: c.guestPort, dstPort: c.hostPort, typ: typeStream, op: op,
		bufAlloc: guestBufAlloc, fwdCnt: c.fwdCnt}
}

// sendOn sends one packet of op on c, its payload counted as sent.
func (g *guest) sendOn(c *gconn, op uint16, data []byte, flags uint32) {
	g.t.Helper()
	h := g.hdr(c, op)
	h.len, h.flags = uint32(len(data)), flags
	c.txCnt += h.len
	g.send(pkt{h, data})
}

// dial opens a guest-initiated connection from guest port from to host
// port to.
func (g *guest) dial(from, to uint32) *gconn {
	c := &gconn{guestPort: from, hostPort: to}
	g.conns[[2]uint32{from, to}] = c
	g.sendOn(c, opRequest, nil, 0)
	return c
}

// recv collects the packets the device delivered, checking their
// headers, and posts their buffers again.
func (g *guest) recv() []pkt {
	var out []pkt
	for _, u := range g.drv.Used(rxQueue) {
		b := g.rx[u.Head]
		delete(g.rx, u.Head)
		if u.Len < hdrSize {
			if b.n > hdrSize {
				g.t.Errorf("receive buffer of %d bytes given back with %d", b.n, u.Len)
			}
			continue // a short buffer the device refused, as it should
		}
		raw := g.drv.Bytes(b.addr, u.Len)
		h := decodeHeader(raw)
		if h.srcCID != HostCID || h.dstCID != guestCID || h.typ != typeStream || h.len != u.Len-hdrSize || h.op != opRst && h.bufAlloc != bufAlloc {
			g.t.Errorf("packet %+v in %d bytes", h, u.Len)
		}
		out = append(out, pkt{h, bytes.Clone(raw[hdrSize:])})
		g.postRx(b.addr, b.n)
	}
	g.seen = append(g.seen, out...)
	return out
}

// apply answers one packet as the guest's stack would.
func (g *guest) apply(p pkt) {
	h := p.h
	k := [2]uint32{h.dstPort, h.srcPort}
	c := g.conns[k]
	if c != nil && h.op != opRst {
		c.peerAlloc, c.peerFwd = h.bufAlloc, h.fwdCnt
	}
	switch h.op {
	case opRequest:
		if g.ignore[h.dstPort] {
			return
		}
		if c != nil || !g.listen[h.dstPort] {
			g.send(pkt{h: header{srcCID: guestCID, dstCID: HostCID, srcPort: h.dstPort, dstPort: h.srcPort, typ: typeStream, op: opRst}})
			return
		}
		c = &gconn{guestPort: h.dstPort, hostPort: h.srcPort, peerAlloc: h.bufAlloc, peerFwd: h.fwdCnt, echo: g.echo[h.dstPort], open: true}
		g.conns[k] = c
		g.sendOn(c, opResponse, nil, 0)
	case opResponse:
		if c != nil {
			c.open = true
		}
	case opRW:
		if c == nil {
			g.t.Errorf("data for no connection: %+v", h)
			return
		}
		c.rcvd += h.len
		if c.rcvd-c.reported > guestBufAlloc {
			g.t.Errorf("port %d: the device sent %d bytes past the guest's fwd_cnt %d, more than its credit", c.guestPort, c.rcvd-c.reported, c.reported)
		}
		c.in = append(c.in, p.data...)
	case opShutdown:
		if c != nil {
			c.shut |= h.flags
		}
	case opRst:
		if c != nil {
			if !c.echo {
				c.got = append(c.got, c.in...)
			}
			c.reset, c.open = true, false
			delete(g.conns, k)
		}
	case opCreditRequest:
		if c != nil {
			g.sendOn(c, opCreditUpdate, nil, 0)
		}
	}
}

// flush consumes what unstalled connections received, echoes and sends
// what they have to send within the device's credit, and closes echo
// connections the host closed.
func (g *guest) flush() {
	for _, c := range g.conns {
		if !c.open {
			continue
		}
		// An echo server, like Linux's, stops reading while what it has to
		// send back is stuck.
		if len(c.in) > 0 && !g.stalled[c.guestPort] && (!c.echo || len(c.out) < echoLimit) {
			if c.echo {
				c.out = append(c.out, c.in...)
			} else {
				c.got = append(c.got, c.in...)
			}
			c.fwdCnt += uint32(len(c.in))
			c.in = nil
		}
		for len(c.out) > 0 {
			credit := c.peerAlloc - (c.txCnt - c.peerFwd)
			n := min(len(c.out), int(credit), 16<<10)
			if n == 0 {
				break
			}
			g.sendOn(c, opRW, c.out[:n], 0)
			c.out = c.out[n:]
		}
		if c.fwdCnt-c.reported > guestBufAlloc/2 {
			g.sendOn(c, opCreditUpdate, nil, 0)
		}
		if c.echo && c.shut&shutSend != 0 && len(c.out) == 0 && !c.sentShut {
			c.sentShut = true
			g.sendOn(c, opShutdown, nil, shutRcv|shutSend)
		}
	}
}

// step receives and answers what the device delivered; it reports
// whether there was anything.
func (g *guest) step() bool {
	ps := g.recv()
	for _, p := range ps {
		g.apply(p)
	}
	g.flush()
	return len(ps) > 0
}

// run steps the guest until done reports true, failing the test after
// timeout.
func (g *guest) run(timeout time.Duration, what string, done func() bool) {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for !done() {
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out waiting for %s", what)
		}
		if !g.step() {
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// echoed writes want to host stream c and steps the guest, whose echo server
// sends it back, until c has read it all back, failing the test if the
// echo differs or takes longer than timeout.
func (g *guest) echoed(c io.ReadWriter, want []byte, timeout time.Duration, what string) {
	g.t.Helper()
	done := make(chan error, 1)
	go func() {
		go c.Write(want)
		got := make([]byte, len(want))
		_, err := io.ReadFull(c, got)
		if err == nil && !bytes.Equal(got, want) {
			err = errors.New("echo differs")
		}
		done <- err
	}()
	if err := await(g, done, timeout, what); err != nil {
		g.t.Errorf("%s: %v", what, err)
	}
}

// await steps the guest until ch delivers, failing the test after
// timeout, and returns what it delivered.
func await[T any](g *guest, ch <-chan T, timeout time.Duration, what string) T {
	g.t.Helper()
	var v T
	g.run(timeout, what, func() bool {
		select {
		case v = <-ch:
			return true
		default:
			return false
		}
	})
	return v
}

// expect steps the guest until it has received a packet of op to guest
// port port after those expect returned before, and returns it.
func (g *guest) expect(op uint16, port uint32) pkt {
	g.t.Helper()
	var found pkt
	g.run(5*time.Second, fmt.Sprintf("op %d to port %d", op, port), func() bool {
		for i := g.cursor; i < len(g.seen); i++ {
			if p := g.seen[i]; p.h.op == op && p.h.dstPort == port {
				found, g.cursor = p, i+1
				return true
			}
		}
		return false
	})
	return found
}

// quiet steps the guest for a while and fails on any packet received.
func (g *guest) quiet(d time.Duration, why string) {
	g.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Millisecond) {
		for _, p := range g.recv() {
			g.t.Errorf("%s: the device sent %+v", why, p.h)
		}
	}
}

// connCount is how many connections the device has.
func (d *Device) connCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// waitConns waits 5 s at most for the device to have n connections
// (it forgets one just after the RST it sent).
func (g *guest) waitConns(n int, why string) {
	g.t.Helper()
	for end := time.Now().Add(5 * time.Second); g.d.connCount() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			g.t.Errorf("%s: %d connections, want %d", why, g.d.connCount(), n)
			return
		}
	}
}

// closed reports whether a host stream read failed as a closed one does:
// EOF, or a reset when the device closed it with bytes unread.
func closed(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

// hostConnect dials the device's socket and sends CONNECT port, as a host
// program does.
func (g *guest) hostConnect(port uint32) *net.UnixConn {
	g.t.Helper()
	s, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: g.path, Net: "unix"})
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { s.Close() })
	if _, err := fmt.Fprintf(s, "Connect %d\n", port); err != nil {
		g.t.Fatal(err)
	}
	return s
}

// readLine reads a line from s within a deadline, one byte at a time.
func readLine(s net.Conn, timeout time.Duration) (string, error) {
	s.SetReadDeadline(time.Now().Add(timeout))
	defer s.SetReadDeadline(time.Time{})
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := s.Read(b); err != nil {
			return string(line), err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
}

// pattern is n bytes that differ from stream to stream (seed).
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}
