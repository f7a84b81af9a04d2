package vsock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio/virtiotest"
)

// TestHostConnectEcho: a host program connects to the socket, sends
// CONNECT (in any case) and gets OK with a host port from 2^30 up once the
// guest accepts; its bytes come back through the guest's echo server.
// When it shuts its writing, the guest sees SHUTDOWN SEND, closes in turn,
// the program reads EOF after the whole echo, and the device resets and
// forgets the connection.
func TestHostConnectEcho(t *testing.T) {
	g := newGuest(t, "", nil)
	g.listen[5000], g.echo[5000] = true, true
	s := g.hostConnect(5000)
	req := g.expect(opRequest, 5000)
	if req.h.srcPort != firstHostPort || req.h.bufAlloc != bufAlloc || req.h.fwdCnt != 0 {
		t.Errorf("REQUEST %+v, want from host port %d with buf_alloc %d", req.h, firstHostPort, bufAlloc)
	}
	g.run(time.Second, "the OK line", func() bool { return len(g.conns) == 1 })
	if line, err := readLine(s, 5*time.Second); line != "OK 1073741824" || err != nil {
		t.Fatalf("host read %q, %v; want OK 1073741824", line, err)
	}
	want := pattern(1, 300<<10)
	echoed := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(s)
		echoed <- b
	}()
	go func() {
		s.Write(want)
		s.CloseWrite()
	}()
	got := await(g, echoed, 10*time.Second, "the echo")
	if !bytes.Equal(got, want) {
		t.Errorf("echo of %d bytes: got %d, equal %v", len(want), len(got), bytes.Equal(got, want))
	}
	g.expect(opRst, 5000)
	g.waitConns(0, "both sides closed")
	// The next program gets the next port.
	g.hostConnect(5000)
	if req := g.expect(opRequest, 5000); req.h.srcPort != firstHostPort+1 {
		t.Errorf("second REQUEST from host port %d, want %d", req.h.srcPort, firstHostPort+1)
	}
}

// TestManyStreams runs 32 host programs at once, each echoing 256 KiB
// through the guest: every stream gets its own bytes back, and its own
// host port.
func TestManyStreams(t *testing.T) {
	g := newGuest(t, "", nil)
	g.listen[5000], g.echo[5000] = true, true
	const streams, size = 32, 256 << 10
	type result struct {
		port string
		err  error
	}
	results := make(chan result, streams)
	for i := range streams {
		go func() {
			results <- func() result {
				s, err := net.Dial("unix", g.path)
				if err != nil {
					return result{err: err}
				}
				defer s.Close()
				fmt.Fprintf(s, "CONNECT 5000\n")
				line, err := readLine(s, 10*time.Second)
				if err != nil || !strings.HasPrefix(line, "OK ") {
					return result{err: fmt.Errorf("handshake: %q, %v", line, err)}
				}
				want := pattern(i, size)
				go s.Write(want)
				got := make([]byte, size)
				s.SetReadDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.ReadFull(s, got); err != nil {
					return result{err: fmt.Errorf("stream %d: %w", i, err)}
				}
				if !bytes.Equal(got, want) {
					return result{err: fmt.Errorf("stream %d: echo differs", i)}
				}
				return result{port: line[3:]}
			}()
		}()
	}
	ports := map[string]bool{}
	g.run(30*time.Second, "every stream", func() bool {
		for {
			select {
			case r := <-results:
				if r.err != nil {
					t.Error(r.err)
				}
				if ports[r.port] {
					t.Errorf("port %s given twice", r.port)
				}
				ports[r.port] = true
			default:
				return len(ports) == streams
			}
		}
	})
	for p := range ports {
		if n, err := strconv.ParseUint(p, 10, 32); err != nil || n>>30 != 1 {
			t.Errorf("host port %q outside [2^30, 2^31)", p)
		}
	}
}

