package virtio

import (
	"bytes"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRegisters(t *testing.T) {
	d := newDriver(t, &testDevice{feats: 1<<5 | 1<<51, sizes: []uint16{256, 8}})
	for _, c := range []struct {
		name string
		sel  func()
		off  uint64
		want uint32
	}{
		{"magic", nil, regMagic, 0x74726976},
		{"version", nil, regVersion, 2},
		{"device ID", nil, regDeviceID, 42},
		{"vendor ID", nil, regVendorID, 0},
		{"features 0-31", func() { d.w(regDeviceFeaturesSel, 0) }, regDeviceFeatures, 1<<5 | 1<<28 | 1<<29},
		{"features 32-63", func() { d.w(regDeviceFeaturesSel, 1) }, regDeviceFeatures, 1<<0 | 1<<19},
		{"features 64-95", func() { d.w(regDeviceFeaturesSel, 2) }, regDeviceFeatures, 0},
		{"queue 0 max", func() { d.w(regQueueSel, 0) }, regQueueNumMax, 256},
		{"queue 1 max", func() { d.w(regQueueSel, 1) }, regQueueNumMax, 8},
		{"queue 2 max (absent)", func() { d.w(regQueueSel, 2) }, regQueueNumMax, 0},
		{"queue ready", func() { d.w(regQueueSel, 0) }, regQueueReady, 0},
		{"status", nil, regStatus, 0},
		{"interrupt status", nil, regInterruptStatus, 0},
		{"no shared memory: length", nil, regSHMLenLow, 0xffffffff},
		{"no shared memory: base", nil, regSHMBaseHigh, 0xffffffff},
		{"config generation", nil, regConfigGeneration, 0},
	} {
		if c.sel != nil {
			c.sel()
		}
		if got := d.r(c.off); got != c.want {
			t.Errorf("%s: register %#x reads %#x, want %#x", c.name, c.off, got, c.want)
		}
	}
}

func TestNewRefusesBadDevices(t *testing.T) {
	for _, c := range []struct {
		name string
		dev  *testDevice
	}{
		{"queue size 0", &testDevice{sizes: []uint16{0}}},
		{"queue size 3", &testDevice{sizes: []uint16{3}}},
		{"queue size over 32768", &testDevice{sizes: []uint16{MaxQueueSize + 1}}},
		{"65 queues", &testDevice{sizes: slices.Repeat([]uint16{8}, 65)}},
		{"a transport feature", &testDevice{sizes: []uint16{8}, feats: featEventIdx}},
		{"config too large", &testDevice{sizes: []uint16{8}, config: make([]byte, Size-regConfig+1)}},
	} {
		if tr, err := New(c.dev, newRAM(), func(bool) {}, slog.New(slog.DiscardHandler)); err == nil {
			tr.Close()
			t.Errorf("%s: New succeeded", c.name)
		}
	}
}

// TestIgnoredAccesses: accesses the spec does not allow change nothing,
// read as 0 and are logged once per kind, however many there are.
func TestIgnoredAccesses(t *testing.T) {
	d := newDriver(t, &testDevice{config: []byte{1, 2, 3, 4}})
	for range 3 {
		if v := d.tr.Read(regMagic, 2); v != 0 {
			t.Errorf("16-bit read of the magic = %#x", v)
		}
		if v := d.tr.Read(regMagic+2, 4); v != 0 {
			t.Errorf("unaligned read = %#x", v)
		}
		d.tr.Write(regStatus, 1, statusAcknowledge)
		d.tr.Write(regStatus, 8, statusAcknowledge)
		if v := d.r(regQueueNotify); v != 0 {
			t.Errorf("read of QueueNotify = %#x", v)
		}
		d.w(regMagic, 1)
		d.w(0x0c0, 1) // QueueReset, without VIRTIO_F_RING_RESET
		d.tr.Write(regConfig, 1, 9)
		if v := d.tr.Read(regConfig+2, 4); v != 0 {
			t.Errorf("config read across its end = %#x", v)
		}
		if v := d.tr.Read(regConfig, 3); v != 0 {
			t.Errorf("3-byte config read = %#x", v)
		}
		d.w(regQueueNotify, 7)
	}
	if s := d.r(regStatus); s != 0 {
		t.Errorf("status %#x after ignored writes", s)
	}
	if v := d.tr.Read(regConfig, 4); v != 0x04030201 {
		t.Errorf("config after an ignored write = %#x", v)
	}
	for _, msg := range []string{
		"virtio: register access that is not 32-bit and aligned ignored",
		"virtio: read of an unknown or write-only register ignored",
		"virtio: write to an unknown or read-only register ignored",
		"virtio: driver write to the configuration space ignored",
		"virtio: configuration space read outside the space ignored",
		"virtio: notification of a queue the device does not have ignored",
	} {
		if n := d.logs.count(msg); n != 1 {
			t.Errorf("%q logged %d times, want once", msg, n)
		}
	}
}

func TestFeatureNegotiation(t *testing.T) {
	const devFeat = 1 << 3
	for _, c := range []struct {
		name     string
		accepted uint64
		ok       bool
	}{
		{"all offered", features | devFeat, true},
		{"VERSION_1 only", featVersion1, true},
		{"legacy driver: no VERSION_1", featEventIdx | devFeat, false},
		{"nothing", 0, false},
		{"a bit not offered", featVersion1 | 1<<4, false},
		{"a transport bit not offered", featVersion1 | 1<<35, false},
	} {
		d := newDriver(t, &testDevice{feats: devFeat})
		if ok := d.negotiate(c.accepted); ok != c.ok {
			t.Errorf("%s: FEATURES_OK kept = %v, want %v", c.name, ok, c.ok)
		}
		d.w(regStatus, d.r(regStatus)|statusDriverOK)
		if running := d.r(regStatus)&statusDriverOK != 0; running != c.ok {
			t.Errorf("%s: DRIVER_OK kept = %v, want %v", c.name, running, c.ok)
		}
	}
}

func TestDriverFeaturesFrozen(t *testing.T) {
	d := newDriver(t, &testDevice{feats: 1 << 3})
	d.w(regStatus, statusAcknowledge)
	d.w(regDriverFeaturesSel, 1)
	d.w(regDriverFeatures, 1) // VERSION_1 before DRIVER: ignored
	d.w(regStatus, statusAcknowledge|statusDriver)
	d.w(regStatus, statusAcknowledge|statusDriver|statusFeaturesOK)
	if s := d.r(regStatus); s != statusAcknowledge|statusDriver {
		t.Fatalf("status %#x: features accepted before DRIVER counted", s)
	}
	d.w(regDriverFeatures, 1)
	d.w(regStatus, statusAcknowledge|statusDriver|statusFeaturesOK)
	if s := d.r(regStatus); s&statusFeaturesOK == 0 {
		t.Fatalf("status %#x: VERSION_1 refused", s)
	}
	d.w(regDriverFeaturesSel, 0)
	d.w(regDriverFeatures, 1<<3) // after FEATURES_OK: ignored
	d.tr.Quiesce()
	s, err := d.tr.Save()
	if err != nil {
		t.Fatal(err)
	}
	if s.DriverFeatures != featVersion1 {
		t.Errorf("driver features %#x, want VERSION_1 alone", s.DriverFeatures)
	}
}

func TestStatusOrder(t *testing.T) {
	d := newDriver(t, &testDevice{})
	step := func(v, want uint32) {
		t.Helper()
		d.w(regStatus, v)
		if got := d.r(regStatus); got != want {
			t.Errorf("after writing %#x status reads %#x, want %#x", v, got, want)
		}
	}
	step(statusDriver, 0)                                                     // DRIVER before ACKNOWLEDGE
	step(statusAcknowledge, 1)                                                //
	step(statusAcknowledge|statusFeaturesOK, 1)                               // FEATURES_OK before DRIVER
	step(statusAcknowledge|statusDriver, 3)                                   //
	step(statusAcknowledge|statusDriver|statusDriverOK, 3)                    // DRIVER_OK before FEATURES_OK
	step(statusDriver, 3)                                                     // clearing ACKNOWLEDGE
	step(statusAcknowledge|statusDriver|statusNeedsReset, 3)                  // NEEDS_RESET is the device's
	step(statusAcknowledge|statusDriver|statusFailed, 3|statusFailed)         // FAILED at any time
	step(statusAcknowledge|statusDriver|statusFailed|statusFeaturesOK, 0x83)  // no features accepted: refused
	step(0, 0)                                                                // reset
	step(statusAcknowledge|statusDriver|statusFailed, 3|statusFailed)         //
	step(statusAcknowledge|statusDriver|statusFailed|statusDriverOK, 0x83)    // no DRIVER_OK after FAILED
	step(statusAcknowledge|statusDriver|statusFailed|statusAcknowledge, 0x83) // rewriting the same bits
}

// TestRoundTrip: a request goes through a queue, direct and indirect, and
// the driver gets its reply and an interrupt it ACKs.
func TestRoundTrip(t *testing.T) {
	d := newDriver(t, &testDevice{})
	d.start(features, 0)
	if isr := d.r(regInterruptStatus); isr != 0 {
		t.Fatalf("interrupt status %#x before any request", isr)
	}

	head, addrs := d.chain(0, seg{data: []byte("hello, ")}, seg{data: []byte("world")}, seg{room: 8, write: true}, seg{room: 8, write: true})
	d.publish(0, head)
	d.sync()
	if u := d.takeUsed(0); !slices.Equal(u, []used{{uint32(head), 12}}) {
		t.Fatalf("used %v, want {%d 12}", u, head)
	}
	got1, _ := d.ram.Slice(addrs[2], 8)
	got2, _ := d.ram.Slice(addrs[3], 8)
	if string(got1) != "hello, w" || string(got2) != "orld\x00\x00\x00\x00" {
		t.Fatalf("reply %q %q", got1, got2)
	}
	if level, rises := d.irq.get(); !level || rises != 1 {
		t.Fatalf("interrupt line %v after %d rises, want high after 1", level, rises)
	}
	if isr := d.ack(); isr != intUsedBuffer {
		t.Fatalf("interrupt status %#x, want used buffer", isr)
	}
	if level, _ := d.irq.get(); level {
		t.Fatal("line still high after the ACK")
	}

	// A direct descriptor, then an indirect table holding the rest.
	r := d.rings[0]
	req, reply := d.alloc(4, []byte("ping")), d.alloc(4, nil)
	table := d.alloc(2*descSize, nil)
	d.putTableDesc(table, 0, d.alloc(2, []byte("> ")), 2, descNext, 1)
	d.putTableDesc(table, 1, reply, 6, descWrite, 0)
	head = r.free
	d.putDesc(0, head, req, 4, descNext, head+1)
	d.putDesc(0, head+1, table, 2*descSize, descIndirect|descWrite, 0) // WRITE on the pointer is ignored
	r.free += 2
	d.publish(0, head)
	d.sync()
	if u := d.takeUsed(0); !slices.Equal(u, []used{{uint32(head), 6}}) {
		t.Fatalf("indirect: used %v, want {%d 6}", u, head)
	}
	if got, _ := d.ram.Slice(reply, 6); string(got) != "ping> " {
		t.Fatalf("indirect reply %q", got)
	}
	_, chains := d.dev.seen()
	if c := chains[len(chains)-1]; len(c.Readable) != 2 || len(c.Writable) != 1 {
		t.Fatalf("indirect chain %+v", c)
	}
}

func TestReset(t *testing.T) {
	d := newDriver(t, &testDevice{sizes: []uint16{8, 8}, config: []byte{7}})
	d.start(features, 0)
	head, _ := d.chain(0, seg{data: []byte("x")}, seg{room: 1, write: true})
	d.publish(0, head)
	d.sync()
	if err := d.tr.UpdateConfig(0, []byte{8}); err != nil {
		t.Fatal(err)
	}
	d.w(regQueueSel, 1)
	if isr := d.r(regInterruptStatus); isr != intUsedBuffer|intConfig {
		t.Fatalf("interrupt status %#x before the reset", isr)
	}

	d.w(regStatus, 0)
	for _, c := range []struct {
		off  uint64
		want uint32
	}{{regStatus, 0}, {regInterruptStatus, 0}, {regQueueReady, 0}, {regQueueNumMax, 8}, {regConfigGeneration, 1}} {
		if got := d.r(c.off); got != c.want {
			t.Errorf("after reset register %#x reads %#x, want %#x", c.off, got, c.want)
		}
	}
	if level, _ := d.irq.get(); level {
		t.Error("interrupt line high after reset")
	}
	d.w(regQueueReady, 0) // as Linux stops its queues after the reset
	if n := d.logs.count("virtio: queue register write outside queue set-up ignored"); n != 0 {
		t.Error("stopping a stopped queue was logged")
	}
	if v := d.tr.Read(regConfig, 1); v != 8 {
		t.Errorf("config %d after reset, want 8: the device's config survives", v)
	}
	d.tr.Quiesce()
	s, _ := d.tr.Save()
	d.tr.Unquiesce()
	if want := (State{DeviceID: 42, ConfigGeneration: 1, Config: []byte{8},
		Queues: []QueueState{{Num: 8}, {Num: 8}}}); !stateEqual(s, want) {
		t.Errorf("state after reset %+v, want %+v", s, want)
	}

	// Not activated: a notification does nothing.
	calls, _ := d.dev.seen()
	d.w(regQueueNotify, 0)
	d.sync()
	if n, _ := d.dev.seen(); n != calls {
		t.Error("Handle ran after the reset")
	}

	// Re-initialized, the queues start over from index 0.
	d.start(features, 0)
	head, _ = d.chain(0, seg{data: []byte("y")}, seg{room: 1, write: true})
	d.publish(0, head)
	d.sync()
	if u := d.takeUsed(0); !slices.Equal(u, []used{{uint32(head), 1}}) {
		t.Fatalf("used after re-initialization %v", u)
	}
	if idx := d.get16(d.rings[0].used + 2); idx != 1 {
		t.Fatalf("used.idx %d after re-initialization, want 1", idx)
	}
}

// TestResetWaitsForHandle: a reset returns only after a running Handle has.
func TestResetWaitsForHandle(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	running := false
	dev := &testDevice{}
	dev.handle = func(i int, q *Queue) error {
		c, err := q.Pop(ReadThenWrite)
		if c == nil || err != nil {
			return err
		}
		mu.Lock()
		running = true
		mu.Unlock()
		close(entered)
		<-release
		mu.Lock()
		running = false
		mu.Unlock()
		return q.Push(c, 0)
	}
	d := newDriver(t, dev)
	d.start(features, 0)
	head, _ := d.chain(0, seg{data: []byte("x")}, seg{room: 1, write: true})
	d.publish(0, head)
	<-entered
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(release)
	}()
	d.w(regStatus, 0)
	mu.Lock()
	defer mu.Unlock()
	if running {
		t.Fatal("the reset returned while Handle ran")
	}
}

