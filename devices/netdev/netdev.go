// Package netdev is the virtio network device (virtio 1.2 §5.1, device
// ID 1) and its host-side backends: a Linux tap (Tap), frames as datagrams
// on a Unix socket in vfkit's protocol (Unixgram, for gvproxy and its
// kind), and an in-process NAT network from gvisor-tap-vsock (User).
//
// # Device
//
// One queue pair (rx 0, tx 1) of 256, no control queue. Features: MAC when
// the interface has one (else the guest picks its own); and, on a backend
// with offloads (a tap), CSUM, GUEST_CSUM, GUEST_TSO4/6, GUEST_UFO and
// HOST_TSO4/6, HOST_UFO, as Firecracker offers them: the tap's kernel
// completes the checksums and segments the header asks for, and is told
// (TUNSETOFFLOAD) which of them the guest takes; on a backend without
// (the user-mode network), MTU with 65520 bytes, so that the guest sends
// and receives 64 KiB frames instead of 1514-byte ones: the costs of a
// frame (the netstack's above all) are paid 43 times less often. No
// MRG_RXBUF: every received frame goes into one receive chain, which
// Linux sizes for its MTU (or for 64 KiB with GUEST_TSO). The
// configuration space is mac[6], status, max_virtqueue_pairs (zero:
// neither STATUS nor MQ is offered) and mtu.
//
// # Flow
//
// The device goroutine never waits on the backend. A reader goroutine
// reads frames from the backend into a queue of 64; the device moves them
// into receive chains as the guest gives them and asks its transport to
// serve the rx queue when a frame comes (SetNotify). While the queue is
// full the reader stops reading, so the backend holds (or, a tap's kernel,
// drops) what follows. Transmitted chains are copied into a queue of 64
// frames for a writer goroutine; while that queue is full the device
// leaves the guest's chains in the ring and the writer asks for the tx
// queue again once it has room, so a host side that stops reading stalls
// only this device's transmissions.
//
// # Guest input
//
// A transmitted chain shorter than the 12-byte header or longer than
// MaxFrame, or one asking for a checksum or segmentation offload the
// device did not offer, is dropped (given back) and logged once per kind.
// A frame longer than the receive chain the guest gave is dropped, the
// chain given back unused.
//
// # Snapshots
//
// State saves the interface's Config; frames in flight in either queue
// are not saved (a network may lose frames). A restore reopens the
// backend by its saved name (a tap's name, the peer's socket), or another
// one the load names; the user-mode network starts fresh, so the guest's
// connections through it are lost and the guest keeps its address (the
// network's DHCP lease is static, for the interface's MAC). The guest keeps
// the MAC it had: clones of one snapshot share it, which is harmless on
// their own user-mode networks but not on one shared segment (see
// Config.MAC).
package netdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// Queues (§5.1.2).
const (
	rxQueue = 0
	txQueue = 1
)

const (
	queueSize = 256
	depth     = 64 // frames waiting in each direction
)

// Feature bits (§5.1.3).
const (
	featCSUM      = 1 << 0
	featGuestCSUM = 1 << 1
	featMTU       = 1 << 3
	featMAC       = 1 << 5
	featGuestTSO4 = 1 << 7
	featGuestTSO6 = 1 << 8
	featGuestUFO  = 1 << 10
	featHostTSO4  = 1 << 11
	featHostTSO6  = 1 << 12
	featHostUFO   = 1 << 14

	offloadFeatures = featCSUM | featGuestCSUM | featGuestTSO4 | featGuestTSO6 | featGuestUFO |
		featHostTSO4 | featHostTSO6 | featHostUFO
)

// virtio_net_hdr fields (§5.1.6).
const (
	hdrNeedsCsum = 1 // flags
	gsoNone      = 0 // gso_type
)

// offloader is a backend whose kernel completes offloads: SetOffloads
// tells it which the guest takes, from the GUEST_* feature bits it
// accepted.
type offloader interface{ SetOffloads(features uint64) error }

// Device is one network interface over guest RAM.
type Device struct {
	ram      *memory.RAM
	cfg      Config
	be       Backend
	log      *virtio.OnceLog
	features uint64
	notify   func(queue uint32)

	rx      chan []byte // frames from the backend, header first
	tx      chan []byte // frames for the backend
	txWait  atomic.Bool // serveTx stopped on a full tx: the writer notifies
	done    chan struct{}
	closing sync.Once
	wg      sync.WaitGroup

	// The device goroutine's.
	pending  []byte // a received frame waiting for a receive chain
	offloads uint64 // the features last given to an offloader
	scratch  []byte // a transmitted frame being copied out
}

