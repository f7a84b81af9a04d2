// Package virtiotest plays a guest's virtio-mmio driver over a transport,
// for the device packages' tests: set-up in the driver's order, then chains
// made available one at a time on queue 0.
package virtiotest

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// Queue 0's rings in guest RAM, from RAM's base: descriptor table, avail
// ring at +0x1000, used ring at +0x2000. QueueSize entries.
const (
	availOff  = 0x1000
	usedOff   = 0x2000
	QueueSize = 256
)

// Driver is the guest's driver. Its own writes into RAM bypass the write
// log, but for avail.idx, which it stores with the accessor the device
// reads it with.
type Driver struct {
	T   *testing.T
	Mem []byte // guest RAM, from RAM.Base()
	RAM *memory.RAM
	Tr  *virtio.Transport
	// Notify, if set, notifies queue 0 instead of the QueueNotify write
	// through Tr (a hypervisor's doorbell).
	Notify   func()
	availIdx uint16
	nextDesc uint16
}

// Buf is one buffer of a chain: Write is device-writable.
type Buf struct {
	Addr  uint64
	N     uint32
	Write bool
}

// Start checks the device's magic and ID, then sets it up as Linux does
// (virtio 1.2 §3.1.1, §4.2.3.2): the driver accepts VERSION_1 and the
// device's type-specific features (bits 0-23), and queue 0 of QueueSize
// at the start of RAM.
func Start(t *testing.T, tr *virtio.Transport, ram *memory.RAM, mem []byte, deviceID uint32) *Driver {
	t.Helper()
	d := &Driver{T: t, Mem: mem, RAM: ram, Tr: tr}
	if d.R(0x000) != 0x74726976 || d.R(0x008) != deviceID {
		t.Fatalf("magic %#x, device ID %d; want virt, %d", d.R(0x000), d.R(0x008), deviceID)
	}
	rings := ram.Base()
	for _, w := range [][2]uint64{
		{0x070, 0}, {0x070, 1}, {0x070, 3}, // reset, ACKNOWLEDGE, DRIVER
		{0x024, 1}, {0x020, 1}, {0x024, 0}, {0x020, uint64(d.R(0x010) & (1<<24 - 1))}, // DriverFeatures
		{0x070, 11},                    // FEATURES_OK
		{0x030, 0}, {0x038, QueueSize}, // queue 0
		{0x080, rings}, {0x090, rings + availOff}, {0x0a0, rings + usedOff},
		{0x044, 1},  // QueueReady
		{0x070, 15}, // DRIVER_OK
	} {
		tr.Write(w[0], 4, w[1])
	}
	if s := d.R(0x070); s != 15 {
		t.Fatalf("status %#x after set-up, want 15", s)
	}
	return d
}

// R reads a 32-bit register.
func (d *Driver) R(off uint64) uint32 { return uint32(d.Tr.Read(off, 4)) }

// Give makes a chain of bufs available, notifies the device and waits
// until it has given the chain back; it returns the used length.
func (d *Driver) Give(bufs ...Buf) uint32 {
	d.T.Helper()
	le := binary.LittleEndian
	head := d.nextDesc
	for i, b := range bufs {
		desc := d.Mem[(d.nextDesc%QueueSize)*16:]
		d.nextDesc++
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
		le.PutUint16(desc[14:], d.nextDesc%QueueSize)
	}
	avail, used := d.RAM.Base()+availOff, d.RAM.Base()+usedOff
	le.PutUint16(d.Mem[availOff+4+2*uint64(d.availIdx%QueueSize):], head)
	d.availIdx++
	if err := d.RAM.AtomicStore16(avail+2, d.availIdx); err != nil {
		d.T.Fatal(err)
	}
	if d.Notify != nil {
		d.Notify()
	} else {
		d.Tr.Write(virtio.NotifyOffset, 4, 0)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if idx, _ := d.RAM.AtomicLoad16(used + 2); idx == d.availIdx {
			break
		}
		if time.Now().After(deadline) {
			d.T.Fatalf("chain %d not given back", head)
		}
	}
	e := d.Mem[usedOff+4+8*uint64((d.availIdx-1)%QueueSize):]
	if id := le.Uint32(e); id != uint32(head) {
		d.T.Fatalf("used element names chain %d, want %d", id, head)
	}
	return le.Uint32(e[4:])
}

// Bytes returns guest RAM [addr, addr+n).
func (d *Driver) Bytes(addr uint64, n uint32) []byte {
	off := addr - d.RAM.Base()
	return d.Mem[off : off+uint64(n)]
}
