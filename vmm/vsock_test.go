package vmm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/fdt"
	"github.com/squibvm/squib/hv/hvtest"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/virtio"
	"github.com/squibvm/squib/virtio/virtiotest"
)

// vsockGuest plays the guest's vsock driver on a machine's device, with
// virtiotest's rings at the start of RAM and buffers after them.
type vsockGuest struct {
	t   *testing.T
	drv *virtiotest.Driver
	rx  map[uint16]uint64 // posted receive buffers by head
}

const (
	vsEvents = RAMBase + 0x10000
	vsTx     = RAMBase + 0x20000
	vsRx     = RAMBase + 0x30000 // 8 buffers of 0x1000
)

// vsockPkt is a packet header's fields the test looks at, and its data.
type vsockPkt struct {
	srcPort, dstPort uint32
	op               uint16
	fwdCnt           uint32
	data             []byte
}

func (g *vsockGuest) postRx(addr uint64) {
	g.rx[g.drv.Post(0, virtiotest.Buf{Addr: addr, N: 0x1000, Write: true})] = addr
}

// send transmits one packet from the guest (CID 3) to the host.
func (g *vsockGuest) send(op uint16, src, dst uint32, data []byte) {
	g.t.Helper()
	le := binary.LittleEndian
	h := make([]byte, 44)
	le.PutUint64(h, 3)
	le.PutUint64(h[8:], vsock.HostCID)
	le.PutUint32(h[16:], src)
	le.PutUint32(h[20:], dst)
	le.PutUint32(h[24:], uint32(len(data)))
	le.PutUint16(h[28:], 1) // stream
	le.PutUint16(h[30:], op)
	le.PutUint32(h[36:], 64<<10)
	copy(g.drv.Bytes(vsTx, 44), h)
	copy(g.drv.Bytes(vsTx+44, uint32(len(data))), data)
	g.drv.Post(1, virtiotest.Buf{Addr: vsTx, N: 44 + uint32(len(data))})
	if u := g.drv.Wait(1, 1, 5*time.Second); len(u) != 1 {
		g.t.Fatal("the device did not take the packet")
	}
}

// recv waits for the next packet on the rx queue, or returns nil after
// timeout.
func (g *vsockGuest) recv(timeout time.Duration) *vsockPkt {
	g.t.Helper()
	u := g.drv.Wait(0, 1, timeout)
	if len(u) == 0 {
		return nil
	}
	addr := g.rx[u[0].Head]
	b := bytes.Clone(g.drv.Bytes(addr, u[0].Len))
	g.postRx(addr)
	le := binary.LittleEndian
	return &vsockPkt{srcPort: le.Uint32(b[16:]), dstPort: le.Uint32(b[20:]), op: le.Uint16(b[30:]), fwdCnt: le.Uint32(b[40:]), data: b[44:]}
}

func vsockDevice(t *testing.T, m *Machine) *virtioDevice {
	t.Helper()
	i := slices.IndexFunc(m.devices, func(d Device) bool { return d.Name() == vsockName })
	if i < 0 {
		t.Fatal("no vsock device")
	}
	return m.devices[i].(*virtioDevice)
}