func TestQueueWritesOutsideSetUp(t *testing.T) {
	d := newDriver(t, &testDevice{})
	d.w(regQueueSel, 0)
	d.w(regQueueNum, 4) // before FEATURES_OK
	d.w(regQueueReady, 1)
	if d.r(regQueueReady) != 0 {
		t.Fatal("QueueReady set before FEATURES_OK")
	}
	d.start(features, 8)
	d.w(regQueueSel, 0)
	d.w(regQueueDescLow, 0x1230) // after DRIVER_OK
	d.w(regQueueReady, 0)
	d.tr.Quiesce()
	s, _ := d.tr.Save()
	if q := s.Queues[0]; q.Num != 8 || !q.Ready || q.Desc != ringArea {
		t.Fatalf("queue %+v changed after DRIVER_OK", q)
	}
}

func TestActivationFailures(t *testing.T) {
	const a = ringArea
	for _, c := range []struct {
		name              string
		size              uint16
		desc, avail, used uint64
	}{
		{"size 0", 0, a, a + 0x1000, a + 0x2000},
		{"size not a power of 2", 6, a, a + 0x1000, a + 0x2000},
		{"size over the max", 32, a, a + 0x1000, a + 0x2000},
		{"descriptor table misaligned", 8, a + 8, a + 0x1000, a + 0x2000},
		{"avail ring misaligned", 8, a, a + 0x1001, a + 0x2000},
		{"used ring misaligned", 8, a, a + 0x1000, a + 0x2002},
		{"descriptor table outside RAM", 8, a - 0x80, a + 0x1000, a + 0x2000},
		{"avail ring past the end of RAM", 8, a, ramBase + ramSize - 20, a + 0x2000},
		{"used ring past the end of RAM", 8, a, a + 0x1000, ramBase + ramSize - 68},
		{"used ring wrapping around", 8, a, a + 0x1000, ^uint64(0) &^ 3},
	} {
		d := newDriver(t, &testDevice{})
		if !d.negotiate(features) {
			t.Fatal("features refused")
		}
		d.setupQueue(0, c.size, c.desc, c.avail, c.used)
		d.w(regStatus, d.r(regStatus)|statusDriverOK)
		if s := d.r(regStatus); s&statusNeedsReset == 0 {
			t.Errorf("%s: status %#x, want DEVICE_NEEDS_RESET", c.name, s)
		}
		if isr := d.r(regInterruptStatus); isr != intConfig {
			t.Errorf("%s: interrupt status %#x, want a config change", c.name, isr)
		}
		d.w(regQueueNotify, 0)
		d.sync()
		if n, _ := d.dev.seen(); n != 0 {
			t.Errorf("%s: Handle ran %d times", c.name, n)
		}
	}
}