// TestStalledHostReader: a host program that sends but stops reading
// fills its own connection's buffers, and the guest runs out of credit for
// it (without overrunning it); another stream echoes 512 KiB meanwhile.
// Once the first program reads again, it gets all its bytes back.
func TestStalledHostReader(t *testing.T) {
	g := newGuest(t, "", nil)
	g.listen[5000], g.echo[5000] = true, true
	stalled := g.hostConnect(5000)
	g.expect(opRequest, 5000)
	g.run(time.Second, "the connection", func() bool { return len(g.conns) == 1 })
	if line, err := readLine(stalled, 5*time.Second); err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("handshake: %q, %v", line, err)
	}
	first := pattern(7, 2<<20)
	go stalled.Write(first)
	// Let it stall: its echo fills the host socket, then the device's
	// buffer; the guest's echo stops reading, and its receive buffer fills.
	g.run(10*time.Second, "the stall", func() bool {
		for _, c := range g.conns {
			if len(c.out) >= echoLimit && len(c.in) == guestBufAlloc && c.peerAlloc-(c.txCnt-c.peerFwd) == 0 {
				return true
			}
		}
		return false
	})

	other := g.hostConnect(5000)
	g.expect(opRequest, 5000)
	g.run(time.Second, "the second connection", func() bool { return len(g.conns) == 2 })
	if _, err := readLine(other, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	g.echoed(other, pattern(8, 512<<10), 20*time.Second, "the other stream beside the stalled one")

	back := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(first))
		io.ReadFull(stalled, b)
		back <- b
	}()
	got := await(g, back, 20*time.Second, "the stalled stream's echo")
	if !bytes.Equal(got, first) {
		t.Error("the stalled stream's echo differs")
	}
}

// TestStalledGuestReader: a guest socket that does not read its
// connection gets no more than its credit (the guest checks every
// packet), the host program's writes then wait, and another stream
// echoes meanwhile; once the guest reads, everything arrives.
func TestStalledGuestReader(t *testing.T) {
	g := newGuest(t, "", nil)
	g.listen[5000], g.echo[5000] = true, true
	g.listen[5001], g.stalled[5001] = true, true
	slow := g.hostConnect(5001)
	g.expect(opRequest, 5001)
	g.run(time.Second, "the connection", func() bool { return len(g.conns) == 1 })
	if _, err := readLine(slow, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	first := pattern(9, 1<<20)
	go slow.Write(first)
	var held *gconn
	g.run(5*time.Second, "a full guest buffer", func() bool {
		for _, c := range g.conns {
			held = c
		}
		return len(held.in) == guestBufAlloc
	})

	other := g.hostConnect(5000)
	g.expect(opRequest, 5000)
	if _, err := func() (string, error) {
		g.run(time.Second, "the second connection", func() bool { return len(g.conns) == 2 })
		return readLine(other, 5*time.Second)
	}(); err != nil {
		t.Fatal(err)
	}
	g.echoed(other, pattern(10, 256<<10), 20*time.Second, "the other stream")
	if len(held.in) != guestBufAlloc {
		t.Errorf("the stalled guest socket holds %d bytes, want its buffer's %d", len(held.in), guestBufAlloc)
	}
	delete(g.stalled, 5001)
	g.run(20*time.Second, "the stalled stream's bytes", func() bool { return len(held.got) == len(first) })
	if !bytes.Equal(held.got, first) {
		t.Error("the stalled stream's bytes differ")
	}
}

// TestGuestConnect: a guest connection to host port 5001 reaches the
// listener at UDSPath_5001 and carries bytes both ways; the guest's
// SHUTDOWN SEND becomes the host's EOF while the host can still write; the
// host's EOF becomes SHUTDOWN SEND; with both sides closed the device
// resets the connection and forgets it. A connection to a port nobody
// listens on is refused with RST.
func TestGuestConnect(t *testing.T) {
	g := newGuest(t, "", nil)
	l, err := net.Listen("unix", g.path+"_5001")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, _ := l.Accept()
		accepted <- s
	}()
	c := g.dial(7000, 5001)
	if p := g.expect(opResponse, 7000); p.h.srcPort != 5001 || p.h.bufAlloc != bufAlloc {
		t.Errorf("RESPONSE %+v", p.h)
	}
	c.open = true
	host := (<-accepted).(*net.UnixConn)
	defer host.Close()
	g.sendOn(c, opRW, []byte("hello"), 0)
	buf := make([]byte, 5)
	if _, err := io.ReadFull(host, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	host.Write([]byte("world"))
	g.run(5*time.Second, "world", func() bool { return string(c.got) == "world" })

	g.sendOn(c, opShutdown, nil, shutSend)
	host.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := host.Read(buf); err != io.EOF {
		t.Errorf("host read after the guest's SHUTDOWN SEND: %d, %v; want EOF", n, err)
	}
	host.Write([]byte("bye"))
	host.CloseWrite()
	p := g.expect(opShutdown, 7000)
	if p.h.flags != shutSend || string(c.got) != "worldbye" {
		t.Errorf("SHUTDOWN flags %d after %q; want SEND after worldbye", p.h.flags, c.got)
	}
	g.expect(opRst, 7000)
	g.waitConns(0, "both sides closed")

	g.dial(7001, 5002)
	g.expect(opRst, 7001)
	g.waitConns(0, "a refused connection")
}

// TestShutdownTimeout: a guest that closes a connection whose host reader
// has stopped, its bytes stuck in the device's buffer, gets the device's
// RST after the 2 s shutdown timeout, and the connection is forgotten.
func TestShutdownTimeout(t *testing.T) {
	g := newGuest(t, "", nil)
	l, err := net.Listen("unix", g.path+"_5001")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if s, err := l.Accept(); err == nil {
			defer s.Close() // and never read
			time.Sleep(time.Minute)
		}
	}()
	c := g.dial(7000, 5001)
	g.expect(opResponse, 7000)
	c.open, c.out = true, pattern(3, 4<<20)
	// Send until the device stops giving credit: the host socket and its
	// buffer are full.
	last, still := c.txCnt, time.Now()
	g.run(20*time.Second, "the guest's credit to run out", func() bool {
		if c.txCnt != last {
			last, still = c.txCnt, time.Now()
		}
		return time.Since(still) > 300*time.Millisecond
	})
	c.out = nil
	g.sendOn(c, opShutdown, nil, shutRcv|shutSend)
	start := time.Now()
	g.expect(opRst, 7000)
	if d := time.Since(start); d < shutdownTimeout*3/4 {
		t.Errorf("RST %v after the guest's SHUTDOWN, want it after the %v timeout", d, shutdownTimeout)
	}
	g.waitConns(0, "the timeout")
}

