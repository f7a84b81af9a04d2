package vmm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/hv/hvtest"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/virtio"
	"github.com/squibvm/squib/virtio/virtiotest"
)

// rngDriver plays the guest's virtio-rng driver through a machine's MMIO
// bus, with a queue of 8 at ringGPA (descriptor table, avail ring at
// +0x1000, used ring at +0x2000), one buffer per chain. Its writes into
// RAM go through RAM's write log, where hvtest's backend, which reports no
// guest writes, lets a diff snapshot find them.
type rngDriver struct {
	t    *testing.T
	m    *Machine
	next uint16 // the next avail index; the used index once all is served
}

const ringGPA = RAMBase + 16<<20

func (d *rngDriver) w(off uint64, v uint32) { d.m.bus.write(VirtioBase+off, 4, uint64(v)) }
func (d *rngDriver) r(off uint64) uint32    { return uint32(d.m.bus.read(VirtioBase+off, 4)) }

// start sets the device up in the order of virtio 1.2 §3.1.1, accepting
// VERSION_1 (bit 32) only.
func (d *rngDriver) start() {
	d.t.Helper()
	if d.r(0x000) != 0x74726976 || d.r(0x008) != 4 {
		d.t.Fatalf("no virtio-rng at %#x: magic %#x, device ID %d", VirtioBase, d.r(0x000), d.r(0x008))
	}
	for _, w := range [][2]uint32{
		{0x070, 0}, {0x070, 1}, {0x070, 3}, {0x024, 1}, {0x020, 1}, {0x024, 0}, {0x020, 0}, {0x070, 11},
		{0x030, 0}, {0x038, 8}, {0x080, ringGPA}, {0x090, ringGPA + 0x1000}, {0x0a0, ringGPA + 0x2000}, {0x044, 1},
		{0x070, 15},
	} {
		d.w(uint64(w[0]), w[1])
	}
	if s := d.r(0x070); s != 15 {
		d.t.Fatalf("status %#x after set-up, want 15", s)
	}
}

// fill makes n bytes at gpa available, notifies the device, waits until it
// gave them back and returns the used length.
func (d *rngDriver) fill(gpa uint64, n uint32) uint32 {
	d.t.Helper()
	le := binary.LittleEndian
	desc := le.AppendUint64(nil, gpa)
	desc = le.AppendUint32(desc, n)
	desc = le.AppendUint16(desc, 2) // WRITE
	desc = le.AppendUint16(desc, 0)
	slot := uint64(d.next % 8)
	if err := d.m.ram.Write(ringGPA+16*slot, desc); err != nil {
		d.t.Fatal(err)
	}
	if err := d.m.ram.Write(ringGPA+0x1000+4+2*slot, le.AppendUint16(nil, uint16(slot))); err != nil {
		d.t.Fatal(err)
	}
	d.next++
	if err := d.m.ram.AtomicStore16(ringGPA+0x1000+2, d.next); err != nil {
		d.t.Fatal(err)
	}
	d.w(0x050, 0)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if idx, _ := d.m.ram.AtomicLoad16(ringGPA + 0x2000 + 2); idx == d.next {
			break
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("buffer %d not given back", d.next-1)
		}
	}
	e, _ := d.m.ram.Slice(ringGPA+0x2000+4+8*slot, 8)
	return le.Uint32(e[4:])
}

func ramBytes(t *testing.T, m *Machine, gpa uint64, n int) []byte {
	t.Helper()
	b, err := m.ram.Slice(gpa, uint64(n))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(b)
}

