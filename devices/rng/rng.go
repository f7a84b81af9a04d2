// Package rng is the virtio entropy device (virtio 1.2 §5.4, device ID 4),
// as Firecracker has it: one queue of 256, no device features and no
// configuration space. The driver makes device-writable buffers available;
// the device fills each chain with bytes from the host's CSPRNG
// (crypto/rand), up to 64 KiB a chain, and gives it back with the count.
// Linux's virtio-rng driver makes it the guest's /dev/hwrng.
//
// The device has no state of its own: a snapshot holds its transport's.
package rng

import (
	"crypto/rand"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

const (
	// queueSize is the queue's QueueNumMax, Firecracker's.
	queueSize = 256
	// maxFill bounds the bytes written into one chain, as Firecracker
	// bounds them: a chain's buffers may overlap, so its length says
	// nothing about the guest memory behind it, and without a bound a
	// queue of chains could keep the device goroutine filling (and a
	// pause waiting) for gigabytes.
	maxFill = 64 << 10
)

// Device is one entropy device over guest RAM.
type Device struct {
	ram *memory.RAM
}

// New returns an entropy device that writes into ram.
func New(ram *memory.RAM) *Device { return &Device{ram: ram} }

func (*Device) ID() uint32           { return 4 }
func (*Device) Features() uint64     { return 0 }
func (*Device) Config() []byte       { return nil }
func (*Device) QueueSizes() []uint16 { return []uint16{queueSize} }

// Handle fills every chain the driver made available (write-only chains:
// a readable buffer makes Pop give the chain back unused).
func (d *Device) Handle(_ int, q *virtio.Queue) error {
	for {
		c, err := q.Pop(virtio.WriteOnly)
		if err != nil || c == nil {
			return err
		}
		n, err := d.fill(c)
		if err != nil {
			return err
		}
		if err := q.Push(c, n); err != nil {
			return err
		}
	}
}

// fill writes random bytes into c's buffers, in order, up to maxFill in
// all, through Mutable so that the write log (and so a diff snapshot)
// sees them, and returns how many it wrote.
func (d *Device) fill(c *virtio.Chain) (uint32, error) {
	var n uint32
	for _, b := range c.Writable {
		dst, err := d.ram.Mutable(b.Addr, uint64(min(b.Len, maxFill-n)))
		if err != nil {
			return 0, err // not reached: Pop checked that the buffers lie in RAM
		}
		rand.Read(dst) // never fails (Go 1.24)
		n += uint32(len(dst))
	}
	return n, nil
}
