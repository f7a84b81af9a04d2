// Package virtio is the core of squib's virtio devices: the virtio-mmio
// transport (version 2 only) and split virtqueues, as the virtio 1.2 spec
// (§2, §4.2) describes them, with no device type and no backend. A device
// type implements Device; New wraps it in a Transport, the register window
// the VMM puts on its MMIO bus.
//
// # Shape
//
//   - Transport: the registers (features and their selectors, status, queue
//     set-up, InterruptStatus and its ACK, ConfigGeneration), the device
//     configuration space, the interrupt line, and one device goroutine
//     that runs Device.Handle. VERSION_1 is required of the driver, and
//     EVENT_IDX and INDIRECT_DESC are offered on top of the device's
//     features. Save and Restore carry its State.
//   - Queue: one split virtqueue. Pop takes an available chain, Push
//     gives it back as used; AvailIdx and NotifyPast let a device wait for
//     the driver's next chain without using those it has.
//   - Chain: the readable and writable buffers of one descriptor chain,
//     every guest-supplied index, address and length checked against the
//     queue and guest RAM. Device types read and write the buffers through
//     memory.RAM (Slice to read, Mutable to write, so the writes are in
//     RAM's write log).
//
// # Who calls what
//
//   - vCPU threads call Transport.Read and Transport.Write. They take only
//     the register lock, which no one holds across device work: a
//     QueueNotify sets a bit and wakes the device goroutine without
//     waiting. Where the hypervisor takes QueueNotify writes without an
//     exit (KVM's ioeventfd), the VMM's doorbell reader calls
//     Transport.Notify instead, to the same effect. Only a Status write waits, for a running Handle to return:
//     the device must be off the queues when a reset completes.
//   - The device goroutine calls Device.Handle for each notified queue, one
//     at a time; Queue methods are called only from Handle. Handle pushes
//     every chain it pops before returning, so between two calls nothing is
//     in flight.
//   - The VMM calls Quiesce (no Handle runs until Unquiesce), Save (only
//     when quiesced), Restore (before Unquiesce) and Close; any goroutine may
//     call UpdateConfig. None of them may be called from Handle.
//
// # Guest input
//
// A driver's register access of the wrong width, an unknown register or a
// write out of turn is ignored, and logged once per kind. A malformed
// descriptor chain (an index beyond its table, a buffer or indirect table
// outside guest RAM or wrapping around, a loop, a nested or unannounced
// indirect table, INDIRECT with NEXT, a table length not a multiple of 16,
// a buffer of the wrong direction, over 2^32-1 bytes in total) is given
// back at once, unused (used length 0), and the queue goes on. A corrupt ring (avail.idx more
// than a queue ahead, a head beyond the table, rings that do not fit at
// DRIVER_OK) or a failing Handle sets DEVICE_NEEDS_RESET and raises a
// configuration change interrupt; the queues then stay untouched until the
// driver resets the device. Nothing the guest writes makes the transport
// panic, loop without bound, or write into guest RAM outside the used rings.
//
// # Ordering
//
// The rings are shared with the guest's other CPUs, and arm64 reorders
// plain accesses, so the ring indices go through memory.RAM's atomic
// 16-bit accessors, which are sequentially consistent:
//
//   - avail.idx is loaded before the ring entries and descriptors it
//     covers are read (acquire);
//   - a used element is written before used.idx is stored (release);
//   - used_event (or avail.flags) is loaded after used.idx is stored, and
//     avail.idx is loaded again after avail_event is stored: each a store
//     followed by a load, the full barrier EVENT_IDX needs (§2.7.10).
//
// InterruptStatus is set before the line rises, and the line stays up
// until the driver ACKs every bit (level-triggered).
package virtio
