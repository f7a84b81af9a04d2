package virtio

import (
	"slices"
	"strings"
	"testing"

	"github.com/squibvm/squib/snapshot"
)

// TestSaveRestore: a device saved mid-life, encoded and decoded with the
// snapshot format's CBOR, comes back in a new transport over the same RAM
// with the same state, and its queues carry on from where they were.
func TestSaveRestore(t *testing.T) {
	d := newDriver(t, &testDevice{sizes: []uint16{8, 4}, config: []byte{1, 2, 3, 4}})
	d.start(features, 0)
	for range 11 { // past the end of the 8-entry ring: the indices wrap
		h, _ := d.chain(0, seg{data: []byte("ab")}, seg{room: 2, write: true})
		d.publish(0, h)
		d.sync()
		d.takeUsed(0)
	}
	if err := d.tr.UpdateConfig(2, []byte{9}); err != nil {
		t.Fatal(err)
	}
	d.w(regQueueSel, 1)
	d.w(regDeviceFeaturesSel, 1)
	d.tr.Quiesce()
	saved, err := d.tr.Save()
	if err != nil {
		t.Fatal(err)
	}
	want := State{
		DeviceID: 42, Status: 15, DeviceFeaturesSel: 1, DriverFeatures: features, QueueSel: 1,
		InterruptStatus: intUsedBuffer | intConfig, ConfigGeneration: 1, Config: []byte{1, 2, 9, 4},
		Queues: []QueueState{
			{Num: 8, Ready: true, Desc: ringArea, Avail: ringArea + 0x1000, Used: ringArea + 0x2000, NextAvail: 11, NextUsed: 11},
			{Num: 4, Ready: true, Desc: ringArea + ringStride, Avail: ringArea + ringStride + 0x1000, Used: ringArea + ringStride + 0x2000},
		},
	}
	if !stateEqual(saved, want) {
		t.Fatalf("saved %+v\nwant  %+v", saved, want)
	}
	b, err := snapshot.Marshal(saved)
	if err != nil {
		t.Fatal(err)
	}
	var decoded State
	if err := snapshot.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	if !stateEqual(decoded, saved) {
		t.Fatalf("decoded %+v\nsaved   %+v", decoded, saved)
	}

	// A new transport, as after a restore: the same device and RAM.
	dev2 := &testDevice{ram: d.ram, sizes: []uint16{8, 4}, config: []byte{1, 2, 3, 4}}
	d2 := newDriver(t, dev2)
	d2.rings, d2.next = d.rings, d.next
	if err := d2.tr.Restore(decoded); err != nil {
		t.Fatal(err)
	}
	if level, rises := d2.irq.get(); !level || rises != 1 {
		t.Fatalf("restored line %v after %d rises, want high", level, rises)
	}
	again, err := d2.tr.Save()
	if err != nil {
		t.Fatal(err)
	}
	if !stateEqual(again, saved) {
		t.Fatalf("restored %+v\nsaved    %+v", again, saved)
	}
	if v := d2.tr.Read(regConfig, 4); v != 0x04090201 {
		t.Fatalf("restored config %#x", v)
	}

	// The restored device is quiesced until Unquiesce, which serves every
	// queue: a buffer made available without a notification is found.
	h, _ := d2.chain(0, seg{data: []byte("cd")}, seg{room: 2, write: true})
	r := d2.rings[0]
	b2, _ := d2.ram.Slice(r.avail+4+2*uint64(r.availIdx%r.size), 2)
	b2[0], b2[1] = byte(h), 0
	r.availIdx++
	d2.set16(r.avail+2, r.availIdx)
	d2.sync()
	if calls, _ := dev2.seen(); calls != 0 {
		t.Fatal("Handle ran before Unquiesce")
	}
	d2.ack()
	d2.tr.Unquiesce()
	d2.sync()
	if u := d2.takeUsed(0); !slices.Equal(u, []used{{uint32(h), 2}}) {
		t.Fatalf("used after the restore %v", u)
	}
	if idx := d2.get16(r.used + 2); idx != 12 {
		t.Fatalf("used.idx %d, want 12", idx)
	}
}

func TestSaveNeedsQuiesce(t *testing.T) {
	d := newDriver(t, &testDevice{})
	if _, err := d.tr.Save(); err == nil {
		t.Fatal("Save of a running transport succeeded")
	}
	d.tr.Quiesce()
	d.tr.Quiesce()
	if _, err := d.tr.Save(); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreRefuses(t *testing.T) {
	good := func() State {
		return State{DeviceID: 42, Status: 15, DriverFeatures: featVersion1, Config: []byte{0, 0},
			Queues: []QueueState{{Num: 8, Ready: true, Desc: ringArea, Avail: ringArea + 0x1000, Used: ringArea + 0x2000}}}
	}
	for _, c := range []struct {
		name   string
		change func(s *State)
		want   string
	}{
		{"another device type", func(s *State) { s.DeviceID = 2 }, "device type"},
		{"another config size", func(s *State) { s.Config = []byte{1} }, "configuration space"},
		{"another queue count", func(s *State) { s.Queues = append(s.Queues, QueueState{}) }, "saved queues"},
		{"unknown status bits", func(s *State) { s.Status |= 0x10 }, "status"},
		{"unknown interrupt bits", func(s *State) { s.InterruptStatus = 4 }, "interrupt status"},
		{"features not offered", func(s *State) { s.DriverFeatures |= 1 << 40 }, "does not offer"},
		{"queue too large", func(s *State) { s.Queues[0].Num = 16 }, "power of two"},
		{"ring outside RAM", func(s *State) { s.Queues[0].Used = 0x1000 }, "not inside guest RAM"},
	} {
		d := newDriver(t, &testDevice{sizes: []uint16{8}, config: []byte{5, 6}})
		s := good()
		c.change(&s)
		err := d.tr.Restore(s)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Restore: %v, want an error about %q", c.name, err, c.want)
		}
		if v := d.tr.Read(regConfig, 2); v != 0x0605 {
			t.Errorf("%s: a refused restore changed the config to %#x", c.name, v)
		}
		if st := d.r(regStatus); st != 0 {
			t.Errorf("%s: a refused restore changed the status to %#x", c.name, st)
		}
	}
	// A device that needed a reset is restored as it was, its queues
	// unchecked: they may be why it broke.
	d := newDriver(t, &testDevice{sizes: []uint16{8}, config: []byte{5, 6}})
	s := good()
	s.Status |= statusNeedsReset
	s.Queues[0].Used = 0x1000
	if err := d.tr.Restore(s); err != nil {
		t.Fatal(err)
	}
}