// New makes the device of cfg over ram on an open backend, which it owns
// from then on; an interface on the user-mode network without a MAC gets
// DefaultUserMAC. Its goroutines start with SetNotify.
func New(cfg Config, be Backend, ram *memory.RAM, log *slog.Logger) *Device {
	if cfg.User && cfg.MAC == nil {
		cfg.MAC = DefaultUserMAC // the network leases the guest's address to it
	}
	d := &Device{ram: ram, cfg: cfg, be: be, log: &virtio.OnceLog{Log: log},
		rx: make(chan []byte, depth), tx: make(chan []byte, depth), done: make(chan struct{})}
	if cfg.MAC != nil {
		d.features |= featMAC
	}
	if be.Offloads() {
		d.features |= offloadFeatures
	}
	if be.MTU() > 0 {
		d.features |= featMTU
	}
	return d
}

// SetNotify gives the device its transport's Notify and starts the reader
// and the writer. The VMM calls it once, right after virtio.New.
func (d *Device) SetNotify(notify func(queue uint32)) {
	d.notify = notify
	d.wg.Add(2)
	go d.read()
	go d.write()
}

// Close closes the backend and waits for the reader and writer. The
// transport must be closed first.
func (d *Device) Close() error {
	var err error
	d.closing.Do(func() {
		close(d.done)
		err = d.be.Close()
		d.wg.Wait()
	})
	return err
}

func (*Device) ID() uint32           { return 1 }
func (d *Device) Features() uint64   { return d.features }
func (*Device) QueueSizes() []uint16 { return []uint16{queueSize, queueSize} }

// Config is the configuration space: mac[6], status le16,
// max_virtqueue_pairs le16 (those two zero) and mtu le16 (the backend's,
// read by a driver that accepted MTU).
func (d *Device) Config() []byte {
	c := make([]byte, 12)
	copy(c, d.cfg.MAC)
	binary.LittleEndian.PutUint16(c[10:], uint16(d.be.MTU()))
	return c
}

// State returns the device's state: its configuration.
func (d *Device) State() State { return d.cfg.state() }

// Handle serves queue i.
func (d *Device) Handle(i int, q *virtio.Queue) error {
	if o, ok := d.be.(offloader); ok && q.Features()&offloadFeatures != d.offloads {
		d.offloads = q.Features() & offloadFeatures
		if err := o.SetOffloads(d.offloads); err != nil {
			d.log.Warn("offloads", "net: the backend refused the guest's offloads", "err", err)
		}
	}
	if i == rxQueue {
		return d.serveRx(q)
	}
	return d.serveTx(q)
}

// serveRx moves received frames into the guest's receive chains, one frame
// a chain, num_buffers set to 1.
func (d *Device) serveRx(q *virtio.Queue) error {
	for {
		if d.pending == nil {
			select {
			case d.pending = <-d.rx:
			default:
				return nil
			}
		}
		c, err := q.Pop(virtio.WriteOnly)
		if err != nil || c == nil {
			return err
		}
		f := d.pending
		d.pending = nil
		var n uint32
		if c.Room() >= uint64(len(f)) {
			f[10], f[11] = 1, 0 // num_buffers
			n = c.Scatter(d.ram, f)
		} else {
			d.log.Warn("rx short", "net: frame longer than the guest's receive buffer dropped", "frame", len(f), "buffer", c.Room())
		}
		if err := q.Push(c, n); err != nil {
			return err
		}
	}
}

// serveTx copies the guest's transmitted frames into the writer's queue
// while it has room.
func (d *Device) serveTx(q *virtio.Queue) error {
	for {
		if len(d.tx) == cap(d.tx) {
			d.txWait.Store(true)
			if len(d.tx) == cap(d.tx) {
				return nil // the writer notifies the queue when it takes one
			}
			d.txWait.Store(false)
		}
		c, err := q.Pop(virtio.ReadOnly)
		if err != nil || c == nil {
			return err
		}
		if f := d.frame(c); f != nil {
			d.tx <- f
		}
		if err := q.Push(c, 0); err != nil {
			return err
		}
	}
}

// frame copies out the frame c holds, header first, or returns nil for a
// malformed one.
func (d *Device) frame(c *virtio.Chain) []byte {
	if d.scratch == nil {
		d.scratch = make([]byte, MaxFrame)
	}
	n, more := c.Gather(d.ram, d.scratch)
	f := d.scratch[:n]
	switch {
	case more:
		d.log.Warn("tx long", "net: transmitted frame longer than 65562 bytes dropped")
		return nil
	case n < HeaderSize:
		d.log.Warn("tx short", "net: transmitted chain shorter than the 12-byte header dropped", "len", n)
		return nil
	case d.features&featCSUM == 0 && (f[0]&hdrNeedsCsum != 0 || f[1] != gsoNone):
		d.log.Warn("tx offload", "net: transmitted frame asking for an offload the device did not offer dropped", "flags", f[0], "gso_type", f[1])
		return nil
	}
	return append([]byte(nil), f...)
}

// read moves the backend's frames into the rx queue until Close.
func (d *Device) read() {
	defer d.wg.Done()
	buf := make([]byte, MaxFrame)
	for {
		n, err := d.be.ReadFrame(buf)
		select {
		case <-d.done:
			return
		default:
		}
		if err != nil {
			d.log.Warn("read", "net: reading from the backend failed: the guest receives no more frames", "err", err)
			return
		}
		if n < HeaderSize {
			continue
		}
		select {
		case d.rx <- append([]byte(nil), buf[:n]...):
			d.notify(rxQueue)
		case <-d.done:
			return
		}
	}
}