// TestHostConnectFailures: the guest's RST, or no answer within 2 s,
// closes the host program's stream (and the device resets a REQUEST left
// unanswered); a line that is not CONNECT <port>, or has no newline in 32
// bytes, closes it before anything reaches the guest.
func TestHostConnectFailures(t *testing.T) {
	g := newGuest(t, "", nil)
	eof := func(s net.Conn, within time.Duration, what string) {
		t.Helper()
		if line, err := readLine(s, within); !closed(err) {
			t.Errorf("%s: host read %q, %v; want the stream closed", what, line, err)
		}
	}
	refused := g.hostConnect(6000) // nobody listens on 6000: the guest answers RST
	g.expect(opRequest, 6000)
	g.step()
	eof(refused, 5*time.Second, "refused")

	g.ignore[6001] = true
	ignored := g.hostConnect(6001)
	req := g.expect(opRequest, 6001)
	start := time.Now()
	rst := g.expect(opRst, 6001)
	if d := time.Since(start); rst.h.srcPort != req.h.srcPort || d < handshakeTimeout/2 {
		t.Errorf("RST %+v after %v; want from port %d after about %v", rst.h, d, req.h.srcPort, handshakeTimeout)
	}
	eof(ignored, 5*time.Second, "unanswered")

	for _, line := range []string{"HELLO 5\n", "CONNECT\n", "CONNECT x\n", "CONNECT 4294967296\n", strings.Repeat("C", 40)} {
		s, err := net.Dial("unix", g.path)
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte(line))
		eof(s, 5*time.Second, fmt.Sprintf("%q", line))
		s.Close()
	}
	g.quiet(50*time.Millisecond, "bad CONNECT lines")
	g.waitConns(0, "failed connections")
}

