package virtio

import (
	"errors"
	"log/slog"
	"slices"
	"testing"

	"github.com/squibvm/squib/memory"
)

// newQueue is a queue of the given size over ram, outside any transport,
// activated with its rings at desc, avail and used.
func newQueue(ram *memory.RAM, size uint16, desc, avail, used uint64, features uint64) (*Queue, error) {
	q := &Queue{ram: ram, log: &OnceLog{Log: slog.New(slog.DiscardHandler)}, max: size,
		num: uint32(size), ready: true, desc: desc, avail: avail, used: used}
	return q, q.activate(features)
}

// TestMalformedChains: each malformed chain is given back unused, the
// device never sees it, and the queue goes on with the next chain.
func TestMalformedChains(t *testing.T) {
	const end = ramBase + ramSize
	buf := uint64(bufArea)
	noIndirect := uint64(featVersion1 | featEventIdx)
	for _, c := range []struct {
		name     string
		layout   Layout
		features uint64
		build    func(d *driver) // descriptors 0 to 3; the chain's head is 0
		want     error
	}{
		{"buffer past the end of RAM", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, end, 1, 0, 0)
		}, errBufferRange},
		{"buffer below RAM", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, ramBase-16, 16, 0, 0)
		}, errBufferRange},
		{"buffer across the end of RAM", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, end-4, 8, 0, 0)
		}, errBufferRange},
		{"buffer address plus length wraps around", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, ^uint64(3), 8, 0, 0)
		}, errBufferRange},
		{"second buffer outside RAM", ReadThenWrite, features, func(d *driver) {
			d.putDesc(0, 0, buf, 8, descNext, 1)
			d.putDesc(0, 1, 0x1000, 8, descWrite, 0)
		}, errBufferRange},
		{"next beyond the table", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 8, descNext, 8)
		}, errDescIndex},
		{"a loop", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 8, descNext, 1)
			d.putDesc(0, 1, buf, 8, descNext, 0)
		}, errChainLoop},
		{"a descriptor pointing at itself", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 8, descNext, 0)
		}, errChainLoop},
		{"indirect without the feature", ReadOnly, noIndirect, func(d *driver) {
			d.putDesc(0, 0, buf, 16, descIndirect, 0)
			d.putTableDesc(buf, 0, buf+0x100, 8, 0, 0)
		}, errIndirectFeature},
		{"nested indirect table", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 16, descIndirect, 0)
			d.putTableDesc(buf, 0, buf+0x100, 16, descIndirect, 0)
		}, errIndirectNested},
		{"indirect with NEXT", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 16, descIndirect|descNext, 1)
			d.putDesc(0, 1, buf+0x100, 8, 0, 0)
			d.putTableDesc(buf, 0, buf+0x100, 8, 0, 0)
		}, errIndirectNext},
		{"indirect table of length 0", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 0, descIndirect, 0)
		}, errIndirectLen},
		{"indirect table length not a multiple of 16", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 24, descIndirect, 0)
			d.putTableDesc(buf, 0, buf+0x100, 8, 0, 0)
		}, errIndirectLen},
		{"indirect table over 65536 entries", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, (maxIndirect+1)*descSize, descIndirect, 0)
		}, errIndirectLen},
		{"indirect table outside RAM", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, end-16, 32, descIndirect, 0)
		}, errIndirectRange},
		{"loop in an indirect table", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 32, descIndirect, 0)
			d.putTableDesc(buf, 0, buf+0x100, 8, descNext, 1)
			d.putTableDesc(buf, 1, buf+0x100, 8, descNext, 0)
		}, errChainLoop},
		{"next beyond an indirect table", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 32, descIndirect, 0)
			d.putTableDesc(buf, 0, buf+0x100, 8, descNext, 2)
		}, errDescIndex},
		{"buffer of an indirect table outside RAM", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 16, descIndirect, 0)
			d.putTableDesc(buf, 0, end, 8, 0, 0)
		}, errBufferRange},
		{"writable buffer where the device only reads", ReadOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 8, descNext, 1)
			d.putDesc(0, 1, buf+8, 8, descWrite, 0)
		}, errWritable},
		{"readable buffer where the device only writes", WriteOnly, features, func(d *driver) {
			d.putDesc(0, 0, buf, 8, descWrite|descNext, 1)
			d.putDesc(0, 1, buf+8, 8, 0, 0)
		}, errReadable},
		{"readable after writable", ReadThenWrite, features, func(d *driver) {
			d.putDesc(0, 0, buf, 8, descNext, 1)
			d.putDesc(0, 1, buf+8, 8, descWrite|descNext, 2)
			d.putDesc(0, 2, buf+16, 8, 0, 0)
		}, errReadAfterWrite},
		{"readable after writable, across an indirect table", ReadThenWrite, features, func(d *driver) {
			d.putDesc(0, 0, buf+0x100, 8, descWrite|descNext, 1)
			d.putDesc(0, 1, buf, 16, descIndirect, 0)
			d.putTableDesc(buf, 0, buf+0x200, 8, 0, 0)
		}, errReadAfterWrite},
		{"request without a writable buffer", ReadThenWrite, features, func(d *driver) {
			d.putDesc(0, 0, buf, 8, 0, 0)
		}, errNoWritable},
		{"request without a readable buffer", ReadThenWrite, features, func(d *driver) {
			d.putDesc(0, 0, buf, 8, descWrite, 0)
		}, errNoReadable},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDriver(t, &testDevice{sizes: []uint16{8}, layout: c.layout})
			d.start(c.features, 0)
			c.build(d)
			d.rings[0].free = 4
			var good []seg
			if c.layout != WriteOnly {
				good = append(good, seg{data: []byte("ok")})
			}
			if c.layout != ReadOnly {
				good = append(good, seg{room: 2, write: true})
			}
			next, _ := d.chain(0, good...)
			d.publish(0, 0, next)
			d.sync()

			wantLen := uint32(2)
			if c.layout != ReadThenWrite {
				wantLen = 0 // nothing to echo, or nothing to echo into
			}
			if u := d.takeUsed(0); !slices.Equal(u, []used{{0, 0}, {uint32(next), wantLen}}) {
				t.Errorf("used %v, want {0 0} {%d %d}", u, next, wantLen)
			}
			if _, chains := d.dev.seen(); len(chains) != 1 || chains[0].Head != next {
				t.Errorf("the device saw chains %+v, want only %d", chains, next)
			}
			if s := d.r(regStatus); s&statusNeedsReset != 0 {
				t.Errorf("status %#x: a malformed chain broke the device", s)
			}
			if isr := d.r(regInterruptStatus); isr != intUsedBuffer {
				t.Errorf("interrupt status %#x, want used buffer", isr)
			}
			d.tr.Quiesce()
			if _, err := d.tr.queues[0].walk(0, c.layout); !errors.Is(err, c.want) {
				t.Errorf("walk: %v, want %v", err, c.want)
			}
		})
	}
}

