package virtio

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/squibvm/squib/memory"
)

// Size is the length of a transport's MMIO window.
const Size = 0x1000

// NotifyOffset is QueueNotify's offset in the window: a driver notifies
// queue i with a 32-bit write of i there (§4.2.2).
const NotifyOffset = 0x050

// Register offsets of virtio-mmio version 2 (§4.2.2).
const (
	regMagic             = 0x000
	regVersion           = 0x004
	regDeviceID          = 0x008
	regVendorID          = 0x00c
	regDeviceFeatures    = 0x010
	regDeviceFeaturesSel = 0x014
	regDriverFeatures    = 0x020
	regDriverFeaturesSel = 0x024
	regQueueSel          = 0x030
	regQueueNumMax       = 0x034
	regQueueNum          = 0x038
	regQueueReady        = 0x044
	regQueueNotify       = NotifyOffset
	regInterruptStatus   = 0x060
	regInterruptACK      = 0x064
	regStatus            = 0x070
	regQueueDescLow      = 0x080
	regQueueDescHigh     = 0x084
	regQueueAvailLow     = 0x090 // QueueDriverLow
	regQueueAvailHigh    = 0x094
	regQueueUsedLow      = 0x0a0 // QueueDeviceLow
	regQueueUsedHigh     = 0x0a4
	regSHMSel            = 0x0ac
	regSHMLenLow         = 0x0b0
	regSHMLenHigh        = 0x0b4
	regSHMBaseLow        = 0x0b8
	regSHMBaseHigh       = 0x0bc
	regConfigGeneration  = 0x0fc
	regConfig            = 0x100
)

const (
	magic   = 0x74726976 // "virt"
	version = 2
)

// Device status bits (§2.1).
const (
	statusAcknowledge = 1
	statusDriver      = 2
	statusDriverOK    = 4
	statusFeaturesOK  = 8
	statusNeedsReset  = 64
	statusFailed      = 128
)

// InterruptStatus bits (§4.2.2).
const (
	intUsedBuffer = 1
	intConfig     = 2
)

// Feature bits the transport handles (§6); the transport offers all three.
const (
	featIndirectDesc = 1 << 28
	featEventIdx     = 1 << 29
	featVersion1     = 1 << 32

	transportFeatures = featIndirectDesc | featEventIdx | featVersion1
	// deviceFeatures are the bits a device type defines (§2.2): 0 to 23
	// and 50 and up.
	deviceFeatures = 1<<24 - 1 | ^uint64(1<<50-1)
)

// Device is one virtio device type: what the transport offers the driver,
// and the work on its queues. The transport calls ID, Features, Config and
// QueueSizes once, in New.
type Device interface {
	// ID is the virtio device ID (§5): 1 network, 2 block, 4 entropy,
	// 19 socket.
	ID() uint32
	// Features are the device-type feature bits offered (bits 0-23 and
	// 50-63). The transport adds VERSION_1, EVENT_IDX and INDIRECT_DESC.
	Features() uint64
	// Config is the initial device configuration space (at most
	// Size-0x100 bytes), little-endian as the driver reads it. The
	// transport keeps it; Transport.UpdateConfig changes it.
	Config() []byte
	// QueueSizes gives each queue's QueueNumMax, a power of two up to
	// MaxQueueSize; there may be up to 64 queues.
	QueueSizes() []uint16
	// Handle serves queue i, run on the device goroutine after the driver
	// notified the queue (and once for every queue when the device is
	// activated or unquiesced). It pops chains until Pop returns nil and
	// pushes each one before returning; it must return in bounded time,
	// since a reset and a pause wait for it. An error marks the device
	// DEVICE_NEEDS_RESET.
	Handle(i int, q *Queue) error
}

