package virtio

import (
	"encoding/binary"
	"fmt"

	"github.com/squibvm/squib/memory"
)

// MaxQueueSize is the largest split queue (§2.7).
const MaxQueueSize = 32768

// Ring flags (§2.7.6, §2.7.8).
const availNoInterrupt = 1

// Queue is one split virtqueue. The device's Handle uses it, on the device
// goroutine, to take the chains the driver made available (Pop) and give
// them back (Push).
//
// Its fields have two owners. The driver's settings are written by vCPUs
// through the transport registers, under Transport.mu, only while DRIVER_OK
// is clear. The device side is set up when the transport activates the
// queue (holding both Transport.work and Transport.mu) and used afterwards
// only under Transport.work, by the device goroutine. Reset, Save and
// Restore hold both locks.
type Queue struct {
	ram *memory.RAM
	log *OnceLog
	max uint16 // QueueNumMax

	// The driver's settings.
	num               uint32 // QueueNum, checked at activation
	ready             bool
	desc, avail, used uint64

	// The device side.
	size                uint16 // num, once checked
	features            uint64 // accepted by the driver
	eventIdx, indirect  bool   // VIRTIO_F_EVENT_IDX and VIRTIO_F_INDIRECT_DESC negotiated
	nextAvail, nextUsed uint16 // free-running indices of the next avail and used ring entries
	availIdx            uint16 // avail.idx as last read
	signalled           uint16 // nextUsed when the transport last decided whether to interrupt
	budget              int    // chains Pop may still take in this Handle call
	more                bool   // Pop stopped at the budget: run Handle again
}

// reset returns the queue to its state after a device reset (§4.2.3.1).
func (q *Queue) reset() {
	*q = Queue{ram: q.ram, log: q.log, max: q.max, num: uint32(q.max)}
}

// activate checks the driver's settings against guest RAM (§2.7: size a
// power of two no larger than QueueNumMax; alignments 16, 2 and 4; the
// descriptor table, avail ring and used ring, event fields included, inside
// RAM) and prepares the device side for the negotiated features.
func (q *Queue) activate(features uint64) error {
	n := uint64(q.num)
	switch {
	case n == 0 || n&(n-1) != 0 || n > uint64(q.max):
		return fmt.Errorf("size %d is not a power of two from 1 to %d", n, q.max)
	case q.desc%16 != 0 || q.avail%2 != 0 || q.used%4 != 0:
		return fmt.Errorf("rings at %#x, %#x, %#x are not aligned to 16, 2 and 4 bytes", q.desc, q.avail, q.used)
	case !q.ram.Contains(q.desc, descSize*n):
		return fmt.Errorf("descriptor table [%#x, +%#x) is not inside guest RAM", q.desc, descSize*n)
	case !q.ram.Contains(q.avail, 6+2*n):
		return fmt.Errorf("avail ring [%#x, +%#x) is not inside guest RAM", q.avail, 6+2*n)
	case !q.ram.Contains(q.used, 6+8*n):
		return fmt.Errorf("used ring [%#x, +%#x) is not inside guest RAM", q.used, 6+8*n)
	}
	q.size, q.features = uint16(n), features
	q.eventIdx = features&featEventIdx != 0
	q.indirect = features&featIndirectDesc != 0
	q.availIdx, q.signalled = q.nextAvail, q.nextUsed
	return nil
}

// Features returns the feature bits the driver accepted, for a device type
// whose work depends on them (a network device's offloads).
func (q *Queue) Features() uint64 { return q.features }

// Event fields of EVENT_IDX, after each ring's entries.
func (q *Queue) usedEvent() uint64  { return q.avail + 4 + 2*uint64(q.size) }
func (q *Queue) availEvent() uint64 { return q.used + 4 + 8*uint64(q.size) }

// Pop returns the next chain the driver made available, checked against l
// and guest RAM, or nil when there is none. A malformed chain is not
// returned: Pop gives it back to the driver at once with a used length of 0
// (what Firecracker's and Cloud Hypervisor's block devices do with a
// malformed request) and goes on to the next. An error means the ring itself is corrupt (avail.idx more than a
// queue ahead, a head index beyond the table); Handle returns it, and the
// transport sets DEVICE_NEEDS_RESET.
//
// One Handle call takes at most a queue's worth of chains: Pop then
// returns nil, and the transport calls Handle again after serving the other
// queues, so a guest cannot keep the device goroutine from pausing or
// resetting.
//
// With EVENT_IDX, a Pop that finds the ring empty asks the driver to notify
// the next buffer (avail_event), then looks again, so a buffer made
// available meanwhile is not missed (§2.7.10). A Handle that stops before
// Pop returns nil must be run again by the device itself.
func (q *Queue) Pop(l Layout) (*Chain, error) {
	for q.budget > 0 {
		if q.nextAvail == q.availIdx {
			if err := q.loadAvail(); err != nil {
				return nil, err
			}
			if q.nextAvail == q.availIdx {
				return nil, nil
			}
		}
		// Read after the acquire load of avail.idx: the entry and its
		// descriptors are the driver's, published before it.
		head, err := q.read16(q.avail + 4 + 2*uint64(q.nextAvail%q.size))
		if err != nil {
			return nil, err
		}
		q.nextAvail++
		q.budget--
		if head >= q.size {
			return nil, fmt.Errorf("avail ring entry %d names descriptor %d of a %d-entry table", q.nextAvail-1, head, q.size)
		}
		c, err := q.walk(head, l)
		if err == nil {
			return c, nil
		}
		q.log.Warn(err.Error(), "virtio: malformed descriptor chain returned unused to the driver", "reason", err, "head", head)
		if err := q.push(head, 0); err != nil {
			return nil, err
		}
	}
	q.more = true
	return nil, nil
}