// TestConnectionLimit: the device holds at most 1023 connections; a host
// program past them is closed at once, and so is a guest's REQUEST (RST).
func TestConnectionLimit(t *testing.T) {
	g := newGuest(t, "", nil)
	g.ignore[5000] = true // the REQUESTs wait for answers: their connections stay
	for range maxConns {
		s, err := net.Dial("unix", g.path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		fmt.Fprintf(s, "CONNECT 5000\n")
	}
	g.waitConns(maxConns, "1023 host programs")
	s := g.hostConnect(5000)
	if line, err := readLine(s, 5*time.Second); !closed(err) {
		t.Errorf("host program past the limit read %q, %v; want its stream closed", line, err)
	}
	g.dial(7000, 5001)
	if p := g.expect(opRst, 7000); p.h.srcPort != 5001 {
		t.Errorf("answer to a guest connection past the limit: %+v", p.h)
	}
	if g.d.connCount() != maxConns {
		t.Errorf("%d connections, want %d", g.d.connCount(), maxConns)
	}
}

// TestGuestReset: the guest's RST closes the host program's stream at
// once, and the device forgets the connection.
func TestGuestReset(t *testing.T) {
	g := newGuest(t, "", nil)
	g.listen[5000] = true
	s := g.hostConnect(5000)
	g.expect(opRequest, 5000)
	g.run(time.Second, "the connection", func() bool { return len(g.conns) == 1 })
	if _, err := readLine(s, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, c := range g.conns {
		g.sendOn(c, opRst, nil, 0)
	}
	if line, err := readLine(s, 5*time.Second); err != io.EOF {
		t.Errorf("host read %q, %v after the guest's RST; want EOF", line, err)
	}
	if n := g.d.connCount(); n != 0 {
		t.Errorf("%d connections after the guest's RST", n)
	}
}

// TestCredit: a guest that sends more than its credit, or claims to have
// consumed bytes it was never sent, has that connection reset, and only
// that one; the guest's CREDIT_REQUEST gets a CREDIT_UPDATE.
func TestCredit(t *testing.T) {
	g := newGuest(t, "", nil)
	l, err := net.Listen("unix", g.path+"_5001")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			s, err := l.Accept()
			if err != nil {
				return
			}
			defer s.Close() // and never read
		}
	}()
	open := func(port uint32) *gconn {
		c := g.dial(port, 5001)
		g.expect(opResponse, port)
		c.open = true
		return c
	}
	over, liar, fine := open(7000), open(7001), open(7002)

	g.sendOn(fine, opCreditRequest, nil, 0)
	if p := g.expect(opCreditUpdate, 7002); p.h.fwdCnt != 0 || p.h.bufAlloc != bufAlloc {
		t.Errorf("CREDIT_UPDATE %+v", p.h)
	}

	// One full packet more than the buffer advertised, in one batch.
	data := pattern(1, maxPayload)
	var batch []pkt
	for range bufAlloc/maxPayload + 1 {
		h := g.hdr(over, opRW)
		h.len = uint32(len(data))
		batch = append(batch, pkt{h, data})
	}
	g.send(batch...)
	g.expect(opRst, 7000)

	h := g.hdr(liar, opCreditUpdate)
	h.fwdCnt = 100
	g.send(pkt{h: h})
	g.expect(opRst, 7001)

	if n := g.d.connCount(); n != 1 {
		t.Errorf("%d connections, want the one that kept to its credit", n)
	}
	g.sendOn(fine, opRW, []byte("still here"), 0)
	for i := 0; ; i++ { // fwd_cnt counts the 10 bytes once they are written to the host
		g.sendOn(fine, opCreditRequest, nil, 0)
		if p := g.expect(opCreditUpdate, 7002); p.h.fwdCnt == 10 {
			break
		} else if i == 100 {
			t.Fatalf("CREDIT_UPDATE %+v after 10 bytes, want fwd_cnt 10", p.h)
		}
		time.Sleep(time.Millisecond)
	}
	if g.logs.Count("more than its credit") != 1 || g.logs.Count("consumed bytes never sent") != 1 {
		t.Errorf("logs %q", g.logs.Messages())
	}
}

