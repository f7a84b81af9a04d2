package virtio

import (
	"context"
	"encoding/binary"
	"log/slog"
	"sync"
	"testing"

	"github.com/squibvm/squib/memory"
)

// The tests' guest RAM: a Go byte slice wrapped as memory.RAM. Queue i's
// rings sit at ringArea + i*ringStride (descriptor table, then the avail
// ring at +0x1000 and the used ring at +0x2000); data buffers come from
// bufArea up.
const (
	ramBase    = 0x4000_0000
	ramSize    = 1 << 17
	ringArea   = ramBase
	ringStride = 0x4000
	bufArea    = ramBase + 0x10000
)

func newRAM() *memory.RAM {
	return memory.Adopt(ramBase, make([]byte, ramSize), func([]byte) error { return nil })
}

// line is a fake interrupt line.
type line struct {
	mu    sync.Mutex
	level bool
	rises int
}

func (l *line) set(level bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if level && !l.level {
		l.rises++
	}
	l.level = level
}

func (l *line) get() (level bool, rises int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.level, l.rises
}

// testDevice is a device type for tests: by default queue i echoes the
// bytes of each chain's readable buffers into its writable ones.
type testDevice struct {
	ram    *memory.RAM
	feats  uint64
	config []byte
	sizes  []uint16
	layout Layout
	handle func(i int, q *Queue) error // replaces echo when set

	mu     sync.Mutex
	calls  int
	chains []*Chain
}

func (d *testDevice) ID() uint32           { return 42 }
func (d *testDevice) Features() uint64     { return d.feats }
func (d *testDevice) Config() []byte       { return d.config }
func (d *testDevice) QueueSizes() []uint16 { return d.sizes }

func (d *testDevice) Handle(i int, q *Queue) error {
	d.mu.Lock()
	d.calls++
	d.mu.Unlock()
	if d.handle != nil {
		return d.handle(i, q)
	}
	for {
		c, err := q.Pop(d.layout)
		if err != nil || c == nil {
			return err
		}
		d.mu.Lock()
		d.chains = append(d.chains, c)
		d.mu.Unlock()
		var data []byte
		for _, b := range c.Readable {
			s, err := d.ram.Slice(b.Addr, uint64(b.Len))
			if err != nil {
				return err
			}
			data = append(data, s...)
		}
		n := 0
		for _, b := range c.Writable {
			s, err := d.ram.Mutable(b.Addr, uint64(b.Len))
			if err != nil {
				return err
			}
			n += copy(s, data[n:])
		}
		if err := q.Push(c, uint32(n)); err != nil {
			return err
		}
	}
}

func (d *testDevice) seen() (calls int, chains []*Chain) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls, append([]*Chain(nil), d.chains...)
}

// logCounter counts the records logged at each message.
type logCounter struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (h *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logCounter) WithGroup(string) slog.Handler            { return h }
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs[r.Message]++
	return nil
}

func (h *logCounter) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[msg]
}

// driver plays the guest's virtio-mmio driver.
type driver struct {
	t     *testing.T
	ram   *memory.RAM
	dev   *testDevice
	tr    *Transport
	irq   *line
	logs  *logCounter
	rings []*ring
	next  uint64 // next free byte of the buffer area
}

// ring is the driver's view of one queue.
type ring struct {
	size              uint16
	desc, avail, used uint64
	availIdx, usedIdx uint16 // the next avail entry to publish, the next used entry to read
	free              uint16 // the next descriptor to hand out
}

type used struct {
	id, len uint32
}

