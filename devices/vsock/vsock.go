// Package vsock is the virtio socket device (virtio 1.2 §5.10, device ID
// 19) with Firecracker's hybrid vsock host side: the guest's AF_VSOCK
// stream connections to the host (CID 2) are Unix stream sockets on the
// host. Three queues of 256 (rx, tx, event), stream sockets only (no
// feature bits of its own), and the guest's CID in the configuration space.
//
// # Host side
//
//   - Host-initiated: the device listens on UDSPath. A host program
//     connects and sends "CONNECT <port>\n" (the keyword in any case, the
//     line at most 32 bytes, within 2 s); the device sends the guest a
//     REQUEST from a host port allocated upwards from 2^30 (skipping ports
//     in use, wrapping within [2^30, 2^31)), and once the guest answers
//     RESPONSE it writes "OK <host port>\n" to the program: from then on
//     the stream carries the connection's bytes both ways. An RST, or no
//     answer within 2 s, closes the program's stream.
//   - Guest-initiated: a REQUEST to CID 2, port P, connects to the Unix
//     socket "<UDSPath>_<P>"; the guest gets RESPONSE, or RST if nothing
//     accepts there.
//
// At most 1023 connections. The socket at UDSPath is bound when the device
// is made (a stale socket file, which nobody accepts on, is replaced; a
// live one or another kind of file is refused) and removed by Close.
//
// # Flow
//
// The device goroutine never waits on a socket. Each connection has a
// reader and a writer goroutine on its host stream and two buffers:
// guest → host bytes wait in one (256 KiB) for the writer, host → guest
// bytes in the other (64 KiB) for the guest's receive buffers. The device goroutine only moves
// bytes between guest buffers and them. Credit (§5.10.6.3) bounds both:
// the device advertises buf_alloc 256 KiB, counts in fwd_cnt the bytes
// written to the host stream, sends CREDIT_UPDATE when the guest's view of
// its free space falls below half of it (or on CREDIT_REQUEST), sends no more
// payload than the guest's credit allows, and resets a connection whose
// guest sends more than it was allowed. A stalled stream (its host reader
// gone quiet, or its guest reader) fills its own buffer and stops only
// itself. What a connection owes the guest (a RESPONSE, RST, credit
// update, SHUTDOWN, data) is kept on the connection; connections with
// something to say queue up and are served round-robin as the guest gives
// receive buffers. The device asks its transport to serve the rx queue
// when one does (SetNotify).
//
// Closing: the guest's SHUTDOWN SEND becomes shutdown(SHUT_WR) of the host
// stream once its buffer is drained; the host stream's EOF becomes a
// SHUTDOWN SEND to the guest once its data is delivered. Once both
// directions are closed the device sends RST and forgets the connection;
// if draining takes over 2 s after both sides said they were done, it
// sends RST anyway (Firecracker's timeout). An RST from the guest closes
// the host stream at once.
//
// # Guest input
//
// Every header field is checked: a chain shorter than the 44-byte header
// or than the payload its len names, a payload over 64 KiB, a packet not
// from the guest's CID or not to the host are dropped (the chain given
// back); a packet of another type than stream, or for no connection of the
// device, is answered with RST (never an RST itself); a packet a connection
// does not expect in its state, or of an unknown op, is dropped, as in
// Firecracker; a fwd_cnt beyond what the device sent, or data beyond the
// credit, resets that connection only. Receive chains with no room past a
// header are given back unused. Each kind is logged once.
//
// # Snapshots
//
// State saves {CID, UDSPath, the last host port allocated}; connections are
// not saved (as in Firecracker). A restored device (Restore) sends the
// guest a TRANSPORT_RESET event when it first runs, so the guest's driver
// drops the connections it had; listening sockets stay. Until the guest has
// taken the event (it makes a new event buffer available) the device sends
// nothing on the rx queue; host programs may connect at once and their
// REQUESTs wait. Unlike Firecracker, which sends the event when the
// snapshot is taken, the VM the snapshot was taken of keeps its
// connections when it resumes: the event is the restored device's, not in
// the snapshot's memory.
package vsock

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// HostCID is the host's context ID.
const HostCID = 2

// Queues (§5.10.2).
const (
	rxQueue = 0
	txQueue = 1
	evQueue = 2
)