// TestMalformed: a hostile guest's packets (shorter than a header, a
// payload longer than its chain or than 64 KiB, from another CID, to
// another CID, of another type, unknown ops, packets for no connection)
// are dropped or answered with RST, never an RST answered; receive buffers
// too short for a packet are given back unused; each kind is logged once,
// and the device still serves an echo stream after all of it.
func TestMalformed(t *testing.T) {
	g := newGuest(t, "", nil)
	g.listen[5000], g.echo[5000] = true, true
	good := header{srcCID: guestCID, dstCID: HostCID, srcPort: 9, dstPort: 99, typ: typeStream, op: opRW}
	// Receive buffers too short for a packet, after the posted ones: given
	// back unused (recv checks) once RSTs for 70 packets of no connection
	// have used those, the RSTs going into the next.
	for i := range uint64(3) {
		g.postRx(rxArea+rxCount*rxStride+i*64, hdrSize-uint32(i))
	}
	for range 70 / 4 {
		g.send(pkt{h: good}, pkt{h: good}, pkt{h: good}, pkt{h: good})
		g.step()
	}
	g.run(5*time.Second, "the RSTs", func() bool { return len(g.seen) == 70/4*4 })
	g.cursor = len(g.seen)
	with := func(f func(*header)) header {
		h := good
		f(&h)
		return h
	}
	rawTx := func(bufs ...virtiotest.Buf) {
		g.drv.Post(txQueue, bufs...)
		if u := g.drv.Wait(txQueue, 1, 5*time.Second); len(u) != 1 {
			t.Fatal("the device did not take a malformed chain")
		}
	}
	for range 2 {
		copy(g.drv.Bytes(txArea, hdrSize), good.encode())
		rawTx(virtiotest.Buf{Addr: txArea, N: 20})                                           // short header
		rawTx(virtiotest.Buf{Addr: txArea, N: 20}, virtiotest.Buf{Addr: txArea + 20, N: 10}) // split and still short
		g.send(pkt{h: with(func(h *header) { h.len = 100 })})                                // payload longer than the chain
		g.send(pkt{h: with(func(h *header) { h.len = 70000 })})                              // over 64 KiB
		g.send(pkt{h: with(func(h *header) { h.srcCID = 4 })})
		g.send(pkt{h: with(func(h *header) { h.dstCID = 1 })})
		rawTx(virtiotest.Buf{Addr: txArea, N: 8, Write: true}) // a writable buffer on tx
	}
	g.quiet(50*time.Millisecond, "dropped packets")
	for _, c := range []struct {
		h   header
		rst bool
	}{
		{with(func(h *header) { h.typ = 2 }), true},
		{with(func(h *header) { h.typ = 2; h.op = opRst }), false},
		{with(func(h *header) { h.op = 99 }), true},
		{with(func(h *header) { h.op = 0 }), true},
		{with(func(h *header) {}), true}, // RW for no connection
		{with(func(h *header) { h.op = opRst }), false},
		{with(func(h *header) { h.op = opRequest; h.fwdCnt = 5 }), true}, // a request claiming data
	} {
		g.send(pkt{h: c.h})
		if c.rst {
			if p := g.expect(opRst, 9); p.h.srcPort != 99 {
				t.Errorf("RST %+v for %+v", p.h, c.h)
			}
		} else {
			g.quiet(20*time.Millisecond, fmt.Sprintf("RST %+v", c.h))
		}
	}
	s := g.hostConnect(5000)
	g.expect(opRequest, 5000)
	g.run(time.Second, "the connection", func() bool { return len(g.conns) == 1 })
	if _, err := readLine(s, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	g.echoed(s, []byte("still working"), 5*time.Second, "the echo")
	for _, m := range []string{"malformed packet dropped", "other than stream", "receive buffer with no room"} {
		n := g.logs.Count(m)
		if m == "malformed packet dropped" && n != 5 || m != "malformed packet dropped" && n != 1 {
			t.Errorf("%q logged %d times: %q", m, n, g.logs.Messages())
		}
	}
}

// TestSnapshotState: the device's state is its CID, socket path and last
// host port; a device restored from it (on another path) sends the guest
// TRANSPORT_RESET into its first event buffer, sends nothing on the rx
// queue until the guest makes a new event buffer available, and then
// serves a host program that connected meanwhile, from the next port.
// States that do not fit are refused.
func TestSnapshotState(t *testing.T) {
	g := newGuest(t, "", nil)
	g.listen[5000] = true
	for range 3 {
		g.hostConnect(5000)
		g.expect(opRequest, 5000)
	}
	s := g.d.State()
	if want := (State{CID: guestCID, UDSPath: g.path, LastPort: firstHostPort + 2}); s != want {
		t.Fatalf("state %+v, want %+v", s, want)
	}
	for _, bad := range []State{{CID: 4, LastPort: firstHostPort}, {CID: guestCID, LastPort: 7}, {CID: guestCID, LastPort: 1 << 31}} {
		if err := g.d.Restore(bad); err == nil {
			t.Errorf("restore of %+v accepted", bad)
		}
	}

	r := newGuest(t, filepath.Join(t.TempDir(), "clone.sock"), &s)
	r.listen[5000] = true
	for i := range uint64(2) { // as Linux fills its event buffers, long before
		r.drv.Add(evQueue, virtiotest.Buf{Addr: evArea + 16*i, N: 8, Write: true})
	}
	r.drv.Kick(evQueue)
	u := r.drv.Wait(evQueue, 1, 5*time.Second)
	if len(u) != 1 || u[0].Len != 4 || !bytes.Equal(r.drv.Bytes(evArea, 4), []byte{0, 0, 0, 0}) {
		t.Fatalf("event queue gave back %+v holding % x; want 4 bytes of TRANSPORT_RESET", u, r.drv.Bytes(evArea, 4))
	}
	r.hostConnect(5000)
	r.quiet(100*time.Millisecond, "before the guest took the event")
	r.drv.Kick(evQueue) // a notification without a new buffer: still held
	r.quiet(50*time.Millisecond, "after a spurious notification")
	r.drv.Post(evQueue, virtiotest.Buf{Addr: evArea, N: 8, Write: true}) // Linux refills after the event
	if p := r.expect(opRequest, 5000); p.h.srcPort != firstHostPort+3 {
		t.Errorf("restored REQUEST from host port %d, want %d", p.h.srcPort, firstHostPort+3)
	}
	if u := r.drv.Used(evQueue); len(u) != 0 {
		t.Errorf("more events: %+v", u)
	}
}

// TestSocketPath: the device's socket replaces a stale one, refuses a
// live one (ErrInUse) and a path that is not a socket, and Close removes
// it.
func TestSocketPath(t *testing.T) {
	dir := t.TempDir()
	ram := memory.Adopt(ramBase, make([]byte, 1<<16), func([]byte) error { return nil })
	log := slog.New(slog.DiscardHandler)
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if err := CheckPath(stale); err != nil {
		t.Errorf("CheckPath of a stale socket: %v", err)
	}
	d, err := New(Config{CID: 3, UDSPath: stale}, ram, log)
	if err != nil {
		t.Fatalf("a stale socket not replaced: %v", err)
	}
	if _, err := New(Config{CID: 3, UDSPath: stale}, ram, log); !errors.Is(err, ErrInUse) || CheckPath(stale) == nil {
		t.Errorf("a live socket: %v, want ErrInUse", err)
	}
	d.Close()
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket file after Close: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := New(Config{CID: 3, UDSPath: file}, ram, log); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Errorf("a regular file: %v", err)
	}
	for _, cid := range []uint64{0, 1, 2, 1<<32 - 1, 1 << 32} {
		if _, err := New(Config{CID: cid, UDSPath: filepath.Join(dir, "c.sock")}, ram, log); err == nil {
			t.Errorf("CID %d accepted", cid)
		}
	}
}
