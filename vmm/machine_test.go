package vmm

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/squibvm/squib/hv"
)

// failingHV is a backend whose VM creates vCPUs but fails Ready, as KVM's
// vGIC creation can; it records what was released.
type failingHV struct {
	mu            sync.Mutex
	vcpus, closed int
	vmClosed      bool
}

var errVGIC = errors.New("vGICv3 init: device or resource busy")

func (h *failingHV) Name() string                   { return "failing" }
func (h *failingHV) MaxVCPUs() int                  { return 8 }
func (h *failingHV) NewVM(hv.Config) (hv.VM, error) { return (*failingVM)(h), nil }

type failingVM failingHV

func (vm *failingVM) NewVCPU(int) (hv.VCPU, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.vcpus++
	return (*failingVCPU)(vm), nil
}
func (vm *failingVM) Ready() error              { return errVGIC }
func (vm *failingVM) SetSPI(uint32, bool) error { return nil }
func (vm *failingVM) InKernelPSCI() bool        { return false }
func (vm *failingVM) Close() error              { vm.vmClosed = true; return nil }

type failingVCPU failingHV

func (v *failingVCPU) Run() (hv.Exit, error)             { return hv.Exit{}, errors.New("never run") }
func (v *failingVCPU) Kick()                             {}
func (v *failingVCPU) CompleteMMIORead(uint64) error     { return nil }
func (v *failingVCPU) CompleteHypercall([4]uint64) error { return nil }
func (v *failingVCPU) PowerOn(uint64, uint64) error      { return nil }
func (v *failingVCPU) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed++
	return nil
}

// TestNewFailsCleanly: a backend failing after the vCPUs exist makes New
// return its error with every vCPU, the VM and guest RAM released.
func TestNewFailsCleanly(t *testing.T) {
	h := &failingHV{}
	m, err := New(h, testPlan(t, 3, true), io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if !errors.Is(err, errVGIC) || m != nil {
		t.Fatalf("New = %v, %v; want nil and the backend's error", m, err)
	}
	if h.vcpus != 3 || h.closed != 3 || !h.vmClosed {
		t.Errorf("%d vCPUs created, %d closed, VM closed %v; want 3, 3, true", h.vcpus, h.closed, h.vmClosed)
	}
}