const (
	queueSize = 256
	// bufAlloc is each connection's guest → host buffer, advertised to the
	// guest as buf_alloc: 256 KiB, as Firecracker's and Linux's, so that
	// four full packets are in flight before the guest waits for credit
	// (with one, 64 KiB, every packet waited for a round trip: the lab's
	// guest → host streams ran 3x slower than host → guest ones). rxBuf is
	// the host → guest one. Both are allocated on a connection's first
	// use.
	bufAlloc = 256 << 10
	rxBuf    = 64 << 10
	// creditThreshold: below this much free space in the guest's view, the
	// device sends a credit update: at half the buffer, so that the guest
	// hears of the drained half while it still sends the other.
	creditThreshold = bufAlloc / 2
	maxConns        = 1023
	// maxOrphans bounds the RSTs owed for packets of no connection; past
	// it they are dropped.
	maxOrphans     = 256
	firstHostPort  = 1 << 30
	transportReset = 0 // the event ID of TRANSPORT_RESET
)

// Config is a vsock device as Firecracker's PUT /vsock has it.
type Config struct {
	CID     uint64 // the guest's CID: 3 to 2^32-2
	UDSPath string // the host socket; guest-initiated streams go to UDSPath_PORT
}

// CheckCID refuses the reserved CIDs (0, 1, 2, and 2^32-1, VMADDR_CID_ANY
// in the guest) and those of more than 32 bits.
func CheckCID(cid uint64) error {
	if cid < 3 || cid >= 1<<32-1 {
		return fmt.Errorf("guest CID %d is reserved or too large: use 3 to %d", cid, uint64(1<<32-2))
	}
	return nil
}

// State is a vsock device's own state in a snapshot.
type State struct {
	CID      uint64 `cbor:"1,keyasint"`
	UDSPath  string `cbor:"2,keyasint"`
	LastPort uint32 `cbor:"3,keyasint"` // the last host port allocated
}

// key names a connection: its host and guest ports.
type key struct{ local, peer uint32 }

// Device is one vsock device over guest RAM.
type Device struct {
	ram    *memory.RAM
	cfg    Config
	log    *virtio.OnceLog
	l      *net.UnixListener
	ctx    context.Context // canceled by Close: dials in progress stop
	cancel context.CancelFunc
	notify func(queue uint32) // the transport's Notify, set before any goroutine starts

	mu         sync.Mutex
	conns      map[key]*conn
	ports      map[uint32]int // host ports in use, by connections
	lastPort   uint32
	ready      []*conn // connections with something to say, in turn
	handshakes map[*net.UnixConn]bool
	closed     bool
	wg         sync.WaitGroup // the accept, handshake, dial, reader and writer goroutines

	// The device goroutine's, and Restore's before the transport runs.
	orphans   []key  // RSTs owed for packets of no connection
	resetOwed bool   // restored: TRANSPORT_RESET not yet sent
	gated     bool   // restored: no rx until the guest took the event
	evBase    uint16 // the event queue's avail.idx before the event
}

// New binds cfg.UDSPath for a device over ram that logs to log. The
// device accepts host connections once SetNotify is called.
func New(cfg Config, ram *memory.RAM, log *slog.Logger) (*Device, error) {
	if err := CheckCID(cfg.CID); err != nil {
		return nil, fmt.Errorf("vsock: %w", err)
	}
	l, err := listen(cfg.UDSPath)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Device{
		ram: ram, cfg: cfg, log: &virtio.OnceLog{Log: log}, l: l, ctx: ctx, cancel: cancel,
		conns: map[key]*conn{}, ports: map[uint32]int{}, handshakes: map[*net.UnixConn]bool{},
		lastPort: firstHostPort - 1,
	}, nil
}

// SetNotify gives the device its transport's Notify, with which it asks
// for the rx queue to be served, and starts accepting host connections.
// The VMM calls it once, right after virtio.New.
func (d *Device) SetNotify(notify func(queue uint32)) {
	d.notify = notify
	d.wg.Add(1)
	go d.accept()
}

// Close stops accepting, removes the socket file, closes every host
// stream and waits for the device's goroutines. The transport must be
// closed first.
func (d *Device) Close() error {
	d.mu.Lock()
	d.closed = true
	var conns []*conn
	for _, c := range d.conns {
		conns = append(conns, c)
	}
	var streams []*net.UnixConn
	for s := range d.handshakes {
		streams = append(streams, s)
	}
	d.mu.Unlock()
	d.cancel()
	err := d.l.Close() // and removes the file
	for _, s := range streams {
		s.Close()
	}
	for _, c := range conns {
		d.forget(c)
	}
	d.wg.Wait()
	return err
}

func (*Device) ID() uint32           { return 19 }
func (*Device) Features() uint64     { return 0 }
func (*Device) QueueSizes() []uint16 { return []uint16{queueSize, queueSize, queueSize} }

// Config is the configuration space: guest_cid le64.
func (d *Device) Config() []byte { return binary.LittleEndian.AppendUint64(nil, d.cfg.CID) }

