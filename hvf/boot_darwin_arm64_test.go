//go:build darwin && arm64

package hvf_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/hvf"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/vmm"
)

// Tests that need Hypervisor.framework; see the package doc for how to run
// them. A process holds one VM at a time, so none of them is parallel.

const notEntitled = `the test binary lacks the com.apple.security.hypervisor entitlement: run go test -exec "$PWD/hvf/testdata/codesign-exec.sh" ./hvf/ from the repository root`

// openHVF opens the framework, or skips the test with one line saying why.
func openHVF(t *testing.T) *hvf.Hypervisor {
	t.Helper()
	h, err := hvf.Open()
	switch {
	case errors.Is(err, hvf.ErrMacOSTooOld):
		t.Skip(err)
	case errors.Is(err, hvf.ErrNotEntitled):
		t.Skip(notEntitled)
	case err != nil:
		t.Fatal(err)
	}
	return h
}

// newVM creates a VM with 16 MiB of RAM at vmm.RAMBase, closed when the test
// ends.
func newVM(t *testing.T, h *hvf.Hypervisor, vcpus int) (*memory.RAM, *hvf.VM) {
	t.Helper()
	ram, err := memory.New(vmm.RAMBase, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	layout, err := gic.NewLayout(vcpus)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := h.NewVM(hv.Config{VCPUs: vcpus, RAMBase: vmm.RAMBase, RAM: ram.Bytes(), GIC: layout})
	if err != nil {
		ram.Close()
		if errors.Is(err, hvf.ErrNotEntitled) {
			t.Skip(notEntitled)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := vm.Close(); err != nil {
			t.Error(err)
		}
		ram.Close()
	})
	return ram, vm.(*hvf.VM)
}

// onThread runs fn on a new goroutine locked to its OS thread for good, as
// squib's core runs a vCPU; the thread ends with the goroutine.
func onThread(fn func() error) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		done <- fn()
	}()
	return <-done
}

// onVCPU0 runs fn on a thread of its own (onThread) with vm's vCPU 0
// created and vm Ready; the vCPU is closed when fn returns.
func onVCPU0(vm *hvf.VM, fn func(c *hvf.VCPU) error) error {
	return onThread(func() error {
		c, err := vm.NewVCPU(0)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := vm.Ready(); err != nil {
			return err
		}
		return fn(c.(*hvf.VCPU))
	})
}

// syncBuffer collects console output written from vCPU threads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// guestFiles reads the lab guest's Image and initrd.gz, or skips the test
// if the environment does not name them.
func guestFiles(t *testing.T) (kernel, initrd []byte) {
	t.Helper()
	ip, rp := os.Getenv("SQUIB_GUEST_IMAGE"), os.Getenv("SQUIB_GUEST_INITRD")
	if ip == "" || rp == "" {
		t.Skip("SQUIB_GUEST_IMAGE and SQUIB_GUEST_INITRD are unset: point them at the lab guest's Image and initrd.gz")
	}
	kernel, err := os.ReadFile(ip)
	if err == nil {
		initrd, err = os.ReadFile(rp)
	}
	if err != nil {
		t.Fatal(err)
	}
	return kernel, initrd
}

// TestBoot boots the lab guest (lab/guest-init) through squib's core: with
// one vCPU to a PSCI power-off, and with two, the secondary started by the
// guest's PSCI CPU_ON.
func TestBoot(t *testing.T) {
	kernel, rd := guestFiles(t)
	h := openHVF(t)
	for _, c := range []struct {
		cpus int
		test string
		want []string
	}{
		{1, "poweroff", []string{"SQUIB-GUEST-INIT", "SQUIB-GUEST-POWEROFF"}},
		{2, "cpus", []string{"SQUIB-GUEST-INIT", "SQUIB-GUEST-NPROC=2", "SQUIB-GUEST-POWEROFF"}},
	} {
		t.Run(fmt.Sprintf("%dcpu-%s", c.cpus, c.test), func(t *testing.T) {
			plan, err := vmm.Prepare(vmm.Config{
				Kernel: loader.Bytes(kernel), Initrd: loader.Bytes(rd), VCPUs: c.cpus, MemoryMiB: 256,
				Cmdline: "console=ttyAMA0 panic=-1 squib.test=" + c.test,
			})
			if err != nil {
				t.Fatal(err)
			}
			out := runToPowerOff(t, h, plan)
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("console lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// runToPowerOff boots plan and waits, at most 2 minutes, for the guest to
// power off; it returns the console.
func runToPowerOff(t *testing.T, h *hvf.Hypervisor, plan *vmm.Plan) string {
	t.Helper()
	var console syncBuffer
	m, err := vmm.New(h, plan, &console, slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if errors.Is(err, hvf.ErrNotEntitled) {
		t.Skip(notEntitled)
	}
	if err != nil {
		t.Fatal(err)
	}
	m.Start(nil)
	timeout := time.AfterFunc(2*time.Minute, m.Stop)
	defer timeout.Stop()
	outcome, err := m.Wait()
	out := console.String()
	if err != nil || outcome != vmm.PowerOff {
		t.Fatalf("the VM ended with %v (%v), want a power-off; console:\n%s", outcome, err, out)
	}
	return out
}
