package vsock

import (
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/squibvm/squib/virtio"
)

const (
	handshakeTimeout = 2 * time.Second // for the guest's answer to a REQUEST
	shutdownTimeout  = 2 * time.Second // for the buffers to drain once both sides closed
)

// connState is where a connection is in its set-up.
type connState uint8

const (
	stRequest     connState = iota // host-initiated: REQUEST owed
	stRequested                    // host-initiated: REQUEST sent, RESPONSE awaited
	stDialing                      // guest-initiated: the dial to UDSPath_PORT under way
	stEstablished                  // data flows
)

// conn is one connection: a guest stream and its host stream.
//
// The device goroutine owns the protocol state; mu guards what the
// connection's other goroutines (reader, writer, dial, timer) share with
// it. The device goroutine takes mu only briefly and never while it holds
// d.mu, and no one holds mu across a socket call.
type conn struct {
	d *Device
	key

	// The device goroutine's.
	state        connState
	peerBufAlloc uint32 // the guest's receive buffer
	peerFwdCnt   uint32 // bytes the guest has consumed, as it last said
	rxCnt        uint32 // payload bytes sent to the guest
	txCnt        uint32 // payload bytes taken from the guest
	lastFwd      uint32 // fwd_cnt as last sent to the guest
	oweRst       bool
	oweCredit    bool   // the guest asked for a credit update
	creditAsked  bool   // a CREDIT_REQUEST is out, and the guest's credit still 0
	guestShut    uint32 // the SHUTDOWN flags the guest sent (sticky)
	sentShut     bool   // SHUTDOWN SEND sent after the host stream's EOF
	closing      bool   // both sides closed: the shutdown timer runs

	queued, gone bool // under d.mu: in the ready queue; forgotten

	mu      sync.Mutex
	cond    *sync.Cond // the reader and writer wait on it
	sock    *net.UnixConn
	tx      ring   // guest → host, for the writer
	rx      ring   // host → guest, from the reader
	fwdCnt  uint32 // bytes the writer wrote to the host stream
	shutWr  bool   // shut the host stream's writing once tx is drained
	wrDone  bool   // done
	eof     bool   // the host stream's EOF
	failed  bool   // a read or write of the host stream failed
	dialed  bool   // guest-initiated: the dial is over (sock set if it worked)
	expired bool   // the timer went off
	timer   *time.Timer
	gen     int // the timer's generation: a stopped timer's late callback does nothing
	closed  bool
}