// newDriver makes a transport over dev (with a RAM and queue sizes filled
// in when missing).
func newDriver(t *testing.T, dev *testDevice) *driver {
	t.Helper()
	if dev.ram == nil {
		dev.ram = newRAM()
	}
	if dev.sizes == nil {
		dev.sizes = []uint16{16}
	}
	d := &driver{t: t, ram: dev.ram, dev: dev, irq: &line{}, logs: &logCounter{msgs: map[string]int{}}, next: bufArea}
	tr, err := New(dev, dev.ram, d.irq.set, slog.New(d.logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	d.tr = tr
	return d
}

func (d *driver) w(off uint64, v uint32) { d.tr.Write(off, 4, uint64(v)) }
func (d *driver) r(off uint64) uint32    { return uint32(d.tr.Read(off, 4)) }

// negotiate runs the driver's initialization up to FEATURES_OK with the
// given accepted features and reports whether the device kept
// FEATURES_OK.
func (d *driver) negotiate(features uint64) bool {
	d.w(regStatus, 0)
	d.w(regStatus, statusAcknowledge)
	d.w(regStatus, statusAcknowledge|statusDriver)
	d.w(regDriverFeaturesSel, 1)
	d.w(regDriverFeatures, uint32(features>>32))
	d.w(regDriverFeaturesSel, 0)
	d.w(regDriverFeatures, uint32(features))
	d.w(regStatus, statusAcknowledge|statusDriver|statusFeaturesOK)
	return d.r(regStatus)&statusFeaturesOK != 0
}

// start brings the device up with the given features and every queue set
// up at the given size (its max when 0).
func (d *driver) start(features uint64, size uint16) {
	d.t.Helper()
	if !d.negotiate(features) {
		d.t.Fatalf("features %#x refused", features)
	}
	d.rings = nil
	for i, max := range d.dev.sizes {
		n := size
		if n == 0 {
			n = max
		}
		base := uint64(ringArea + i*ringStride)
		rings, _ := d.ram.Slice(base, ringStride)
		clear(rings) // fresh rings, as a driver allocates them
		d.setupQueue(i, n, base, base+0x1000, base+0x2000)
	}
	d.w(regStatus, statusAcknowledge|statusDriver|statusFeaturesOK|statusDriverOK)
	if s := d.r(regStatus); s&statusDriverOK == 0 {
		d.t.Fatalf("status %#x: DRIVER_OK refused", s)
	}
	d.sync()
}

func (d *driver) setupQueue(i int, size uint16, desc, avail, used uint64) {
	d.w(regQueueSel, uint32(i))
	d.w(regQueueNum, uint32(size))
	d.w(regQueueDescLow, uint32(desc))
	d.w(regQueueDescHigh, uint32(desc>>32))
	d.w(regQueueAvailLow, uint32(avail))
	d.w(regQueueAvailHigh, uint32(avail>>32))
	d.w(regQueueUsedLow, uint32(used))
	d.w(regQueueUsedHigh, uint32(used>>32))
	d.w(regQueueReady, 1)
	d.rings = append(d.rings, &ring{size: size, desc: desc, avail: avail, used: used})
}

// sync waits until the device has served every notification so far.
func (d *driver) sync() { d.tr.serve() }

// putDesc writes descriptor idx of queue q.
func (d *driver) putDesc(q int, idx uint16, addr uint64, n uint32, flags, next uint16) {
	d.putTableDesc(d.rings[q].desc, idx, addr, n, flags, next)
}

func (d *driver) putTableDesc(table uint64, idx uint16, addr uint64, n uint32, flags, next uint16) {
	b, err := d.ram.Slice(table, uint64(idx+1)*descSize)
	if err != nil {
		d.t.Fatal(err)
	}
	putDesc(b, int(idx), addr, n, flags, next)
}

// putDesc writes descriptor i of the table in b.
func putDesc(b []byte, i int, addr uint64, n uint32, flags, next uint16) {
	b = b[i*descSize:]
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// alloc returns a fresh buffer of n bytes holding data.
func (d *driver) alloc(n int, data []byte) uint64 {
	addr := d.next
	d.next += uint64(n+15) &^ 15
	if err := d.ram.Write(addr, data); err != nil {
		d.t.Fatal(err)
	}
	return addr
}

// seg is one buffer of a chain the driver builds.
type seg struct {
	data  []byte // a readable buffer's contents
	room  int    // a writable buffer's size
	write bool
}

// chain lays out a direct chain of fresh descriptors and buffers in queue
// q and returns its head and the buffers' addresses.
func (d *driver) chain(q int, segs ...seg) (uint16, []uint64) {
	r := d.rings[q]
	head := r.free
	var addrs []uint64
	for i, s := range segs {
		idx := r.free
		r.free = (r.free + 1) % r.size
		var flags uint16
		n := len(s.data)
		if s.write {
			flags, n = descWrite, s.room
		}
		if i < len(segs)-1 {
			flags |= descNext
		}
		addr := d.alloc(n, s.data)
		addrs = append(addrs, addr)
		d.putDesc(q, idx, addr, uint32(n), flags, r.free)
	}
	return head, addrs
}

// publish makes the chains at heads available in queue q and notifies.
func (d *driver) publish(q int, heads ...uint16) {
	r := d.rings[q]
	for _, h := range heads {
		b, _ := d.ram.Slice(r.avail+4+2*uint64(r.availIdx%r.size), 2)
		binary.LittleEndian.PutUint16(b, h)
		r.availIdx++
	}
	if err := d.ram.AtomicStore16(r.avail+2, r.availIdx); err != nil {
		d.t.Fatal(err)
	}
	d.w(regQueueNotify, uint32(q))
}

// takeUsed returns the used elements of queue q that the driver has not
// seen yet.
func (d *driver) takeUsed(q int) []used {
	r := d.rings[q]
	idx, err := d.ram.AtomicLoad16(r.used + 2)
	if err != nil {
		d.t.Fatal(err)
	}
	var out []used
	for ; r.usedIdx != idx; r.usedIdx++ {
		b, _ := d.ram.Slice(r.used+4+8*uint64(r.usedIdx%r.size), 8)
		out = append(out, used{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])})
	}
	return out
}

// set16 writes a 16-bit ring field as the guest does.
func (d *driver) set16(gpa uint64, v uint16) {
	if err := d.ram.AtomicStore16(gpa, v); err != nil {
		d.t.Fatal(err)
	}
}

func (d *driver) get16(gpa uint64) uint16 {
	v, err := d.ram.AtomicLoad16(gpa)
	if err != nil {
		d.t.Fatal(err)
	}
	return v
}

// ack services an interrupt as Linux does: read InterruptStatus, write it
// back to InterruptACK.
func (d *driver) ack() uint32 {
	isr := d.r(regInterruptStatus)
	d.w(regInterruptACK, isr)
	return isr
}

const features = featVersion1 | featEventIdx | featIndirectDesc