// TestChainTotalLength: the buffers of a chain may add up to 2^32-1 bytes,
// not more (the used element's length is 32 bits).
func TestChainTotalLength(t *testing.T) {
	const base, size = 0x8000_0000, 256 << 20
	ram, err := memory.New(base, size) // untouched pages cost nothing
	if err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	q, err := newQueue(ram, 32, base, base+0x1000, base+0x2000, features)
	if err != nil {
		t.Fatal(err)
	}
	const bufLen = 0x0fff_0000 // 16 of them: 0xfff0_0000 bytes; 17: over 2^32
	b, _ := ram.Slice(base, 32*descSize)
	for n, want := range map[int]error{16: nil, 17: errTotalLen} {
		for i := range n {
			flags := uint16(descWrite | descNext)
			if i == n-1 {
				flags = descWrite
			}
			putDesc(b, i, base+0x10000, bufLen, flags, uint16(i+1))
		}
		c, err := q.walk(0, WriteOnly)
		if !errors.Is(err, want) {
			t.Errorf("%d buffers of %#x bytes: %v, want %v", n, bufLen, err, want)
		}
		if err == nil && c.room != uint64(n)*bufLen {
			t.Errorf("%d buffers: room %#x", n, c.room)
		}
	}
}

// TestCorruptRing: a ring the device cannot trust fails the device.
func TestCorruptRing(t *testing.T) {
	for _, c := range []struct {
		name  string
		build func(d *driver)
	}{
		{"avail.idx more than a queue ahead", func(d *driver) {
			d.set16(d.rings[0].avail+2, 9)
		}},
		{"head beyond the table", func(d *driver) {
			d.set16(d.rings[0].avail+4, 8)
			d.set16(d.rings[0].avail+2, 1)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDriver(t, &testDevice{sizes: []uint16{8}})
			d.start(features, 0)
			c.build(d)
			d.w(regQueueNotify, 0)
			d.sync()
			if s := d.r(regStatus); s&statusNeedsReset == 0 {
				t.Errorf("status %#x, want DEVICE_NEEDS_RESET", s)
			}
			if isr := d.r(regInterruptStatus); isr != intConfig {
				t.Errorf("interrupt status %#x, want a config change", isr)
			}
			if idx := d.get16(d.rings[0].used + 2); idx != 0 {
				t.Errorf("used.idx %d, want untouched", idx)
			}
			// A reset and a new start bring it back.
			d.start(features, 0)
			head, _ := d.chain(0, seg{data: []byte("a")}, seg{room: 1, write: true})
			d.publish(0, head)
			d.sync()
			if u := d.takeUsed(0); len(u) != 1 {
				t.Errorf("after a reset: used %v", u)
			}
		})
	}
}

