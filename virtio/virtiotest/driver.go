// Package virtiotest plays a guest's virtio-mmio driver over a transport,
// for the device packages' tests: set-up in the driver's order, then chains
// made available on the device's queues, one at a time and waited for
// (Give), or posted and collected later (Post, Used).
package virtiotest

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// Queue i's rings in guest RAM, from RAM's base plus i*QueueSpan:
// descriptor table, avail ring at +0x1000, used ring at +0x2000.
// QueueSize entries each.
const (
	availOff  = 0x1000
	usedOff   = 0x2000
	QueueSpan = 0x4000
	QueueSize = 256
)

// Driver is the guest's driver. Its own writes into RAM bypass the write
// log, but for avail.idx, which it stores with the accessor the device
// reads it with. It is not safe for concurrent use.
type Driver struct {
	T   *testing.T
	Mem []byte // guest RAM, from RAM.Base()
	RAM *memory.RAM
	Tr  *virtio.Transport
	// Notify, if set, notifies queue 0 instead of the QueueNotify write
	// through Tr (a hypervisor's doorbell).
	Notify func()
	queues []queue
}

// queue is the driver's side of one queue.
type queue struct {
	availIdx, nextDesc uint16
	usedSeen           uint16 // used entries collected
}

// Buf is one buffer of a chain: Write is device-writable.
type Buf struct {
	Addr  uint64
	N     uint32
	Write bool
}

// Used is a chain the device gave back: the head descriptor's index and
// the length it wrote.
type Used struct {
	Head uint16
	Len  uint32
}

// Start checks the device's magic and ID, then sets it up as Linux does
// (virtio 1.2 §3.1.1, §4.2.3.2): the driver accepts VERSION_1 and the
// device's type-specific features (bits 0-23), and queue 0 of QueueSize
// at the start of RAM.
func Start(t *testing.T, tr *virtio.Transport, ram *memory.RAM, mem []byte, deviceID uint32) *Driver {
	t.Helper()
	return StartQueues(t, tr, ram, mem, deviceID, 1)
}

// StartQueues is Start for a device with n queues, queue i's rings at
// i*QueueSpan from RAM's base.
func StartQueues(t *testing.T, tr *virtio.Transport, ram *memory.RAM, mem []byte, deviceID uint32, n int) *Driver {
	t.Helper()
	d := &Driver{T: t, Mem: mem, RAM: ram, Tr: tr, queues: make([]queue, n)}
	if d.R(0x000) != 0x74726976 || d.R(0x008) != deviceID {
		t.Fatalf("magic %#x, device ID %d; want virt, %d", d.R(0x000), d.R(0x008), deviceID)
	}
	for _, w := range [][2]uint64{
		{0x070, 0}, {0x070, 1}, {0x070, 3}, // reset, ACKNOWLEDGE, DRIVER
		{0x024, 1}, {0x020, 1}, {0x024, 0}, {0x020, uint64(d.R(0x010) & (1<<24 - 1))}, // DriverFeatures
		{0x070, 11}, // FEATURES_OK
	} {
		tr.Write(w[0], 4, w[1])
	}
	for i := range n {
		rings := ram.Base() + uint64(i)*QueueSpan
		for _, w := range [][2]uint64{
			{0x030, uint64(i)}, {0x038, QueueSize},
			{0x080, rings}, {0x090, rings + availOff}, {0x0a0, rings + usedOff},
			{0x044, 1}, // QueueReady
		} {
			tr.Write(w[0], 4, w[1])
		}
	}
	tr.Write(0x070, 4, 15) // DRIVER_OK
	if s := d.R(0x070); s != 15 {
		t.Fatalf("status %#x after set-up, want 15", s)
	}
	return d
}

// Fork returns a driver that goes on from d's state over tr, ram and mem:
// those of a machine restored from a snapshot taken in that state.
func (d *Driver) Fork(tr *virtio.Transport, ram *memory.RAM, mem []byte) *Driver {
	f := *d
	f.Tr, f.RAM, f.Mem, f.Notify = tr, ram, mem, nil
	f.queues = append([]queue(nil), d.queues...)
	return &f
}

