package virtio

import (
	"errors"
	"fmt"
)

// State is a transport's saved state: its registers, its configuration
// space and each queue's settings and indices, ready for snapshot.Marshal.
// A device type saves its own state beside it. The device-side indices are
// those of a quiesced device, which has no chain in flight.
type State struct {
	DeviceID          uint32       `cbor:"1,keyasint"` // checked on restore
	Status            uint32       `cbor:"2,keyasint"`
	DeviceFeaturesSel uint32       `cbor:"3,keyasint"`
	DriverFeaturesSel uint32       `cbor:"4,keyasint"`
	DriverFeatures    uint64       `cbor:"5,keyasint"` // accepted by the driver
	QueueSel          uint32       `cbor:"6,keyasint"`
	InterruptStatus   uint32       `cbor:"7,keyasint"`
	ConfigGeneration  uint32       `cbor:"8,keyasint"`
	Config            []byte       `cbor:"9,keyasint"`
	Queues            []QueueState `cbor:"10,keyasint"`
}

// QueueState is one queue's saved state. Addresses are guest physical; the
// indices are free-running, as in the rings.
type QueueState struct {
	Num       uint32 `cbor:"1,keyasint"` // QueueNum as the driver wrote it
	Ready     bool   `cbor:"2,keyasint"`
	Desc      uint64 `cbor:"3,keyasint"`
	Avail     uint64 `cbor:"4,keyasint"`
	Used      uint64 `cbor:"5,keyasint"`
	NextAvail uint16 `cbor:"6,keyasint"`
	NextUsed  uint16 `cbor:"7,keyasint"`
}

// Save returns the transport's state. The transport must be quiesced.
func (t *Transport) Save() (State, error) {
	t.work.Lock()
	defer t.work.Unlock()
	if !t.quiesced {
		return State{}, errors.New("virtio: transport saved while its device may run: quiesce it first")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := State{
		DeviceID: t.id, Status: t.status,
		DeviceFeaturesSel: t.devFeatSel, DriverFeaturesSel: t.drvFeatSel, DriverFeatures: t.drvFeatures,
		QueueSel: t.queueSel, InterruptStatus: t.isr,
		ConfigGeneration: t.generation, Config: append([]byte(nil), t.config...),
	}
	for _, q := range t.queues {
		s.Queues = append(s.Queues, QueueState{
			Num: q.num, Ready: q.ready, Desc: q.desc, Avail: q.avail, Used: q.used,
			NextAvail: q.nextAvail, NextUsed: q.nextUsed,
		})
	}
	return s, nil
}

// Restore sets the transport's state from s, saved by a transport of the
// same device type over the same guest RAM, which must already hold the
// snapshot's contents. s is checked like guest input before anything
// changes: the device ID, configuration size and queue count must match,
// the accepted features must be offered, and the queues of an active
// device must be usable, as at DRIVER_OK. Restore leaves the transport
// quiesced, with its interrupt line driven to match s; Unquiesce starts it.
func (t *Transport) Restore(s State) error {
	t.work.Lock()
	defer t.work.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	const knownStatus = statusAcknowledge | statusDriver | statusDriverOK | statusFeaturesOK | statusNeedsReset | statusFailed
	switch {
	case s.DeviceID != t.id:
		return fmt.Errorf("virtio state of device type %d restored into device type %d", s.DeviceID, t.id)
	case len(s.Config) != len(t.config):
		return fmt.Errorf("virtio device %d: %d bytes of saved configuration space, the device has %d", t.id, len(s.Config), len(t.config))
	case len(s.Queues) != len(t.queues):
		return fmt.Errorf("virtio device %d: %d saved queues, the device has %d", t.id, len(s.Queues), len(t.queues))
	case s.Status&^knownStatus != 0:
		return fmt.Errorf("virtio device %d: saved status %#x has unknown bits", t.id, s.Status)
	case s.InterruptStatus&^(intUsedBuffer|intConfig) != 0:
		return fmt.Errorf("virtio device %d: saved interrupt status %#x has unknown bits", t.id, s.InterruptStatus)
	case s.DriverFeatures&^t.offered != 0:
		return fmt.Errorf("virtio device %d: saved driver features %#x include %#x, which the device does not offer", t.id, s.DriverFeatures, s.DriverFeatures&^t.offered)
	}
	active := s.Status&(statusDriverOK|statusNeedsReset) == statusDriverOK
	queues := make([]Queue, len(t.queues))
	for i, qs := range s.Queues {
		q := &queues[i]
		*q = Queue{ram: t.ram, log: t.log, max: t.queues[i].max,
			num: qs.Num, ready: qs.Ready, desc: qs.Desc, avail: qs.Avail, used: qs.Used,
			nextAvail: qs.NextAvail, nextUsed: qs.NextUsed}
		if active && q.ready {
			if err := q.activate(s.DriverFeatures); err != nil {
				return fmt.Errorf("virtio device %d: saved queue %d: %w", t.id, i, err)
			}
		}
	}
	for i := range queues {
		*t.queues[i] = queues[i]
	}
	t.status, t.devFeatSel, t.drvFeatSel, t.drvFeatures = s.Status, s.DeviceFeaturesSel, s.DriverFeaturesSel, s.DriverFeatures
	t.queueSel, t.generation = s.QueueSel, s.ConfigGeneration
	copy(t.config, s.Config)
	t.active, t.quiesced = active, true
	t.pending.Store(0)
	t.isr = s.InterruptStatus
	t.level = t.isr != 0
	t.irq(t.level)
	return nil
}
