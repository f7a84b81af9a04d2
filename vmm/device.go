package vmm

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/devices/netdev"
	"github.com/squibvm/squib/devices/pl011"
	"github.com/squibvm/squib/devices/pl031"
	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/virtio"
)

// Device is one device of the board as the Machine manages it: on the MMIO
// bus, stopped and started with the vCPUs, saved into and restored from
// snapshots, and closed when the machine ends.
//
// Order: Pause stops the vCPUs, then quiesces every device; Resume (and
// Start) unquiesces them, then runs the vCPUs. Snapshot saves the devices
// after the vCPUs and the interrupt controller; Restore restores them
// after the interrupt controller, since a device drives its interrupt line
// to its saved level. Close comes after the last vCPU is gone and before
// the VM and guest RAM are released.
type Device interface {
	Name() string                // the key of its state in snapshot.Machine.Devices
	Window() (base, size uint64) // its MMIO window
	// Read and Write are a guest's access to the window, on a vCPU's
	// thread; offsets are from the window's base.
	Read(off uint64, size int) uint64
	Write(off uint64, size int, v uint64)
	// Quiesce returns once the device does no more work of its own (a
	// virtio device's goroutine stops between two requests); Unquiesce
	// lets it work again. Both may be called more than once.
	Quiesce()
	Unquiesce()
	// Save returns the device's state, encoded with snapshot.Marshal;
	// the device is quiesced. Restore sets it from a saved state, checked
	// as hostile input, before the machine starts.
	Save() (cbor.RawMessage, error)
	Restore(cbor.RawMessage) error
	Close()
}

// addDevice puts d on the bus and into the machine's devices.
func (m *Machine) addDevice(d Device) {
	base, size := d.Window()
	m.bus.add(base, size, d.Name(), d)
	m.devices = append(m.devices, d)
}

// closeDevices closes every device: after the vCPUs are gone, before the
// VM and RAM (a virtio device's goroutine uses both until it is closed).
func (m *Machine) closeDevices() {
	for _, d := range m.devices {
		d.Close()
	}
}

// uart is the PL011 as a Device. Quiescing flushes its output, so that
// all of a paused guest's console output is out.
type uart struct{ *pl011.UART }

func (uart) Name() string                { return "pl011" }
func (uart) Window() (base, size uint64) { return UARTBase, pl011.Size }
func (u uart) Quiesce()                  { u.Flush() }
func (uart) Unquiesce()                  {}

func (u uart) Save() (cbor.RawMessage, error) { return snapshot.Marshal(u.UART.Save()) }

func (u uart) Restore(b cbor.RawMessage) error {
	var s pl011.State
	if err := snapshot.Unmarshal(b, &s); err != nil {
		return err
	}
	u.UART.Restore(s)
	return nil
}

// rtc is the PL031 as a Device; it does no work of its own.
type rtc struct{ *pl031.RTC }

func (rtc) Name() string                { return "pl031" }
func (rtc) Window() (base, size uint64) { return RTCBase, pl031.Size }
func (rtc) Quiesce()                    {}
func (rtc) Unquiesce()                  {}
func (rtc) Close()                      {}

func (r rtc) Save() (cbor.RawMessage, error) { return snapshot.Marshal(r.RTC.Save()) }

func (r rtc) Restore(b cbor.RawMessage) error {
	var s pl031.State
	if err := snapshot.Unmarshal(b, &s); err != nil {
		return err
	}
	r.RTC.Restore(s)
	return nil
}

// virtioDevice is a virtio-mmio device: its transport over its device
// type, at the window and SPI the board gave it.
type virtioDevice struct {
	*virtio.Transport
	dev       virtio.Device
	name      string
	base      uint64
	spi       gic.SPI
	doorbells []io.Closer
}