func TestEventIdx(t *testing.T) {
	d := newDriver(t, &testDevice{sizes: []uint16{8}})
	d.start(features, 0)
	r := d.rings[0]
	availEvent, usedEvent := r.used+4+8*8, r.avail+4+2*8

	// The device drained the ring: it asks for a kick at the next entry.
	d.set16(usedEvent, 10) // no interrupt wanted before used.idx passes 10
	var heads []uint16
	for range 3 {
		h, _ := d.chain(0, seg{data: []byte("a")}, seg{room: 1, write: true})
		heads = append(heads, h)
	}
	d.publish(0, heads...)
	d.sync()
	if ev := d.get16(availEvent); ev != 3 {
		t.Errorf("avail_event %d after 3 chains, want 3", ev)
	}
	if len(d.takeUsed(0)) != 3 {
		t.Fatal("chains not served")
	}
	if isr := d.r(regInterruptStatus); isr != 0 {
		t.Errorf("interrupt status %#x with used_event ahead", isr)
	}

	// used_event 3: the driver wants an interrupt once used.idx passes 3.
	d.set16(usedEvent, 3)
	h, _ := d.chain(0, seg{data: []byte("b")}, seg{room: 1, write: true})
	d.publish(0, h) // used.idx 3 -> 4
	d.sync()
	if isr := d.ack(); isr != intUsedBuffer {
		t.Errorf("interrupt status %#x crossing used_event, want used buffer", isr)
	}
	h, _ = d.chain(0, seg{data: []byte("c")}, seg{room: 1, write: true})
	d.publish(0, h) // used.idx 4 -> 5: used_event 3 was already passed
	d.sync()
	if isr := d.r(regInterruptStatus); isr != 0 {
		t.Errorf("interrupt status %#x after used_event was passed", isr)
	}
	if ev := d.get16(availEvent); ev != 5 {
		t.Errorf("avail_event %d, want 5", ev)
	}
}

func TestNoInterruptFlag(t *testing.T) {
	d := newDriver(t, &testDevice{sizes: []uint16{8}})
	d.start(featVersion1, 0)
	r := d.rings[0]
	d.set16(r.used+4+8*8, 0xabcd)
	d.set16(r.avail, availNoInterrupt)
	h, _ := d.chain(0, seg{data: []byte("a")}, seg{room: 1, write: true})
	d.publish(0, h)
	d.sync()
	if isr := d.r(regInterruptStatus); isr != 0 {
		t.Errorf("interrupt status %#x despite NO_INTERRUPT", isr)
	}
	d.set16(r.avail, 0)
	h, _ = d.chain(0, seg{data: []byte("b")}, seg{room: 1, write: true})
	d.publish(0, h)
	d.sync()
	if isr := d.r(regInterruptStatus); isr != intUsedBuffer {
		t.Errorf("interrupt status %#x, want used buffer", isr)
	}
	if ev := d.get16(r.used + 4 + 8*8); ev != 0xabcd {
		t.Errorf("avail_event written (%#x) without EVENT_IDX", ev)
	}
	if len(d.takeUsed(0)) != 2 {
		t.Error("chains not served")
	}
}