// write sends the tx queue's frames to the backend until Close.
func (d *Device) write() {
	defer d.wg.Done()
	for {
		var f []byte
		select {
		case f = <-d.tx:
		case <-d.done:
			return
		}
		if d.txWait.Swap(false) {
			d.notify(txQueue)
		}
		if err := d.be.WriteFrame(f); err != nil {
			select {
			case <-d.done:
				return
			default:
			}
			d.log.Warn("write", "net: a frame the backend refused dropped", "err", err)
		}
	}
}

// Config is one network interface: its id, the guest's MAC, and the
// backend the device opens (exactly one of Tap, Unixgram and User).
type Config struct {
	ID string
	// MAC is the guest's address (Firecracker's guest_mac), or nil for
	// one the guest picks. A restored guest keeps the MAC it had, whatever
	// the restoring configuration says: clones of one snapshot that share
	// one network segment (a bridge of taps, one gvproxy) must each set a
	// MAC of their own in the guest after restore, for instance
	// "ip link set dev eth0 address ..."; on their own user-mode networks
	// they need not.
	MAC net.HardwareAddr
	// Tap is the name of a Linux tap device (host_dev_name).
	Tap string
	// Unixgram is the path of a peer's unixgram socket that takes one
	// bare Ethernet frame per datagram (gvproxy's -listen-vfkit);
	// VfkitMagic sends vfkit's "VFKT" datagram first.
	Unixgram   string
	VfkitMagic bool
	// User is the built-in user-mode network, with Publish's port
	// forwards from the host.
	User    bool
	Publish []Forward
}

// Check refuses a configuration without exactly one backend, with a MAC
// that is not a unicast 48-bit address, or with forwards without a
// user-mode network.
func (c Config) Check() error {
	n := 0
	for _, set := range []bool{c.Tap != "", c.Unixgram != "", c.User} {
		if set {
			n++
		}
	}
	switch {
	case c.ID == "":
		return errors.New("a network interface needs an id")
	case n != 1:
		return fmt.Errorf("network interface %s: give exactly one backend: a tap (host_dev_name), a unixgram socket or the user-mode network", c.ID)
	case c.MAC != nil && (len(c.MAC) != 6 || c.MAC[0]&1 != 0):
		return fmt.Errorf("network interface %s: guest MAC %s is not a unicast Ethernet address", c.ID, c.MAC)
	case len(c.Publish) > 0 && !c.User:
		return fmt.Errorf("network interface %s: published ports need the user-mode network", c.ID)
	case len(c.Tap) > 15:
		return fmt.Errorf("network interface %s: tap name %q is longer than 15 bytes", c.ID, c.Tap)
	}
	return nil
}

// Open opens the backend c names.
func Open(c Config, log *slog.Logger) (Backend, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	var be Backend
	var err error
	switch {
	case c.Tap != "":
		be, err = OpenTap(c.Tap)
	case c.Unixgram != "":
		be, err = DialUnixgram(c.Unixgram, c.VfkitMagic)
	default:
		be, err = NewUser(UserConfig{GuestMAC: c.MAC, Publish: c.Publish}, log)
	}
	if err != nil {
		return nil, fmt.Errorf("network interface %s: %w", c.ID, err)
	}
	return be, nil
}

// State is a network device's state in a snapshot: its configuration.
type State struct {
	ID         string   `cbor:"1,keyasint"`
	MAC        []byte   `cbor:"2,keyasint,omitempty"`
	Tap        string   `cbor:"3,keyasint,omitempty"`
	Unixgram   string   `cbor:"4,keyasint,omitempty"`
	VfkitMagic bool     `cbor:"5,keyasint,omitempty"`
	User       bool     `cbor:"6,keyasint,omitempty"`
	Publish    []string `cbor:"7,keyasint,omitempty"`
}

func (c Config) state() State {
	s := State{ID: c.ID, Tap: c.Tap, Unixgram: c.Unixgram, VfkitMagic: c.VfkitMagic, User: c.User}
	if c.MAC != nil {
		s.MAC = append([]byte(nil), c.MAC...)
	}
	for _, f := range c.Publish {
		s.Publish = append(s.Publish, f.String())
	}
	return s
}

// Config returns the configuration s saved, checked as hostile input.
func (s State) Config() (Config, error) {
	c := Config{ID: s.ID, Tap: s.Tap, Unixgram: s.Unixgram, VfkitMagic: s.VfkitMagic, User: s.User}
	if s.MAC != nil {
		c.MAC = net.HardwareAddr(append([]byte(nil), s.MAC...))
	}
	for _, p := range s.Publish {
		f, err := ParseForward(p)
		if err != nil {
			return Config{}, err
		}
		c.Publish = append(c.Publish, f)
	}
	return c, c.Check()
}