// Transport is a virtio-mmio device: the register window a driver
// programs, the device's queues, and the goroutine that runs the device's
// Handle. See the package documentation for who may call what.
type Transport struct {
	dev     Device
	id      uint32
	ram     *memory.RAM
	irq     func(level bool)
	log     *OnceLog
	offered uint64 // DeviceFeatures
	queues  []*Queue
	all     uint64 // one bit per queue

	pending atomic.Uint64 // queues notified and not yet served
	wake    chan struct{} // capacity 1: pending has bits for the goroutine
	done    chan struct{} // closed by Close
	exited  chan struct{} // closed when the goroutine ends
	closing sync.Once

	// work is held by the device goroutine while it serves queues, and by
	// whatever must not overlap with that: reset, activation, Quiesce,
	// Save and Restore. It is taken before mu, never after.
	work     sync.Mutex
	active   bool // DRIVER_OK set and DEVICE_NEEDS_RESET clear; written under mu too
	quiesced bool

	mu          sync.Mutex // the registers, and the queues' driver settings
	status      uint32
	devFeatSel  uint32
	drvFeatSel  uint32
	drvFeatures uint64
	queueSel    uint32
	isr         uint32 // InterruptStatus
	level       bool   // the interrupt line: isr != 0
	config      []byte
	generation  uint32
}

// New makes the transport of dev over guest RAM ram, and starts its device
// goroutine; Close stops it. The transport drives its interrupt line through
// irq: high while InterruptStatus is not zero (a level-triggered SPI; an
// edge-triggered one fires on each rise). irq is called with the
// transport's register lock held, from vCPU threads, the device goroutine
// and callers of UpdateConfig and Restore; it must not call back into the
// transport.
func New(dev Device, ram *memory.RAM, irq func(level bool), log *slog.Logger) (*Transport, error) {
	sizes, config, feats := dev.QueueSizes(), dev.Config(), dev.Features()
	switch {
	case len(sizes) > 64:
		return nil, fmt.Errorf("virtio device %d has %d queues, more than 64", dev.ID(), len(sizes))
	case len(config) > Size-regConfig:
		return nil, fmt.Errorf("virtio device %d has %d bytes of configuration space, more than %d", dev.ID(), len(config), Size-regConfig)
	case feats&^deviceFeatures != 0:
		return nil, fmt.Errorf("virtio device %d offers feature bits %#x, which are not device-type bits", dev.ID(), feats&^deviceFeatures)
	}
	t := &Transport{
		dev: dev, id: dev.ID(), ram: ram, irq: irq,
		log:     &OnceLog{Log: log},
		offered: feats | transportFeatures,
		all:     1<<len(sizes) - 1,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		exited:  make(chan struct{}),
		config:  append([]byte(nil), config...),
	}
	for i, n := range sizes {
		if n == 0 || n&(n-1) != 0 || n > MaxQueueSize {
			return nil, fmt.Errorf("virtio device %d: queue %d's size %d is not a power of two from 1 to %d", t.id, i, n, MaxQueueSize)
		}
		q := &Queue{ram: ram, log: t.log, max: n}
		q.reset()
		t.queues = append(t.queues, q)
	}
	go t.run()
	return t, nil
}

// Close stops the device goroutine, after the Handle it may be running;
// from then on no queue is served. Close may be called more than once.
func (t *Transport) Close() {
	t.closing.Do(func() { close(t.done) })
	<-t.exited
}