// ringDoorbells has the hypervisor take the driver's QueueNotify writes
// without exits where it can (hv.DoorbellVM), one doorbell per queue, each
// read by a goroutine that notifies the transport. Where it cannot or will
// not, or a doorbell fails, the writes exit as MMIO and the transport gets them
// through the bus: the same notification, only dearer.
func (d *virtioDevice) ringDoorbells(vm hv.VM, log *slog.Logger) {
	db, ok := vm.(hv.DoorbellVM)
	if !ok {
		return
	}
	for i := range d.dev.QueueSizes() {
		r, err := db.Doorbell(d.base+virtio.NotifyOffset, uint32(i))
		if errors.Is(err, errors.ErrUnsupported) {
			return // the backend's default: MMIO exits
		}
		if err != nil {
			log.Info("queue notifications exit to squibd", "device", d.name, "queue", i, "reason", err)
			continue
		}
		d.doorbells = append(d.doorbells, r)
		go func() {
			var count [8]byte
			for {
				if _, err := r.Read(count[:]); err != nil {
					return // closed
				}
				d.Notify(uint32(i))
			}
		}()
	}
}

// virtioState is a virtio-mmio device's state in a snapshot: where the
// board put it, which the restoring board must match (the guest's device
// tree and driver know it there), its transport's state, and the state of
// its device type if it has one of its own (see ownState).
type virtioState struct {
	Base      uint64          `cbor:"1,keyasint"`
	SPI       uint32          `cbor:"2,keyasint"`
	Transport virtio.State    `cbor:"3,keyasint"`
	Device    cbor.RawMessage `cbor:"4,keyasint,omitempty"`
}

// ownState is a device type with state of its own in its snapshot entry.
type ownState interface {
	// saveState is called quiesced, after the transport is saved.
	saveState() (cbor.RawMessage, error)
	// restoreState checks a saved state against the device, before the
	// transport is restored.
	restoreState(cbor.RawMessage) error
}

// notifier is a device type that asks its own transport to serve a queue
// (vsock, when a host socket has bytes for the guest): build hands it the
// transport's Notify.
type notifier interface{ SetNotify(func(queue uint32)) }

func (d *virtioDevice) Name() string                { return d.name }
func (d *virtioDevice) Window() (base, size uint64) { return d.base, virtio.Size }

func (d *virtioDevice) Save() (cbor.RawMessage, error) {
	t, err := d.Transport.Save()
	if err != nil {
		return nil, err
	}
	s := virtioState{Base: d.base, SPI: uint32(d.spi), Transport: t}
	if o, ok := d.dev.(ownState); ok {
		if s.Device, err = o.saveState(); err != nil {
			return nil, err
		}
	}
	return snapshot.Marshal(s)
}

func (d *virtioDevice) Restore(b cbor.RawMessage) error {
	var s virtioState
	if err := snapshot.Unmarshal(b, &s); err != nil {
		return err
	}
	if s.Base != d.base || s.SPI != uint32(d.spi) {
		return fmt.Errorf("saved at %#x with SPI %d, but squib's board puts it at %#x with SPI %d", s.Base, s.SPI, d.base, uint32(d.spi))
	}
	o, ok := d.dev.(ownState)
	switch {
	case ok:
		if err := o.restoreState(s.Device); err != nil {
			return err
		}
	case s.Device != nil:
		return fmt.Errorf("the snapshot has device state that a %s device does not have", d.name)
	}
	return d.Transport.Restore(s.Transport)
}

// Close stops the transport, then closes the device type's resources (a
// drive's file).
func (d *virtioDevice) Close() {
	for _, r := range d.doorbells {
		r.Close()
	}
	d.Transport.Close()
	closeDevice(d.dev)
}

func closeDevice(dev virtio.Device) {
	if c, ok := dev.(io.Closer); ok {
		c.Close()
	}
}

// drive is a virtio-blk device, whose own state is its blk.State: a
// Writeback drive is flushed when saved, and a restore requires the file
// at the saved size.
type drive struct{ *blk.Device }

func (d drive) saveState() (cbor.RawMessage, error) {
	s, err := d.State()
	if err != nil {
		return nil, err
	}
	return snapshot.Marshal(s)
}

func (d drive) restoreState(b cbor.RawMessage) error {
	var s blk.State
	if err := snapshot.Unmarshal(b, &s); err != nil {
		return err
	}
	if d.Size() != s.Size {
		return fmt.Errorf("drive %s: %s is %d bytes, but it was %d bytes when the snapshot was taken", s.ID, s.Path, d.Size(), s.Size)
	}
	return nil
}