// TestPushChecks: a device that pushes a chain twice, or claims more bytes
// than the chain has room for, fails instead of corrupting the used ring.
func TestPushChecks(t *testing.T) {
	for name, push := range map[string]func(q *Queue, c *Chain) error{
		"twice": func(q *Queue, c *Chain) error {
			if err := q.Push(c, 1); err != nil {
				return err
			}
			return q.Push(c, 1)
		},
		"too long": func(q *Queue, c *Chain) error { return q.Push(c, 2) },
	} {
		dev := &testDevice{sizes: []uint16{8}}
		dev.handle = func(i int, q *Queue) error {
			for {
				c, err := q.Pop(ReadThenWrite)
				if c == nil || err != nil {
					return err
				}
				if err := push(q, c); err != nil {
					return err
				}
			}
		}
		d := newDriver(t, dev)
		d.start(features, 0)
		h, _ := d.chain(0, seg{data: []byte("a")}, seg{room: 1, write: true})
		d.publish(0, h)
		d.sync()
		if s := d.r(regStatus); s&statusNeedsReset == 0 {
			t.Errorf("%s: status %#x, want DEVICE_NEEDS_RESET", name, s)
		}
		if u := d.takeUsed(0); len(u) > 1 || len(u) == 1 && u[0].len != 1 {
			t.Errorf("%s: used %v", name, u)
		}
	}
}

func TestNeedEvent(t *testing.T) {
	for _, c := range []struct {
		event, new, old uint16
		want            bool
	}{
		{0, 1, 0, true}, {1, 1, 0, false}, {0, 5, 1, false}, {1, 5, 1, true}, {5, 5, 1, false}, {4, 5, 1, true},
		{0xffff, 0, 0xfffe, true}, {0xfffe, 2, 0xfffd, true}, {10, 2, 0xfffd, false},
	} {
		if got := needEvent(c.event, c.new, c.old); got != c.want {
			t.Errorf("needEvent(%d, %d, %d) = %v, want %v", c.event, c.new, c.old, got, c.want)
		}
	}
}

// TestNotifyPast: with EVENT_IDX, NotifyPast publishes avail_event at the
// index given, so the driver's next chain past it is notified although
// earlier ones wait unused, and it reports whether avail.idx has already
// moved past that index; without EVENT_IDX it leaves avail_event alone.
func TestNotifyPast(t *testing.T) {
	for _, feats := range []uint64{featEventIdx, 0} {
		const base, desc, avail, used = 0x1000, 0x1000, 0x2000, 0x3000
		ram := memory.Adopt(base, make([]byte, 0x4000), func([]byte) error { return nil })
		q, err := newQueue(ram, 8, desc, avail, used, feats)
		if err != nil {
			t.Fatal(err)
		}
		availEvent := uint64(used + 4 + 8*8)
		ram.AtomicStore16(avail+2, 3) // three chains available, none used
		idx, err := q.AvailIdx()
		if err != nil || idx != 3 {
			t.Fatalf("AvailIdx %d, %v; want 3", idx, err)
		}
		if moved, err := q.NotifyPast(idx); moved || err != nil {
			t.Errorf("features %#x: NotifyPast(3) with avail.idx 3: %v, %v", feats, moved, err)
		}
		if ev, _ := ram.AtomicLoad16(availEvent); (feats != 0) != (ev == 3) {
			t.Errorf("features %#x: avail_event %d", feats, ev)
		}
		ram.AtomicStore16(avail+2, 4)
		if moved, err := q.NotifyPast(idx); !moved || err != nil {
			t.Errorf("features %#x: NotifyPast(3) with avail.idx 4: %v, %v", feats, moved, err)
		}
	}
}

// TestGather: Gather copies the readable buffers in order and reports more
// only when a buffer holds bytes beyond b, not for empty buffers after the
// bytes that filled it.
func TestGather(t *testing.T) {
	ram, err := memory.New(0x4000_0000, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	if err := ram.Write(0x4000_0000, []byte("abcdef")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		bufs []Buffer
		size int
		want string
		more bool
	}{
		{[]Buffer{{0x4000_0000, 3}, {0x4000_0003, 3}}, 6, "abcdef", false},
		{[]Buffer{{0x4000_0000, 3}, {0x4000_0003, 3}, {0x4000_0006, 0}}, 6, "abcdef", false},
		{[]Buffer{{0x4000_0000, 3}, {0x4000_0003, 3}}, 5, "abcde", true},
		{[]Buffer{{0x4000_0000, 3}, {0x4000_0003, 3}}, 3, "abc", true},
		{[]Buffer{{0x4000_0000, 0}, {0x4000_0000, 2}}, 4, "ab", false},
	} {
		b := make([]byte, c.size)
		n, more := (&Chain{Readable: c.bufs}).Gather(ram, b)
		if string(b[:n]) != c.want || more != c.more {
			t.Errorf("Gather %v into %d bytes: %q, more %v; want %q, more %v", c.bufs, c.size, b[:n], more, c.want, c.more)
		}
	}
}