func TestHandleErrorNeedsReset(t *testing.T) {
	dev := &testDevice{}
	dev.handle = func(int, *Queue) error { return errors.New("backend gone") }
	d := newDriver(t, dev)
	d.start(features, 0) // start serves every queue once
	if s := d.r(regStatus); s&statusNeedsReset == 0 {
		t.Fatalf("status %#x, want DEVICE_NEEDS_RESET", s)
	}
	if isr := d.r(regInterruptStatus); isr != intConfig {
		t.Fatalf("interrupt status %#x, want a config change", isr)
	}
	if level, _ := d.irq.get(); !level {
		t.Fatal("no interrupt")
	}
	d.w(regQueueNotify, 0)
	d.sync()
	if n, _ := d.dev.seen(); n != 1 {
		t.Fatalf("Handle ran %d times, want once: a broken device is left alone", n)
	}
	// The driver gives up, with or without rewriting DEVICE_NEEDS_RESET.
	d.w(regStatus, statusAcknowledge|statusDriver|statusFeaturesOK|statusDriverOK|statusFailed)
	if s, want := d.r(regStatus), uint32(0xcf); s != want {
		t.Fatalf("status %#x after FAILED, want %#x", s, want)
	}
}

func TestConfig(t *testing.T) {
	cfg := []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99}
	d := newDriver(t, &testDevice{config: cfg})
	for _, c := range []struct {
		off  uint64
		size int
		want uint64
	}{
		{0, 1, 0x11}, {8, 1, 0x99}, {2, 2, 0x4433}, {0, 4, 0x44332211},
		{4, 4, 0x88776655}, // the upper half of a 64-bit field, as Linux reads it
		{0, 8, 0x8877665544332211}, {6, 4, 0}, {9, 1, 0},
	} {
		if got := d.tr.Read(regConfig+c.off, c.size); got != c.want {
			t.Errorf("config read at %d, size %d = %#x, want %#x", c.off, c.size, got, c.want)
		}
	}
	if err := d.tr.UpdateConfig(1, []byte{0xaa, 0xbb}); err != nil {
		t.Fatal(err)
	}
	if g := d.r(regConfigGeneration); g != 1 {
		t.Errorf("generation %d after an update, want 1", g)
	}
	if isr := d.r(regInterruptStatus); isr != 0 {
		t.Errorf("config interrupt %#x before DRIVER_OK", isr)
	}
	if got := d.tr.Read(regConfig, 4); got != 0x44bbaa11 {
		t.Errorf("config after the update %#x", got)
	}
	d.start(features, 0)
	if err := d.tr.UpdateConfig(8, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if isr := d.r(regInterruptStatus); isr != intConfig {
		t.Errorf("interrupt status %#x after a config update, want a config change", isr)
	}
	for _, bad := range []struct{ off, n int }{{-1, 1}, {9, 1}, {8, 2}, {10, 0}} {
		if err := d.tr.UpdateConfig(bad.off, make([]byte, bad.n)); err == nil {
			t.Errorf("UpdateConfig(%d, %d bytes) succeeded", bad.off, bad.n)
		}
	}
}