// savedDrives is the drives of the virtio-blk devices in a snapshot's
// device states, in the order of their windows: the board's order.
func savedDrives(devices map[string]cbor.RawMessage) ([]blk.Config, error) {
	return savedInOrder(devices, drivePrefix, func(name string, v virtioState) (blk.Config, error) {
		var s blk.State
		if err := snapshot.Unmarshal(v.Device, &s); err != nil {
			return blk.Config{}, fmt.Errorf("%s state: drive: %w", name, err)
		}
		if driveName(s.ID) != name {
			return blk.Config{}, fmt.Errorf("%s state: it names drive %q", name, s.ID)
		}
		return s.Config(), nil
	})
}

// savedInOrder decodes the states of the devices whose names begin with
// prefix, each with decode, in the order of their windows.
func savedInOrder[C any](devices map[string]cbor.RawMessage, prefix string, decode func(name string, v virtioState) (C, error)) ([]C, error) {
	type saved struct {
		base uint64
		cfg  C
	}
	var all []saved
	for name, b := range devices {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		var v virtioState
		if err := snapshot.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%s state: %w", name, err)
		}
		c, err := decode(name, v)
		if err != nil {
			return nil, err
		}
		all = append(all, saved{v.Base, c})
	}
	slices.SortFunc(all, func(a, b saved) int { return cmp.Compare(a.base, b.base) })
	out := make([]C, len(all))
	for i, s := range all {
		out[i] = s.cfg
	}
	return out, nil
}

// vsocket is a virtio-vsock device, whose own state is its vsock.State:
// the CID, the socket path and the last host port. A restore checks the
// CID and has the device reset the guest's connections.
type vsocket struct{ *vsock.Device }

func (s vsocket) saveState() (cbor.RawMessage, error) { return snapshot.Marshal(s.State()) }

func (s vsocket) restoreState(b cbor.RawMessage) error {
	var st vsock.State
	if err := snapshot.Unmarshal(b, &st); err != nil {
		return err
	}
	return s.Restore(st)
}

// savedVsock is the vsock device's configuration in a snapshot's device
// states, or nil if it has none.
func savedVsock(devices map[string]cbor.RawMessage) (*vsock.Config, error) {
	b, ok := devices[vsockName]
	if !ok {
		return nil, nil
	}
	var v virtioState
	var s vsock.State
	if err := snapshot.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s state: %w", vsockName, err)
	}
	if err := snapshot.Unmarshal(v.Device, &s); err != nil {
		return nil, fmt.Errorf("%s state: vsock: %w", vsockName, err)
	}
	if err := vsock.CheckCID(s.CID); err != nil {
		return nil, fmt.Errorf("%s state: %w", vsockName, err)
	}
	return &vsock.Config{CID: s.CID, UDSPath: s.UDSPath}, nil
}

// netif is a virtio-net device, whose own state is its configuration
// (netdev.State); a restore checks that it is the interface's.
type netif struct{ *netdev.Device }

func (n netif) saveState() (cbor.RawMessage, error) { return snapshot.Marshal(n.State()) }

func (n netif) restoreState(b cbor.RawMessage) error {
	var s netdev.State
	if err := snapshot.Unmarshal(b, &s); err != nil {
		return err
	}
	if s.ID != n.State().ID {
		return fmt.Errorf("network interface %s: the snapshot's state is interface %s's", n.State().ID, s.ID)
	}
	return nil
}

// savedNets is the network interfaces of a snapshot's device states, in
// the order of their windows: the board's order.
func savedNets(devices map[string]cbor.RawMessage) ([]netdev.Config, error) {
	return savedInOrder(devices, netPrefix, func(name string, v virtioState) (netdev.Config, error) {
		var s netdev.State
		if err := snapshot.Unmarshal(v.Device, &s); err != nil {
			return netdev.Config{}, fmt.Errorf("%s state: network interface: %w", name, err)
		}
		c, err := s.Config()
		if err != nil {
			return c, fmt.Errorf("%s state: %w", name, err)
		}
		if netName(c.ID) != name {
			return c, fmt.Errorf("%s state: it names interface %q", name, c.ID)
		}
		return c, nil
	})
}