// R reads a 32-bit register.
func (d *Driver) R(off uint64) uint32 { return uint32(d.Tr.Read(off, 4)) }

// Give makes a chain of bufs available on queue 0, notifies the device and
// waits until it has given the chain back; it returns the used length.
func (d *Driver) Give(bufs ...Buf) uint32 {
	d.T.Helper()
	head := d.Post(0, bufs...)
	u := d.Wait(0, 1, 5*time.Second)
	if len(u) != 1 {
		d.T.Fatalf("chain %d not given back", head)
	}
	if u[0].Head != head {
		d.T.Fatalf("used element names chain %d, want %d", u[0].Head, head)
	}
	return u[0].Len
}

// Post makes a chain of bufs available on queue q and notifies the
// device; it returns the chain's head.
func (d *Driver) Post(q int, bufs ...Buf) uint16 {
	head := d.Add(q, bufs...)
	d.Kick(q)
	return head
}

// Add makes a chain of bufs available on queue q without notifying the
// device; it returns the chain's head.
func (d *Driver) Add(q int, bufs ...Buf) uint16 {
	d.T.Helper()
	le := binary.LittleEndian
	s := &d.queues[q]
	base := uint64(q) * QueueSpan
	head := s.nextDesc % QueueSize
	for i, b := range bufs {
		desc := d.Mem[base+uint64(s.nextDesc%QueueSize)*16:]
		s.nextDesc++
		var flags uint16
		if b.Write {
			flags = 2
		}
		if i < len(bufs)-1 {
			flags |= 1 // NEXT
		}
		le.PutUint64(desc, b.Addr)
		le.PutUint32(desc[8:], b.N)
		le.PutUint16(desc[12:], flags)
		le.PutUint16(desc[14:], s.nextDesc%QueueSize)
	}
	le.PutUint16(d.Mem[base+availOff+4+2*uint64(s.availIdx%QueueSize):], head)
	s.availIdx++
	if err := d.RAM.AtomicStore16(d.RAM.Base()+base+availOff+2, s.availIdx); err != nil {
		d.T.Fatal(err)
	}
	return head
}

// Kick notifies queue q.
func (d *Driver) Kick(q int) {
	if q == 0 && d.Notify != nil {
		d.Notify()
	} else {
		d.Tr.Write(virtio.NotifyOffset, 4, uint64(q))
	}
}

// Used returns the chains of queue q the device gave back since the last
// call, in order.
func (d *Driver) Used(q int) []Used {
	d.T.Helper()
	s := &d.queues[q]
	base := uint64(q) * QueueSpan
	idx, err := d.RAM.AtomicLoad16(d.RAM.Base() + base + usedOff + 2)
	if err != nil {
		d.T.Fatal(err)
	}
	var out []Used
	le := binary.LittleEndian
	for ; s.usedSeen != idx; s.usedSeen++ {
		e := d.Mem[base+usedOff+4+8*uint64(s.usedSeen%QueueSize):]
		out = append(out, Used{Head: uint16(le.Uint32(e)), Len: le.Uint32(e[4:])})
	}
	return out
}

// Wait collects the chains of queue q the device gives back until it has
// n of them or timeout passes.
func (d *Driver) Wait(q, n int, timeout time.Duration) []Used {
	d.T.Helper()
	var out []Used
	for i, deadline := 0, time.Now().Add(timeout); ; i++ {
		out = append(out, d.Used(q)...)
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		if i < 1000 { // the device is usually quick: yield before sleeping
			runtime.Gosched()
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}

// Bytes returns guest RAM [addr, addr+n).
func (d *Driver) Bytes(addr uint64, n uint32) []byte {
	off := addr - d.RAM.Base()
	return d.Mem[off : off+uint64(n)]
}