// State returns the device's own state; the transport is quiesced.
func (d *Device) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return State{CID: d.cfg.CID, UDSPath: d.cfg.UDSPath, LastPort: d.lastPort}
}

// Restore sets the device from a saved state, before its transport is
// restored: the CID must be the device's (its UDSPath may be another), and
// the device owes the guest a TRANSPORT_RESET, holding the rx queue until
// the guest has taken it.
func (d *Device) Restore(s State) error {
	if s.CID != d.cfg.CID {
		return fmt.Errorf("vsock: saved guest CID %d, the device has %d", s.CID, d.cfg.CID)
	}
	if s.LastPort>>30 != 1 && s.LastPort != firstHostPort-1 {
		return fmt.Errorf("vsock: saved host port %d is outside [2^30, 2^31)", s.LastPort)
	}
	d.mu.Lock()
	d.lastPort = s.LastPort
	d.mu.Unlock()
	d.resetOwed, d.gated = true, true
	return nil
}

// Handle serves queue i.
func (d *Device) Handle(i int, q *virtio.Queue) error {
	switch i {
	case rxQueue:
		return d.serveRx(q)
	case txQueue:
		return d.serveTx(q)
	}
	return d.serveEvents(q)
}

// serveEvents sends a restored device's TRANSPORT_RESET (event ID 0, le32)
// into the first event buffer with room for it, then opens the rx queue
// once the driver has made a new event buffer available: Linux refills
// and notifies the queue after it has handled the event.
func (d *Device) serveEvents(q *virtio.Queue) error {
	for d.resetOwed {
		base, err := q.AvailIdx()
		if err != nil {
			return err
		}
		c, err := q.Pop(virtio.WriteOnly)
		if err != nil || c == nil {
			return err
		}
		var n uint32
		if total(c.Writable) >= 4 {
			w := &writer{ram: d.ram, bufs: c.Writable}
			w.write([]byte{transportReset, 0, 0, 0})
			n = w.n
			d.resetOwed, d.evBase = false, base
		} else {
			d.log.Warn("event buffer", "vsock: event buffer shorter than an event given back unused")
		}
		if err := q.Push(c, n); err != nil {
			return err
		}
	}
	if !d.gated {
		return nil
	}
	taken, err := q.NotifyPast(d.evBase)
	if err != nil || !taken {
		return err
	}
	d.gated = false
	d.notify(rxQueue)
	return nil
}

// serveTx takes every packet the guest sent.
func (d *Device) serveTx(q *virtio.Queue) error {
	for {
		c, err := q.Pop(virtio.ReadOnly)
		if err != nil || c == nil {
			return err
		}
		d.transmit(c)
		if err := q.Push(c, 0); err != nil {
			return err
		}
	}
}

// transmit routes one packet from the guest.
func (d *Device) transmit(c *virtio.Chain) {
	h, payload, err := parsePacket(c, d.ram)
	if err == nil {
		err = checkAddress(h, d.cfg.CID)
	}
	if err != nil {
		d.log.Warn(err.Error(), "vsock: malformed packet dropped", "reason", err, "src_cid", h.srcCID, "dst_cid", h.dstCID, "len", h.len)
		return
	}
	k := key{local: h.dstPort, peer: h.srcPort}
	if h.typ != typeStream {
		d.log.Warn("type", "vsock: packet of a type other than stream answered with RST", "type", h.typ)
		d.orphanRst(k, h.op)
		return
	}
	d.mu.Lock()
	conn := d.conns[k]
	d.mu.Unlock()
	switch {
	case conn != nil:
		conn.receive(h, payload)
	case h.op == opRequest:
		d.request(k, h)
	default:
		// Routine after a reset on either side; not logged as misbehaviour.
		d.log.Log.Debug("vsock: packet for no connection answered with RST", "op", h.op, "host_port", k.local, "guest_port", k.peer)
		d.orphanRst(k, h.op)
	}
}

// orphanRst owes the guest an RST for a packet of op on k, unless the
// packet is an RST itself.
func (d *Device) orphanRst(k key, op uint16) {
	if op == opRst {
		return
	}
	if len(d.orphans) >= maxOrphans {
		d.log.Warn("orphans", "vsock: too many RSTs owed for packets of no connection: some dropped")
		return
	}
	d.orphans = append(d.orphans, k)
	d.notify(rxQueue)
}