// TestVsockSnapshotRestore: a machine's vsock device, driven by the test
// playing the guest, connects a host program; the machine paused and
// snapshotted, a restore onto the same socket path (the source still
// holds it) is refused with a line naming vsock_override, and one with
// its own path (RestoreOptions.VsockUDS) comes back with the device where
// it was. The source, resumed, keeps its connection and gets no event.
// The restored device sends TRANSPORT_RESET into the event buffer the
// guest left, holds a host program's REQUEST until the guest makes a new
// event buffer available, answers packets of the old connection with RST,
// and its socket file is gone once the machine has ended. Each of its three
// queues has a doorbell.
func TestVsockSnapshotRestore(t *testing.T) {
	h := &hvtest.Hypervisor{Doorbells: true}
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	uds, clone := filepath.Join(dir, "v.sock"), filepath.Join(dir, "clone.sock")
	plan, err := Prepare(Config{Kernel: loader.Bytes(testKernel(8 << 20)), Cmdline: "x", VCPUs: 1, MemoryMiB: 64,
		Vsock: &vsock.Config{CID: 3, UDSPath: uds}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(Config{Kernel: loader.Bytes(testKernel(8 << 20)), VCPUs: 1, MemoryMiB: 64, Vsock: &vsock.Config{CID: 2, UDSPath: uds}}); err == nil {
		t.Error("Prepare accepted guest CID 2")
	}
	m, err := New(h, plan, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { m.Stop(); m.Wait() }()
	m.Start(nil)
	v := vsockDevice(t, m)
	for q := range uint32(4) {
		if err := h.Ring(v.base+virtio.NotifyOffset, q); (err == nil) != (q < 3) {
			t.Errorf("doorbell of queue %d: %v", q, err)
		}
	}
	g := &vsockGuest{t: t, drv: virtiotest.StartQueues(t, v.Transport, m.ram, m.ram.Bytes(), 19, 3), rx: map[uint16]uint64{}}
	g.drv.Add(2, virtiotest.Buf{Addr: vsEvents, N: 8, Write: true})
	g.drv.Add(2, virtiotest.Buf{Addr: vsEvents + 8, N: 8, Write: true})
	g.drv.Kick(2)
	for i := range uint64(8) {
		g.postRx(vsRx + i*0x1000)
	}
	host, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	host.Write([]byte("CONNECT 52\n"))
	req := g.recv(5 * time.Second)
	if req == nil || req.op != 1 || req.dstPort != 52 || req.srcPort != 1<<30 {
		t.Fatalf("REQUEST %+v", req)
	}
	g.send(2, 52, req.srcPort, nil) // RESPONSE
	ok := make([]byte, len("OK 1073741824\n"))
	if _, err := io.ReadFull(host, ok); err != nil || string(ok) != "OK 1073741824\n" {
		t.Fatalf("host read %q, %v", ok, err)
	}

	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	files := snapshot.Files{State: filepath.Join(dir, "vm.state"), Memory: filepath.Join(dir, "vm.mem")}
	if _, err := m.Snapshot(files, false); err != nil {
		t.Fatal(err)
	}
	if r, err := snapshot.Describe(files.State); err != nil || !slices.ContainsFunc(r.Devices, func(d snapshot.DeviceReport) bool { return d.Name == vsockName }) {
		t.Fatalf("describe: %+v, %v; want the device %s", r, err, vsockName)
	}
	if _, err := Restore(h, files, RestoreOptions{}, io.Discard, log); !errors.Is(err, vsock.ErrInUse) || !strings.Contains(err.Error(), "vsock_override") {
		t.Errorf("restore onto the source's socket: %v, want it in use, naming vsock_override", err)
	}
	m2, err := Restore(h, files, RestoreOptions{VsockUDS: clone}, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	if c := m2.Config().Vsock; c == nil || *c != (vsock.Config{CID: 3, UDSPath: clone}) {
		t.Errorf("restored vsock %+v, want CID 3 on %s", c, clone)
	}
	v2 := vsockDevice(t, m2)
	if v2.base != v.base || v2.spi != v.spi {
		t.Errorf("restored at %#x SPI %d, saved at %#x SPI %d", v2.base, v2.spi, v.base, v.spi)
	}
	g2 := &vsockGuest{t: t, drv: g.drv.Fork(v2.Transport, m2.ram, m2.ram.Bytes()), rx: g.rx}
	g.rx = maps.Clone(g.rx)
	if s := g2.drv.R(0x070); s != 15 {
		t.Errorf("restored status %#x, want 15", s)
	}

	// The source runs on with its connection, and no event.
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	host.Write([]byte("after"))
	if p := g.recv(5 * time.Second); p == nil || p.op != 5 || string(p.data) != "after" {
		t.Errorf("the resumed source's packet %+v, want its connection's data", p)
	}
	if u := g.drv.Used(2); len(u) != 0 {
		t.Errorf("the source sent events %+v", u)
	}

	m2.Start(nil)
	if u := g2.drv.Wait(2, 1, 5*time.Second); len(u) != 1 || u[0].Len != 4 || !bytes.Equal(g2.drv.Bytes(vsEvents, 4), []byte{0, 0, 0, 0}) {
		t.Fatalf("restored event queue gave back %+v holding % x; want TRANSPORT_RESET", u, g2.drv.Bytes(vsEvents, 4))
	}
	host2, err := net.Dial("unix", clone)
	if err != nil {
		t.Fatal(err)
	}
	defer host2.Close()
	host2.Write([]byte("CONNECT 52\n"))
	if p := g2.recv(100 * time.Millisecond); p != nil {
		t.Errorf("the restored device sent %+v before the guest took the event", p)
	}
	g2.drv.Post(2, virtiotest.Buf{Addr: vsEvents, N: 8, Write: true}) // the guest refills after the event
	if p := g2.recv(5 * time.Second); p == nil || p.op != 1 || p.srcPort != 1<<30+1 {
		t.Errorf("restored REQUEST %+v, want one from host port %d", p, 1<<30+1)
	}
	g2.send(5, 52, 1<<30, []byte("old")) // the connection the snapshot had
	if p := g2.recv(5 * time.Second); p == nil || p.op != 3 || p.dstPort != 52 || p.srcPort != 1<<30 {
		t.Errorf("answer to the old connection's data %+v, want RST", p)
	}
	m2.Stop()
	m2.Wait()
	if _, err := os.Lstat(clone); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the restored machine's socket after it ended: %v", err)
	}
	m.Stop()
	m.Wait()
	if _, err := os.Lstat(uds); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the source's socket after it ended: %v", err)
	}

	// A snapshot without vsock refuses an override.
	plain, err := Prepare(Config{Kernel: loader.Bytes(testKernel(8 << 20)), Cmdline: "x", VCPUs: 1, MemoryMiB: 64})
	if err != nil {
		t.Fatal(err)
	}
	m3, err := New(h, plain, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	m3.Start(nil)
	m3.Pause()
	noVsock := snapshot.Files{State: filepath.Join(dir, "plain.state"), Memory: filepath.Join(dir, "plain.mem")}
	if _, err := m3.Snapshot(noVsock, false); err != nil {
		t.Fatal(err)
	}
	m3.Stop()
	m3.Wait()
	if _, err := Restore(h, noVsock, RestoreOptions{VsockUDS: clone}, io.Discard, log); err == nil || !strings.Contains(err.Error(), "no vsock device") {
		t.Errorf("vsock override of a snapshot without vsock: %v", err)
	}
}

// TestVsockSlot: the vsock device takes the virtio window after the other
// devices' (so adding it moves none of them), with its own SPI and a
// device-tree node.
func TestVsockSlot(t *testing.T) {
	p, err := Prepare(Config{Kernel: loader.Bytes(testKernel(8 << 20)), Cmdline: "x", VCPUs: 1, MemoryMiB: 64, RNG: true,
		Vsock: &vsock.Config{CID: 3, UDSPath: "v.sock"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.virtio) != 2 || p.virtio[0].name != rngName || p.virtio[1].name != vsockName ||
		p.virtio[1].base != VirtioBase+0x1000 || p.virtio[1].spi == p.virtio[0].spi {
		t.Fatalf("virtio slots %+v", p.virtio)
	}
	root, _, err := fdt.Parse(p.DTB)
	if err != nil {
		t.Fatal(err)
	}
	if root.Find("/virtio_mmio@a001000") == nil {
		t.Error("no device-tree node for the vsock device")
	}
}
