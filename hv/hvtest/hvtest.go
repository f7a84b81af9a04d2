// Package hvtest is a hypervisor for tests of the VMM core and the API on
// any host: its vCPUs run no guest (Run waits for a Kick), its VMs record
// the interrupt lines they are asked to drive, take doorbells if asked to
// (Hypervisor.Doorbells), and they save and restore
// placeholder vCPU and GIC state, so that a machine can be built, started,
// paused, snapshotted and restored without KVM or Hypervisor.framework.
package hvtest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/snapshot"
)

// Hypervisor is the test backend. It is named kvm, a backend name snapshot
// files accept. The zero value is ready to use; one Hypervisor may make
// several VMs, whose events it records together.
type Hypervisor struct {
	// Doorbells makes its VMs take doorbells (hv.DoorbellVM), which Ring
	// rings; without it Doorbell fails, as where a backend has none.
	Doorbells bool

	mu     sync.Mutex
	events []string
	bells  map[[2]uint64]*os.File // (addr, value) -> the write end
}

func (h *Hypervisor) Name() string  { return gic.BackendKVM }
func (h *Hypervisor) MaxVCPUs() int { return 8 }

func (h *Hypervisor) NewVM(cfg hv.Config) (hv.VM, error) {
	return &vm{h: h, ram: uint64(len(cfg.RAM)), vcpus: cfg.VCPUs}, nil
}

// Events returns what the VMs were asked to do, in order: "spi INTID
// LEVEL" for each SetSPI, "restore-gic" and "close"; a SetSPI after its VM
// was closed is recorded as "spi INTID LEVEL after close".
func (h *Hypervisor) Events() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

// Ring rings the doorbell of a guest write of value to addr, as the
// hypervisor would on such a write; it fails if the VMM took none there.
func (h *Hypervisor) Ring(addr uint64, value uint32) error {
	h.mu.Lock()
	w := h.bells[[2]uint64{addr, uint64(value)}]
	h.mu.Unlock()
	if w == nil {
		return fmt.Errorf("hvtest: no doorbell for %d at %#x", value, addr)
	}
	_, err := w.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	return err
}

func (h *Hypervisor) record(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, fmt.Sprintf(format, args...))
}

type vm struct {
	h          *Hypervisor
	ram        uint64
	vcpus      int
	mu         sync.Mutex
	closed     bool
	dirtyWords int // the length of a dirty log, once TrackDirty was called
}

func (v *vm) NewVCPU(id int) (hv.VCPU, error) {
	return &vcpu{id: id, kick: make(chan struct{}, 1)}, nil
}

func (v *vm) Ready() error       { return nil }
func (v *vm) InKernelPSCI() bool { return false }

func (v *vm) SetSPI(intid uint32, level bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		v.h.record("spi %d %v after close", intid, level)
		return fmt.Errorf("hvtest: SetSPI on a closed VM")
	}
	v.h.record("spi %d %v", intid, level)
	return nil
}

func (v *vm) Doorbell(addr uint64, value uint32) (io.ReadCloser, error) {
	if !v.h.Doorbells {
		return nil, errors.New("hvtest: no doorbells")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	v.h.mu.Lock()
	defer v.h.mu.Unlock()
	if v.h.bells == nil {
		v.h.bells = map[[2]uint64]*os.File{}
	}
	v.h.bells[[2]uint64{addr, uint64(value)}] = w
	return r, nil
}

func (v *vm) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	v.h.record("close")
	return nil
}

func (v *vm) SaveGIC() (gic.State, error) {
	return gic.State{Backend: gic.BackendKVM, BackendVersion: "hvtest", Blob: []byte{1}, ICC: make([]gic.ICCRegs, v.vcpus)}, nil
}

func (v *vm) RestoreGIC(gic.State) error {
	v.h.record("restore-gic")
	return nil
}

func (v *vm) TrackDirty(blockSize uint64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.dirtyWords = int((v.ram/blockSize + 63) / 64)
	return nil
}

// CollectDirty reports no guest writes: the guest runs no code.
func (v *vm) CollectDirty() ([]uint64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return make([]uint64, v.dirtyWords), nil
}

type vcpu struct {
	id   int
	kick chan struct{}
}

func (c *vcpu) Run() (hv.Exit, error) {
	<-c.kick
	return hv.Exit{Kind: hv.ExitKicked}, nil
}

func (c *vcpu) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *vcpu) CompleteMMIORead(uint64) error     { return nil }
func (c *vcpu) CompleteHypercall([4]uint64) error { return nil }
func (c *vcpu) PowerOn(uint64, uint64) error      { return nil }
func (c *vcpu) Close() error                      { return nil }

func (c *vcpu) SaveState() (snapshot.VCPU, error) { return snapshot.VCPU{MPIDR: hv.MPIDR(c.id)}, nil }
func (c *vcpu) RestoreState(snapshot.VCPU) error  { return nil }