// TestRNGSnapshotRestore runs the device layer end to end on hvtest's
// backend, the test playing the guest: a machine with the entropy device
// fills a buffer; paused, it is snapshotted, resumed, fills another buffer
// and is snapshotted again as a diff, which holds that buffer although the
// backend reported no writes (RAM's write log did); the two merged restore
// into a machine with the device where it was, its interrupt line driven
// high again after the interrupt controller's restore, its queue serving
// the next buffer once started. Then states that do not fit the board are
// refused.
func TestRNGSnapshotRestore(t *testing.T) {
	h := &hvtest.Hypervisor{}
	log := slog.New(slog.DiscardHandler)
	plan, err := Prepare(Config{Kernel: loader.Bytes(testKernel(8 << 20)), Cmdline: "x", VCPUs: 1, MemoryMiB: 64,
		TrackDirtyPages: true, RNG: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(h, plan, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(nil)
	d := &rngDriver{t: t, m: m}
	d.start()
	const a, b, c = RAMBase + 17<<20, RAMBase + 20<<20, RAMBase + 21<<20 // each in a block of its own
	if n := d.fill(a, 64); n != 64 || bytes.Equal(ramBytes(t, m, a, 64), make([]byte, 64)) {
		t.Fatalf("used length %d, buffer % x", n, ramBytes(t, m, a, 64))
	}
	dir := t.TempDir()
	files := func(name string) snapshot.Files {
		return snapshot.Files{State: filepath.Join(dir, name+".state"), Memory: filepath.Join(dir, name+".mem")}
	}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Snapshot(files("base"), false); err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	d.fill(b, 64)
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Snapshot(files("diff"), true); err != nil {
		t.Fatal(err)
	}
	wantA, wantB := ramBytes(t, m, a, 64), ramBytes(t, m, b, 64)
	m.Stop()
	if _, err := m.Wait(); err != nil {
		t.Fatal(err)
	}

	merged := files("merged")
	if _, err := snapshot.Merge(files("base"), []snapshot.Files{files("diff")}, merged); err != nil {
		t.Fatal(err)
	}
	if r, err := snapshot.Describe(merged.State); err != nil || !slices.ContainsFunc(r.Devices, func(d snapshot.DeviceReport) bool { return d.Name == rngName }) {
		t.Fatalf("describe: %+v, %v; want the device %s", r.Devices, err, rngName)
	}
	before := len(h.Events())
	m2, err := Restore(h, merged, RestoreOptions{}, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	if !m2.Config().RNG {
		t.Error("the restored machine has no entropy device")
	}
	if !bytes.Equal(ramBytes(t, m2, a, 64), wantA) || !bytes.Equal(ramBytes(t, m2, b, 64), wantB) {
		t.Error("the restored RAM does not hold what the device wrote (the diff lacks it)")
	}
	// Restored as saved: DRIVER_OK, the queue ready, the used-buffer
	// interrupt not yet acknowledged, so its line high again, after the GIC.
	d2 := &rngDriver{t: t, m: m2, next: d.next}
	if s, isr := d2.r(0x070), d2.r(0x060); s != 15 || isr != 1 {
		t.Errorf("restored status %#x, interrupt status %#x; want 15, 1", s, isr)
	}
	d2.w(0x030, 0)
	if ready := d2.r(0x044); ready != 1 {
		t.Errorf("restored QueueReady %d", ready)
	}
	line := fmt.Sprintf("spi %d true", plan.virtio[0].spi.INTID())
	ev := h.Events()[before:]
	if g, l := slices.Index(ev, "restore-gic"), slices.Index(ev, line); g < 0 || l < g {
		t.Errorf("restore events %q: want %q after restore-gic", ev, line)
	}
	m2.Start(nil)
	if n := d2.fill(c, 32); n != 32 || bytes.Equal(ramBytes(t, m2, c, 32), make([]byte, 32)) {
		t.Errorf("after the restore: used length %d, buffer % x", n, ramBytes(t, m2, c, 32))
	}
	m2.Stop()
	if _, err := m2.Wait(); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(h.Events(), func(e string) bool { return strings.HasSuffix(e, "after close") }); i >= 0 {
		t.Errorf("an interrupt line driven after its VM was closed: %q", h.Events()[i])
	}

	// A state for a device the board lacks, and the device elsewhere.
	st, err := snapshot.Load(snapshot.Expect{Backend: h.Name()}, merged)
	if err != nil {
		t.Fatal(err)
	}
	var moved virtioState
	if err := snapshot.Unmarshal(st.Machine.Devices[rngName], &moved); err != nil {
		t.Fatal(err)
	}
	moved.Base += 0x1000
	for _, tc := range []struct {
		name, device string
		state        any
		want         string
	}{
		{"unknown", "virtio-blk", moved, `the snapshot has the state of a device "virtio-blk", which squib's board does not have`},
		{"moved", rngName, moved, "virtio-rng state: saved at 0xa001000 with SPI 2, but squib's board puts it at 0xa000000 with SPI 2"},
	} {
		bad := *st
		bad.Header.ID = ""
		bad.Machine.Devices = maps.Clone(st.Machine.Devices)
		if bad.Machine.Devices[tc.device], err = snapshot.Marshal(tc.state); err != nil {
			t.Fatal(err)
		}
		f := files(tc.name)
		if err := snapshot.Create(f, &bad, make([]byte, st.Header.RAMSize), snapshot.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if m, err := Restore(h, f, RestoreOptions{}, io.Discard, log); err == nil || !strings.Contains(err.Error(), tc.want) {
			if m != nil {
				m.Stop()
				m.Wait()
			}
			t.Errorf("%s: restore error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestDoorbells: where the hypervisor takes QueueNotify writes as
// doorbells (KVM's ioeventfd), one per queue, ringing queue 0's has the
// device serve it with no MMIO write; where it has none, the MMIO write
// does the same. Once the machine has ended, the doorbells are closed.
func TestDoorbells(t *testing.T) {
	for _, bells := range []bool{true, false} {
		t.Run(fmt.Sprintf("doorbells=%v", bells), func(t *testing.T) {
			h := &hvtest.Hypervisor{Doorbells: bells}
			plan, err := Prepare(Config{Kernel: loader.Bytes(testKernel(8 << 20)), Cmdline: "x", VCPUs: 1, MemoryMiB: 64, RNG: true})
			if err != nil {
				t.Fatal(err)
			}
			m, err := New(h, plan, io.Discard, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			m.Start(nil)
			i := slices.IndexFunc(m.devices, func(d Device) bool { return d.Name() == rngName })
			v := m.devices[i].(*virtioDevice)
			drv := virtiotest.Start(t, v.Transport, m.ram, m.ram.Bytes(), 4)
			notify := v.base + virtio.NotifyOffset
			if bells {
				drv.Notify = func() {
					if err := h.Ring(notify, 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			if n := drv.Give(virtiotest.Buf{Addr: m.ram.Base() + 0x8000, N: 64, Write: true}); n != 64 {
				t.Errorf("used length %d, want 64", n)
			}
			if err := h.Ring(notify, 1); err == nil {
				t.Error("a doorbell for queue 1 of a device with one queue")
			}
			m.Stop()
			m.Wait()
			if err := h.Ring(notify, 0); bells && err == nil {
				t.Error("the doorbell still rings after the machine ended: its reader was not closed")
			}
		})
	}
}