// loadAvail reads avail.idx. With EVENT_IDX and nothing new, it first
// publishes avail_event = nextAvail and reads avail.idx again: the store
// and load are sequentially consistent, the full barrier of §2.7.10.
func (q *Queue) loadAvail() error {
	idx, err := q.ram.AtomicLoad16(q.avail + 2)
	if err == nil && idx == q.nextAvail && q.eventIdx {
		if err = q.ram.AtomicStore16(q.availEvent(), q.nextAvail); err == nil {
			idx, err = q.ram.AtomicLoad16(q.avail + 2)
		}
	}
	if err != nil {
		return err
	}
	if ahead := idx - q.nextAvail; ahead > q.size {
		return fmt.Errorf("avail.idx %d is %d entries ahead of the device, more than the queue's %d", idx, ahead, q.size)
	}
	q.availIdx = idx
	return nil
}

// Push gives c back to the driver with written bytes of its writable
// buffers filled, and publishes it (used.idx). The transport interrupts the
// driver, if it wants, when Handle returns. A device pushes every chain it
// popped before its Handle returns, so a quiesced device has none in
// flight.
func (q *Queue) Push(c *Chain, written uint32) error {
	switch {
	case c.pushed:
		return fmt.Errorf("chain %d pushed twice", c.Head)
	case uint64(written) > c.room:
		return fmt.Errorf("chain %d: %d bytes written into %d bytes of writable buffers", c.Head, written, c.room)
	}
	c.pushed = true
	return q.push(c.Head, written)
}

// push writes the used element {head, written} and then, with release
// ordering, the used index that publishes it (§2.7.8.2).
func (q *Queue) push(head uint16, written uint32) error {
	e, err := q.ram.Mutable(q.used+4+8*uint64(q.nextUsed%q.size), 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(e, uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	q.nextUsed++
	return q.ram.AtomicStore16(q.used+2, q.nextUsed)
}

// AvailIdx returns avail.idx: the index the driver's next available chain
// will have.
func (q *Queue) AvailIdx() (uint16, error) {
	return q.ram.AtomicLoad16(q.avail + 2)
}

// NotifyPast asks the driver to notify the queue once avail.idx moves
// past idx, even while chains it made available are still unused (Pop asks
// only once it finds none), then reports whether avail.idx has already
// moved. With EVENT_IDX it publishes avail_event = idx and then loads
// avail.idx, the store and load sequentially consistent (§2.7.10), so a
// chain made available meanwhile is either seen or notified; without, the
// driver notifies every chain. A device that waits for the driver's next
// chain without using the ones it has (vsock's event queue after a
// TRANSPORT_RESET) calls it with an AvailIdx from before.
func (q *Queue) NotifyPast(idx uint16) (bool, error) {
	if q.eventIdx {
		if err := q.ram.AtomicStore16(q.availEvent(), idx); err != nil {
			return false, err
		}
	}
	now, err := q.AvailIdx()
	return now != idx, err
}

// interrupt reports whether the driver wants an interrupt for the chains
// pushed since the last call: with EVENT_IDX, if used.idx moved past
// used_event (§2.7.10); without, unless avail.flags has NO_INTERRUPT
// (§2.7.7). used_event and flags are read after used.idx was published,
// with a sequentially consistent load: the barrier that keeps the driver
// from waiting on an interrupt that is never sent.
func (q *Queue) interrupt() (bool, error) {
	old := q.signalled
	if old == q.nextUsed {
		return false, nil
	}
	q.signalled = q.nextUsed
	if q.eventIdx {
		ev, err := q.ram.AtomicLoad16(q.usedEvent())
		return err == nil && needEvent(ev, q.nextUsed, old), err
	}
	flags, err := q.ram.AtomicLoad16(q.avail)
	return err == nil && flags&availNoInterrupt == 0, err
}

// needEvent reports whether moving an index from old to new crosses event:
// vring_need_event of the spec (§2.7.10) and Linux.
func needEvent(event, new, old uint16) bool {
	return new-event-1 < new-old
}

// read16 reads a ring entry, which needs no atomicity: the driver wrote it
// before publishing the index that covers it.
func (q *Queue) read16(gpa uint64) (uint16, error) {
	b, err := q.ram.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}