func newConn(d *Device, k key, sock *net.UnixConn, st connState) *conn {
	c := &conn{d: d, key: k, sock: sock, state: st, tx: ring{size: bufAlloc}, rx: ring{size: rxBuf}}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// receive takes a packet of the guest's for c; the device goroutine calls
// it, and the connection is then served on the rx queue if it has
// something to say.
func (c *conn) receive(h header, payload []virtio.Buffer) {
	d := c.d
	if h.op == opRst {
		d.forget(c)
		return
	}
	defer d.wake(c)
	// The guest cannot have consumed more than it was sent. A fwd_cnt
	// behind the last one is a packet built before that one's: stale.
	switch ahead := h.fwdCnt - c.peerFwdCnt; {
	case ahead <= c.rxCnt-c.peerFwdCnt:
		c.peerFwdCnt = h.fwdCnt
	case ahead < 1<<31:
		d.log.Warn("credit lie", "vsock: guest claims to have consumed bytes never sent: connection reset",
			"host_port", c.local, "guest_port", c.peer, "fwd_cnt", h.fwdCnt, "sent", c.rxCnt)
		c.oweRst = true
		return
	}
	c.peerBufAlloc = h.bufAlloc
	if c.peerCredit() > 0 {
		c.creditAsked = false
	}
	drop := func(why string) {
		d.log.Warn("unexpected "+why, "vsock: unexpected packet dropped: "+why, "op", h.op, "host_port", c.local, "guest_port", c.peer)
	}
	switch {
	case h.op == opResponse && c.state == stRequested:
		c.state = stEstablished
		c.mu.Lock()
		c.disarm()
		c.mu.Unlock()
		c.start(fmt.Appendf(nil, "OK %d\n", c.local))
	case h.op == opRW && c.state == stEstablished && c.guestShut&shutSend == 0:
		if c.txCnt-c.lastFwd+h.len > bufAlloc { // no wrap: txCnt-lastFwd <= bufAlloc, len <= 64 KiB
			d.log.Warn("overrun", "vsock: guest sent more than its credit: connection reset",
				"host_port", c.local, "guest_port", c.peer, "len", h.len)
			c.oweRst = true
			return
		}
		c.take(payload)
		c.txCnt += h.len
	case h.op == opShutdown && c.state == stEstablished:
		c.guestShut |= h.flags & (shutRcv | shutSend)
		if c.guestShut&shutSend != 0 {
			c.mu.Lock()
			c.shutWr = true
			c.cond.Broadcast()
			c.mu.Unlock()
		}
	case h.op == opCreditUpdate:
	case h.op == opCreditRequest:
		c.oweCredit = true
	case h.op >= opRequest && h.op <= opCreditRequest:
		drop("not in this state")
	default:
		drop("unknown op")
	}
}

// take copies a data packet's payload into the buffer for the host; the
// credit check made room for it.
func (c *conn) take(payload []virtio.Buffer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range payload {
		src, err := c.d.ram.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return // not reached: Pop checked that the buffers lie in RAM
		}
		for len(src) > 0 {
			k := copy(c.tx.space(), src)
			if k == 0 {
				return // not reached: the credit check left room
			}
			c.tx.commit(k)
			src = src[k:]
		}
	}
	c.cond.Broadcast()
}

// peerCredit is how many payload bytes the guest can take now.
func (c *conn) peerCredit() uint32 {
	inFlight := c.rxCnt - c.peerFwdCnt
	if inFlight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inFlight
}

// next is the op of the packet c owes the guest now, 0 for none; c.mu is
// held.
func (c *conn) next() uint16 {
	if c.oweRst || c.failed || c.expired {
		return opRst
	}
	switch c.state {
	case stRequest:
		return opRequest
	case stRequested:
		return 0
	case stDialing:
		switch {
		case !c.dialed:
			return 0
		case c.sock == nil:
			return opRst
		}
		return opResponse
	}
	if !c.closing && c.guestShut&shutSend != 0 && (c.eof || c.guestShut&shutRcv != 0) {
		c.closing = true
		c.arm(shutdownTimeout)
	}
	if c.guestShut&shutRcv != 0 && c.rx.n > 0 { // the guest takes no more
		c.rx.discard(c.rx.n)
		c.cond.Broadcast()
	}
	if c.rx.n > 0 {
		switch {
		case c.peerCredit() > 0:
			return opRW
		case !c.creditAsked:
			return opCreditRequest
		}
	}
	inDone := c.sentShut || c.guestShut&shutRcv != 0
	switch {
	case c.eof && c.rx.n == 0 && !inDone:
		return opShutdown
	case inDone && c.wrDone:
		return opRst
	case c.oweCredit || c.fwdCnt != c.lastFwd && bufAlloc-(c.txCnt-c.lastFwd) < creditThreshold:
		return opCreditUpdate
	}
	return 0
}