// Read returns the value of a driver's load at off.
func (t *Transport) Read(off uint64, size int) uint64 {
	if off >= regConfig {
		return t.readConfig(off-regConfig, size)
	}
	if size != 4 || off%4 != 0 {
		t.log.Warn("access size", "virtio: register access that is not 32-bit and aligned ignored", "device", t.id, "offset", off, "size", size)
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.register(off)
	if !ok {
		t.log.Warn("read", "virtio: read of an unknown or write-only register ignored", "device", t.id, "offset", off)
	}
	return uint64(v)
}

// register returns the value of a readable register.
func (t *Transport) register(off uint64) (uint32, bool) {
	switch off {
	case regMagic:
		return magic, true
	case regVersion:
		return version, true
	case regDeviceID:
		return t.id, true
	case regVendorID:
		return 0, true
	case regDeviceFeatures:
		if t.devFeatSel > 1 {
			return 0, true
		}
		return uint32(t.offered >> (32 * t.devFeatSel)), true
	case regQueueNumMax:
		if q := t.selected(); q != nil {
			return uint32(q.max), true
		}
		return 0, true // no such queue
	case regQueueReady:
		if q := t.selected(); q != nil && q.ready {
			return 1, true
		}
		return 0, true
	case regInterruptStatus:
		return t.isr, true
	case regStatus:
		return t.status, true
	case regSHMLenLow, regSHMLenHigh, regSHMBaseLow, regSHMBaseHigh:
		return ^uint32(0), true // no shared memory region (§4.2.2)
	case regConfigGeneration:
		return t.generation, true
	}
	return 0, false
}

// Write performs a driver's store of v at off.
func (t *Transport) Write(off uint64, size int, v uint64) {
	if off >= regConfig {
		t.log.Warn("config write", "virtio: driver write to the configuration space ignored", "device", t.id, "offset", off-regConfig, "size", size)
		return
	}
	if size != 4 || off%4 != 0 {
		t.log.Warn("access size", "virtio: register access that is not 32-bit and aligned ignored", "device", t.id, "offset", off, "size", size)
		return
	}
	w := uint32(v)
	switch off {
	case regQueueNotify:
		t.Notify(w)
		return
	case regStatus:
		t.writeStatus(w)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch off {
	case regDeviceFeaturesSel:
		t.devFeatSel = w
	case regDriverFeaturesSel:
		t.drvFeatSel = w
	case regDriverFeatures:
		switch {
		case t.status&(statusDriver|statusFeaturesOK|statusFailed|statusNeedsReset) != statusDriver:
			t.log.Warn("features write", "virtio: DriverFeatures written outside feature negotiation ignored", "device", t.id, "status", t.status)
		case t.drvFeatSel <= 1: // bits 64 and up: none is offered or known
			shift := 32 * t.drvFeatSel
			t.drvFeatures = t.drvFeatures&^(0xffffffff<<shift) | uint64(w)<<shift
		}
	case regQueueSel:
		t.queueSel = w
	case regQueueNum, regQueueReady, regQueueDescLow, regQueueDescHigh,
		regQueueAvailLow, regQueueAvailHigh, regQueueUsedLow, regQueueUsedHigh:
		t.writeQueue(off, w)
	case regInterruptACK:
		t.setISR(t.isr &^ w)
	case regSHMSel:
		// No shared memory regions to select.
	default:
		t.log.Warn("write", "virtio: write to an unknown or read-only register ignored", "device", t.id, "offset", off)
	}
}

// selected is the queue QueueSel picks, or nil.
func (t *Transport) selected() *Queue {
	if t.queueSel < uint32(len(t.queues)) {
		return t.queues[t.queueSel]
	}
	return nil
}

// writeQueue sets a register of the selected queue. The driver sets queues
// up between FEATURES_OK and DRIVER_OK (§3.1.1); at other times the
// queue's settings are the device's to rely on, and writes are ignored.
func (t *Transport) writeQueue(off uint64, w uint32) {
	q := t.selected()
	if off == regQueueReady && w == 0 && (q == nil || !q.ready) {
		return // Linux stops its queues this way after the reset that stopped them
	}
	if q == nil || t.status&(statusFeaturesOK|statusDriverOK|statusFailed|statusNeedsReset) != statusFeaturesOK {
		t.log.Warn("queue write", "virtio: queue register write outside queue set-up ignored", "device", t.id, "queue", t.queueSel, "status", t.status)
		return
	}
	low := func(a *uint64) { *a = *a&^0xffffffff | uint64(w) }
	high := func(a *uint64) { *a = *a&0xffffffff | uint64(w)<<32 }
	switch off {
	case regQueueNum:
		q.num = w
	case regQueueReady:
		q.ready = w&1 != 0
	case regQueueDescLow:
		low(&q.desc)
	case regQueueDescHigh:
		high(&q.desc)
	case regQueueAvailLow:
		low(&q.avail)
	case regQueueAvailHigh:
		high(&q.avail)
	case regQueueUsedLow:
		low(&q.used)
	case regQueueUsedHigh:
		high(&q.used)
	}
}

// Notify is a QueueNotify write of i: it marks queue i for the device
// goroutine and wakes it, without waiting for anything. A VMM whose
// hypervisor takes QueueNotify writes without an exit (KVM's ioeventfd at
// NotifyOffset) calls it from there; it may be called from any goroutine.
func (t *Transport) Notify(i uint32) {
	if i >= uint32(len(t.queues)) {
		t.log.Warn("notify", "virtio: notification of a queue the device does not have ignored", "device", t.id, "queue", i)
		return
	}
	t.pending.Or(1 << i)
	t.signal()
}

func (t *Transport) signal() {
	select {
	case t.wake <- struct{}{}:
	default: // already woken
	}
}

// writeStatus is a Status write: 0 resets the device; otherwise the driver
// adds bits, each once its predecessors are set (§3.1.1). It holds work, so
// a reset returns only once the device goroutine is off the queues, as
// Linux's virtio-mmio, which never reads the status back after writing 0,
// needs.
func (t *Transport) writeStatus(v uint32) {
	t.work.Lock()
	defer t.work.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if v == 0 {
		t.reset()
		return
	}
	// The driver rewrites every bit it set; DEVICE_NEEDS_RESET is the
	// device's, and stays whatever the driver writes.
	if keep := t.status &^ statusNeedsReset; v&keep != keep {
		t.log.Warn("status clear", "virtio: status write that clears bits ignored", "device", t.id, "status", t.status, "value", v)
		return
	}
	add := v &^ t.status &^ statusNeedsReset
	t.status |= add & statusFailed
	refuse := func(why string) {
		t.log.Warn(why, "virtio: status bit refused: "+why, "device", t.id, "status", t.status, "value", v)
	}
	if add&statusAcknowledge != 0 {
		t.status |= statusAcknowledge
	}
	if add&statusDriver != 0 {
		if t.status&statusAcknowledge == 0 {
			refuse("DRIVER before ACKNOWLEDGE")
			return
		}
		t.status |= statusDriver
	}
	if add&statusFeaturesOK != 0 {
		switch {
		case t.status&statusDriver == 0:
			refuse("FEATURES_OK before DRIVER")
			return
		case t.drvFeatures&featVersion1 == 0:
			refuse("the driver did not accept VERSION_1 (a legacy driver)")
			return
		case t.drvFeatures&^t.offered != 0:
			refuse("the driver accepted features the device does not offer")
			return
		}
		t.status |= statusFeaturesOK
	}
	if add&statusDriverOK != 0 {
		if t.status&(statusFeaturesOK|statusFailed|statusNeedsReset) != statusFeaturesOK {
			refuse("DRIVER_OK before FEATURES_OK, or after FAILED or DEVICE_NEEDS_RESET")
			return
		}
		t.status |= statusDriverOK
		t.activate()
	}
}

// activate starts the device at DRIVER_OK: every ready queue is checked
// and set up, then served once (the driver may have made buffers available
// before DRIVER_OK). A queue that cannot be used fails the device.
// Called with work and mu held.
func (t *Transport) activate() {
	for i, q := range t.queues {
		if !q.ready {
			continue
		}
		if err := q.activate(t.drvFeatures); err != nil {
			t.fail(fmt.Errorf("queue %d: %w", i, err))
			return
		}
	}
	t.active = true
	t.pending.Or(t.all)
	t.signal()
}

// fail sets DEVICE_NEEDS_RESET and stops serving the queues until the
// driver resets the device; a driver past DRIVER_OK gets a configuration
// change interrupt (§2.1.2). Called with work and mu held.
func (t *Transport) fail(err error) {
	t.log.Log.Warn("virtio: device needs reset", "device", t.id, "err", err)
	t.active = false
	t.status |= statusNeedsReset
	if t.status&statusDriverOK != 0 {
		t.setISR(t.isr | intConfig)
	}
}

// reset is a device reset (§2.4, §4.2.3.1): status, features, selectors,
// InterruptStatus and every queue to their initial values. The
// configuration space and its generation stay. Called with work and mu
// held.
func (t *Transport) reset() {
	t.active = false
	t.pending.Store(0)
	t.status, t.devFeatSel, t.drvFeatSel, t.drvFeatures, t.queueSel = 0, 0, 0, 0, 0
	for _, q := range t.queues {
		q.reset()
	}
	t.setISR(0)
}

// setISR sets InterruptStatus and drives the line to match. Called with mu
// held.
func (t *Transport) setISR(isr uint32) {
	t.isr = isr
	if level := isr != 0; level != t.level {
		t.level = level
		t.irq(level)
	}
}

// readConfig serves a driver's load from the configuration space, at any
// width up to 8 bytes inside it (Linux reads a 64-bit field as two 32-bit
// halves).
func (t *Transport) readConfig(off uint64, size int) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if (size != 1 && size != 2 && size != 4 && size != 8) || off > uint64(len(t.config)) || uint64(size) > uint64(len(t.config))-off {
		t.log.Warn("config read", "virtio: configuration space read outside the space ignored", "device", t.id, "offset", off, "size", size)
		return 0
	}
	var b [8]byte
	copy(b[:], t.config[off:off+uint64(size)])
	return binary.LittleEndian.Uint64(b[:])
}

// UpdateConfig changes the device configuration space at off to b, as the
// device does when its configuration changes (a resized disk), bumps
// ConfigGeneration and, once the driver is past DRIVER_OK, sends it a
// configuration change interrupt (§2.5.1). Any goroutine may call it.
func (t *Transport) UpdateConfig(off int, b []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if off < 0 || off > len(t.config) || len(b) > len(t.config)-off {
		return fmt.Errorf("virtio device %d: configuration update [%d, +%d) outside its %d bytes", t.id, off, len(b), len(t.config))
	}
	copy(t.config[off:], b)
	t.generation++
	if t.status&statusDriverOK != 0 {
		t.setISR(t.isr | intConfig)
	}
	return nil
}

// run is the device goroutine.
func (t *Transport) run() {
	defer close(t.exited)
	for {
		select {
		case <-t.wake:
			t.serve()
		case <-t.done:
			return
		}
	}
}

// serve runs Handle for each notified queue, then raises the interrupt if
// a queue's driver wants one. Notifications that arrive while the device
// is quiesced wait for Unquiesce.
func (t *Transport) serve() {
	t.work.Lock()
	defer t.work.Unlock()
	if !t.active || t.quiesced {
		return
	}
	for p := t.pending.Swap(0); p != 0; p &= p - 1 {
		i := bits.TrailingZeros64(p)
		q := t.queues[i]
		if !q.ready {
			continue
		}
		q.budget, q.more = int(q.size), false
		err := t.dev.Handle(i, q)
		raise := false
		if err == nil {
			raise, err = q.interrupt()
		}
		if err != nil {
			t.mu.Lock()
			t.fail(fmt.Errorf("queue %d: %w", i, err))
			t.mu.Unlock()
			return
		}
		if raise {
			t.mu.Lock()
			t.setISR(t.isr | intUsedBuffer)
			t.mu.Unlock()
		}
		if q.more {
			t.pending.Or(1 << i)
			t.signal()
		}
	}
}

// Quiesce stops the device goroutine between two Handle calls and returns
// once no Handle runs; notifications keep arriving and wait. A device has
// no chain in flight then (see Push), so its state and guest RAM agree for
// Save. It may be called more than once, never from Handle.
func (t *Transport) Quiesce() {
	t.work.Lock()
	t.quiesced = true
	t.work.Unlock()
}

// Unquiesce lets the device goroutine run again and has it serve every
// queue once: a restored guest may have made buffers available that no
// notification announced, and with EVENT_IDX it would not notify again
// until the device re-arms avail_event. It may be called more than once.
func (t *Transport) Unquiesce() {
	t.work.Lock()
	t.quiesced = false
	t.pending.Or(t.all)
	t.work.Unlock()
	t.signal()
}

// OnceLog logs each kind of guest misbehaviour once per transport or
// device, so a guest cannot flood the log.
type OnceLog struct {
	Log  *slog.Logger
	seen sync.Map // kinds logged
}

// Warn logs msg at Warn level, unless a message of this kind was logged
// before.
func (l *OnceLog) Warn(kind, msg string, args ...any) {
	if _, dup := l.seen.LoadOrStore(kind, true); !dup {
		l.Log.Warn(msg, args...)
	}
}