// TestNotifyStorm: a vCPU notifying without pause never waits for a busy
// device, and the notifications coalesce.
func TestNotifyStorm(t *testing.T) {
	var blocking atomic.Bool
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	dev := &testDevice{sizes: []uint16{8, 8}}
	dev.handle = func(int, *Queue) error {
		if blocking.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-gate
		}
		return nil
	}
	d := newDriver(t, dev)
	d.start(features, 0) // Handle runs once per queue
	blocking.Store(true)
	d.w(regQueueNotify, 0)
	<-entered // the device goroutine is stuck in Handle
	done := make(chan time.Duration)
	go func() {
		start := time.Now()
		for i := range 200000 {
			d.w(regQueueNotify, uint32(i%2))
		}
		done <- time.Since(start)
	}()
	select {
	case took := <-done:
		t.Logf("200000 notifications in %v while Handle was busy", took)
	case <-time.After(10 * time.Second):
		t.Fatal("notifications blocked behind a busy Handle")
	}
	close(gate)
	d.sync()
	// Two at activation, the stuck one, then one for each queue.
	if calls, _ := d.dev.seen(); calls != 5 {
		t.Fatalf("Handle ran %d times, want 5", calls)
	}
}

// TestBudget: a queue the guest keeps full does not keep the device
// goroutine in Handle: each call takes at most a queue's worth, and Quiesce
// gets in between.
func TestBudget(t *testing.T) {
	var d *driver
	dev := &testDevice{sizes: []uint16{4}}
	popped := 0
	dev.handle = func(i int, q *Queue) error {
		for {
			c, err := q.Pop(ReadThenWrite)
			if c == nil || err != nil {
				return err
			}
			popped++
			if err := q.Push(c, 0); err != nil {
				return err
			}
			// Another vCPU makes the chain available again at once.
			r := d.rings[0]
			b, _ := d.ram.Slice(r.avail+4+2*uint64(r.availIdx%r.size), 2)
			b[0], b[1] = byte(c.Head), 0
			r.availIdx++
			d.set16(r.avail+2, r.availIdx)
		}
	}
	d = newDriver(t, dev)
	d.start(features, 0)
	d.tr.Quiesce()
	head, _ := d.chain(0, seg{data: []byte("x")}, seg{room: 1, write: true})
	d.publish(0, head)
	d.tr.Unquiesce()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.tr.Quiesce()
		n := popped
		d.tr.Unquiesce()
		if n >= 40 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d chains served", n)
		}
		time.Sleep(time.Millisecond)
	}
	d.tr.Quiesce()
	calls, _ := d.dev.seen()
	if popped > 4*calls {
		t.Fatalf("%d chains in %d Handle calls: more than 4 per call", popped, calls)
	}
}

// stateEqual compares states, nil and empty Config alike.
func stateEqual(a, b State) bool {
	return bytes.Equal(a.Config, b.Config) && slices.Equal(a.Queues, b.Queues) &&
		a.DeviceID == b.DeviceID && a.Status == b.Status && a.DeviceFeaturesSel == b.DeviceFeaturesSel &&
		a.DriverFeaturesSel == b.DriverFeaturesSel && a.DriverFeatures == b.DriverFeatures &&
		a.QueueSel == b.QueueSel && a.InterruptStatus == b.InterruptStatus && a.ConfigGeneration == b.ConfigGeneration
}