// emit writes the packet of op into receive chain ch (with room for its
// header) and returns its length.
func (c *conn) emit(op uint16, ch *virtio.Chain) uint32 {
	d := c.d
	h := header{srcCID: HostCID, dstCID: d.cfg.CID, srcPort: c.local, dstPort: c.peer, typ: typeStream, op: op, bufAlloc: bufAlloc}
	w := &writer{ram: d.ram, bufs: ch.Writable}
	c.mu.Lock()
	h.fwdCnt = c.fwdCnt
	c.lastFwd, c.oweCredit = c.fwdCnt, false
	switch op {
	case opRW:
		h.len = min(room(ch)-hdrSize, c.peerCredit(), uint32(c.rx.n))
		w.write(h.encode())
		for n := int(h.len); n > 0; {
			seg := c.rx.data()
			k := min(len(seg), n)
			w.write(seg[:k])
			c.rx.discard(k)
			n -= k
		}
		c.rxCnt += h.len
		c.cond.Broadcast()
	case opShutdown:
		h.flags = shutSend
		c.sentShut = true
	case opCreditRequest:
		c.creditAsked = true
	case opRequest:
		c.state = stRequested
		c.arm(handshakeTimeout)
	case opResponse:
		c.state = stEstablished
	}
	c.mu.Unlock()
	if op != opRW {
		w.write(h.encode())
	}
	if op == opResponse {
		c.start(nil)
	}
	return w.n
}

// arm starts the timer; c.mu is held.
func (c *conn) arm(after time.Duration) {
	c.gen++
	gen := c.gen
	c.timer = time.AfterFunc(after, func() {
		c.mu.Lock()
		fire := c.gen == gen
		c.expired = c.expired || fire
		c.mu.Unlock()
		if fire {
			c.d.wake(c)
		}
	})
}

// disarm stops the timer; c.mu is held.
func (c *conn) disarm() {
	c.gen++
	if c.timer != nil {
		c.timer.Stop()
	}
}

// close stops c's goroutines and closes its host stream.
func (c *conn) close() {
	c.mu.Lock()
	c.closed = true
	c.disarm()
	c.cond.Broadcast()
	sock := c.sock
	c.mu.Unlock()
	if sock != nil {
		sock.Close()
	}
}

// start runs the reader and the writer of an established connection; the
// writer first sends preamble (a host-initiated connection's OK line).
func (c *conn) start(preamble []byte) {
	c.d.wg.Add(2)
	go c.read()
	go c.write(preamble)
}

// read moves the host stream's bytes into rx while it has room.
func (c *conn) read() {
	defer c.d.wg.Done()
	for {
		c.mu.Lock()
		for c.rx.free() == 0 && !c.closed {
			c.cond.Wait()
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		space := c.rx.space()
		c.mu.Unlock()
		n, err := c.sock.Read(space)
		c.mu.Lock()
		c.rx.commit(n)
		switch {
		case err == io.EOF:
			c.eof = true
		case err != nil:
			c.failed = true
		}
		c.mu.Unlock()
		c.d.wake(c)
		if err != nil {
			return
		}
	}
}

// write sends preamble, then tx's bytes to the host stream, and shuts its
// writing once the guest has shut its sending and tx is drained.
func (c *conn) write(preamble []byte) {
	defer c.d.wg.Done()
	if len(preamble) > 0 {
		if _, err := c.sock.Write(preamble); err != nil {
			c.fail()
			return
		}
	}
	for {
		c.mu.Lock()
		for c.tx.n == 0 && !c.shutWr && !c.closed {
			c.cond.Wait()
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		if c.tx.n == 0 {
			c.mu.Unlock()
			if err := c.sock.CloseWrite(); err != nil {
				c.fail()
				return
			}
			c.mu.Lock()
			c.wrDone = true
			c.mu.Unlock()
			c.d.wake(c)
			return
		}
		data := c.tx.data()
		c.mu.Unlock()
		n, err := c.sock.Write(data)
		c.mu.Lock()
		c.tx.discard(n)
		c.fwdCnt += uint32(n)
		c.failed = c.failed || err != nil
		c.mu.Unlock()
		c.d.wake(c)
		if err != nil {
			return
		}
	}
}

// fail marks the host stream failed: the connection is reset.
func (c *conn) fail() {
	c.mu.Lock()
	c.failed = true
	c.mu.Unlock()
	c.d.wake(c)
}