// request opens a guest-initiated connection to k.local: it dials
// UDSPath_PORT on its own goroutine, and the connection answers when the
// dial is done.
func (d *Device) request(k key, h header) {
	if h.fwdCnt != 0 {
		d.log.Warn("request credit", "vsock: connection request claiming received data answered with RST", "fwd_cnt", h.fwdCnt)
		d.orphanRst(k, h.op)
		return
	}
	d.mu.Lock()
	if len(d.conns) >= maxConns {
		d.mu.Unlock()
		d.log.Warn("limit", "vsock: connection limit reached: guest connection request answered with RST", "limit", maxConns)
		d.orphanRst(k, h.op)
		return
	}
	c := d.add(k, nil, stDialing)
	c.peerBufAlloc = h.bufAlloc
	d.wg.Add(1)
	d.mu.Unlock()
	go d.dial(c)
}

// add makes and registers a connection; d.mu is held.
func (d *Device) add(k key, sock *net.UnixConn, st connState) *conn {
	c := newConn(d, k, sock, st)
	d.conns[k] = c
	d.ports[k.local]++
	return c
}

// allocPort returns the next host port after the last one, skipping ports
// in use, within [2^30, 2^31); d.mu is held, and fewer than 2^30
// connections exist.
func (d *Device) allocPort() uint32 {
	for {
		d.lastPort = (d.lastPort+1)&^(1<<31) | 1<<30
		if d.ports[d.lastPort] == 0 {
			return d.lastPort
		}
	}
}

// forget closes c's host stream and drops it.
func (d *Device) forget(c *conn) {
	d.mu.Lock()
	if !c.gone {
		c.gone = true
		delete(d.conns, c.key)
		if d.ports[c.local]--; d.ports[c.local] == 0 {
			delete(d.ports, c.local)
		}
	}
	d.mu.Unlock()
	c.close()
}

// wake queues c to be served on the rx queue and asks for it to be.
func (d *Device) wake(c *conn) {
	if d.requeue(c) {
		d.notify(rxQueue)
	}
}

// requeue puts c at the end of the ready queue, if it is not in it.
func (d *Device) requeue(c *conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.queued || c.gone || d.closed {
		return c.queued
	}
	c.queued = true
	d.ready = append(d.ready, c)
	return true
}

// unpop puts c back at the front of the ready queue.
func (d *Device) unpop(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !c.queued && !c.gone {
		c.queued = true
		d.ready = append([]*conn{c}, d.ready...)
	}
}

// popReady takes the first connection off the ready queue.
func (d *Device) popReady() *conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.ready) > 0 {
		c := d.ready[0]
		d.ready = d.ready[1:]
		c.queued = false
		if !c.gone {
			return c
		}
	}
	return nil
}

// serveRx fills receive buffers with what the connections owe the guest,
// one packet a buffer, the orphan RSTs first, then the connections in
// turn. A connection with nothing more to say leaves the queue until
// woken again.
func (d *Device) serveRx(q *virtio.Queue) error {
	if d.gated {
		return nil
	}
	for {
		if len(d.orphans) > 0 {
			ch, err := d.popRx(q)
			if ch == nil {
				return err
			}
			k := d.orphans[0]
			d.orphans = d.orphans[1:]
			w := &writer{ram: d.ram, bufs: ch.Writable}
			w.write(header{srcCID: HostCID, dstCID: d.cfg.CID, srcPort: k.local, dstPort: k.peer, typ: typeStream, op: opRst}.encode())
			if err := q.Push(ch, w.n); err != nil {
				return err
			}
			continue
		}
		c := d.popReady()
		if c == nil {
			return nil
		}
		c.mu.Lock()
		op := c.next()
		c.mu.Unlock()
		if op == 0 {
			continue
		}
		ch, err := d.popRx(q)
		if ch == nil {
			d.unpop(c)
			return err
		}
		n := c.emit(op, ch)
		if err := q.Push(ch, n); err != nil {
			return err
		}
		if op == opRst {
			d.forget(c)
		} else {
			d.requeue(c)
		}
	}
}

// popRx pops the next receive chain with room for a header and some
// payload, giving back those without (Linux's hold 4 KiB).
func (d *Device) popRx(q *virtio.Queue) (*virtio.Chain, error) {
	for {
		c, err := q.Pop(virtio.WriteOnly)
		if err != nil || c == nil {
			return nil, err
		}
		if room(c) > hdrSize {
			return c, nil
		}
		d.log.Warn("rx buffer", "vsock: receive buffer with no room past a packet header given back unused", "len", room(c))
		if err := q.Push(c, 0); err != nil {
			return nil, err
		}
	}
}

// total is the length of bufs.
func total(bufs []virtio.Buffer) uint64 {
	var n uint64
	for _, b := range bufs {
		n += uint64(b.Len)
	}
	return n
}
