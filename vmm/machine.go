package vmm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/devices/pl011"
	"github.com/squibvm/squib/devices/pl031"
	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/psci"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/virtio"
)

// Outcome is how a VM ended.
type Outcome int

const (
	PowerOff Outcome = iota // the guest called PSCI SYSTEM_OFF
	Reset                   // the guest called PSCI SYSTEM_RESET
	Stopped                 // Stop was called
	Failed                  // a vCPU or device failed; Wait returns the error
)

func (o Outcome) String() string {
	switch o {
	case PowerOff:
		return "power-off"
	case Reset:
		return "reset"
	case Stopped:
		return "stopped"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Machine is a booted (or booting) VM.
type Machine struct {
	log     *slog.Logger
	plan    *Plan
	ram     *memory.RAM
	vm      hv.VM
	psci    *psci.Machine
	uart    *pl011.UART // also among devices; fed the console input
	devices []Device    // in bus order; see Device for who calls what when
	bus     bus
	vcpus   []*vcpu
	wg      sync.WaitGroup // vCPU goroutines

	endOnce  sync.Once
	stopping chan struct{} // closed when the VM ends
	running  chan struct{} // closed by vCPU 0's goroutine when it first enters the guest
	outcome  Outcome
	err      error

	ctl    sync.Mutex // serializes Pause, Resume, Snapshot, UpdateDrive and a restored machine's Start
	paused bool       // under ctl: the vCPUs stopped and the devices quiesced
	exits  exitCounters

	backend string // hv.Hypervisor.Name, for snapshots
	boot    bool   // Start boots the kernel (New), not a restored state (Restore)

	// Dirty-page tracking and diff snapshots, under ctl.
	blockSize int             // snapshot block size; the tracking unit when tracking
	tracking  bool            // the backend records guest writes to RAM, and RAM squib's
	lastID    string          // the snapshot a diff would apply to ("" if none)
	carry     snapshot.Bitmap // blocks dirtied since lastID that a failed snapshot collected
}

// New builds the machine described by plan on hypervisor h: guest RAM with
// the kernel, initrd and device tree loaded, the devices, and one locked
// goroutine per vCPU with its vCPU created. The vCPUs wait for Start.
func New(h hv.Hypervisor, plan *Plan, console io.Writer, log *slog.Logger) (*Machine, error) {
	if plan.VCPUs > h.MaxVCPUs() {
		return nil, fmt.Errorf("--cpus %d: the %s backend supports at most %d vCPUs here", plan.VCPUs, h.Name(), h.MaxVCPUs())
	}
	ram, err := memory.New(RAMBase, plan.RAMSize)
	if err != nil {
		return nil, err
	}
	if err := loader.Load(ram, plan.Layout, plan.Image, plan.Initrd); err != nil {
		ram.Close()
		return nil, err
	}
	if err := ram.Write(plan.Layout.DTB, plan.DTB); err != nil {
		ram.Close()
		return nil, fmt.Errorf("loading the device tree: %w", err)
	}
	m, err := build(h, plan, ram, console, log)
	if err != nil {
		return nil, err
	}
	m.boot = true
	if plan.TrackDirtyPages {
		if err := m.trackDirty(); err != nil {
			m.end(Failed, err)
			m.Wait()
			return nil, err
		}
	}
	return m, nil
}

// build makes the machine around loaded RAM: the VM, PSCI, the devices and
// the vCPU goroutines with their vCPUs created, then Ready. It owns ram from
// the call on, releasing it on failure.
func build(h hv.Hypervisor, plan *Plan, ram *memory.RAM, console io.Writer, log *slog.Logger) (_ *Machine, err error) {
	m := &Machine{log: log, plan: plan, ram: ram, backend: h.Name(), stopping: make(chan struct{}), running: make(chan struct{}), bus: bus{log: log},
		blockSize: snapshot.DefaultBlockSize()}
	defer func() {
		if err != nil {
			m.end(Failed, err)
			m.wg.Wait()
			m.closeDevices()
			if m.vm != nil {
				m.vm.Close()
			}
			m.ram.Close()
		}
	}()
	if m.vm, err = h.NewVM(hv.Config{VCPUs: plan.VCPUs, RAMBase: RAMBase, RAM: m.ram.Bytes(), GIC: plan.GIC}); err != nil {
		return nil, err
	}
	if m.vm.InKernelPSCI() {
		log.Warn("this KVM has no SMCCC filter (Linux < 6.4): PSCI is handled by the kernel, not by squib")
	}

	mpidrs := make([]uint64, plan.VCPUs)
	for i := range mpidrs {
		mpidrs[i] = hv.MPIDR(i)
	}
	m.psci, err = psci.New(psci.Config{
		MPIDRs:     mpidrs,
		ValidEntry: func(addr uint64) bool { return m.ram.Contains(addr, 4) },
	})
	if err != nil {
		return nil, err
	}

	m.uart = pl011.New(console, m.irqLine(plan.uartSPI))
	m.addDevice(uart{m.uart})
	m.addDevice(rtc{pl031.New(nil)})
	for _, s := range plan.virtio {
		dlog := log.With("device", s.name)
		dev, err := s.dev(m.ram, dlog)
		if err != nil {
			return nil, err
		}
		t, err := virtio.New(dev, m.ram, m.irqLine(s.spi), dlog)
		if err != nil {
			closeDevice(dev)
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		if n, ok := dev.(notifier); ok {
			n.SetNotify(t.Notify)
		}
		v := &virtioDevice{Transport: t, dev: dev, name: s.name, base: s.base, spi: s.spi}
		m.addDevice(v)
		v.ringDoorbells(m.vm, log)
	}

	// One at a time, in index order: KVM gives the redistributor frames
	// out in creation order, and a guest restored into a VM whose frames
	// moved would program another vCPU's.
	created := make(chan error, 1)
	for i := range plan.VCPUs {
		c := &vcpu{id: i, cmds: make(chan command, 4), wake: make(chan struct{}, 1)}
		m.vcpus = append(m.vcpus, c)
		m.wg.Add(1)
		go m.runVCPU(c, created)
		if err := <-created; err != nil {
			return nil, err
		}
	}
	if err := m.vm.Ready(); err != nil {
		return nil, err
	}
	return m, nil
}

// trackDirty starts dirty-page tracking, before any vCPU runs: the
// backend's log of the guest's writes, and RAM's of squib's own (a
// device's), in the same blocks.
func (m *Machine) trackDirty() error {
	sv, ok := m.vm.(hv.StateVM)
	if !ok {
		return fmt.Errorf("the %s backend cannot track dirty pages", m.backend)
	}
	if err := sv.TrackDirty(uint64(m.blockSize)); err != nil {
		return err
	}
	if err := m.ram.TrackWrites(uint64(m.blockSize)); err != nil {
		return err
	}
	m.tracking = true
	return nil
}

// irqLine returns the function a device calls to drive its interrupt line.
// Raising a line also wakes vCPUs sleeping in WFI in squib (HVF). A virtio
// transport calls it with its register lock held, so it never calls into a
// device, and on failure it only ends the machine (end closes nothing).
func (m *Machine) irqLine(spi gic.SPI) func(bool) {
	return func(level bool) {
		if err := m.vm.SetSPI(spi.INTID(), level); err != nil {
			m.end(Failed, err)
			return
		}
		if level {
			for _, c := range m.vcpus {
				select {
				case c.wake <- struct{}{}:
				default:
				}
			}
		}
	}
}

// Start lets the guest run. A booted machine's boot vCPU enters the kernel
// with x0 pointing at the device tree; secondaries stay off until the
// guest's PSCI CPU_ON (with in-kernel PSCI every vCPU runs and KVM holds
// the secondaries). A restored machine runs the vCPUs its restore policy
// powered on, from their saved state; with in-kernel PSCI it runs them all,
// and KVM holds those restored stopped until the guest's CPU_ON.
func (m *Machine) Start(input io.Reader) {
	if input != nil {
		go m.uart.Feed(input)
	}
	switch {
	case !m.boot:
		// Restore left the devices quiesced: they start before the vCPUs.
		m.ctl.Lock()
		for _, d := range m.devices {
			d.Unquiesce()
		}
		m.paused = false
		m.ctl.Unlock()
		for i, c := range m.vcpus {
			if m.psci.Power(i) == psci.On || m.vm.InKernelPSCI() {
				c.cmds <- command{kind: cmdRun}
			}
		}
	default:
		m.vcpus[0].cmds <- command{kind: cmdPowerOn, entry: m.plan.Layout.Kernel, arg: m.plan.Layout.DTB}
		if m.vm.InKernelPSCI() {
			for _, c := range m.vcpus[1:] {
				c.cmds <- command{kind: cmdRun}
			}
		}
	}
}

// Running is closed when vCPU 0 first enters the guest.
func (m *Machine) Running() <-chan struct{} { return m.running }

// Config is the configuration m runs: for a restored machine, the snapshot's
// vCPUs, memory and command line, with the restore's dirty-page tracking;
// its drives with the files they have now (see UpdateDrive), its vsock
// with the socket it has (see RestoreOptions.VsockUDS). Its boot files
// are not kept open.
func (m *Machine) Config() Config {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	c := m.plan.Config
	c.Kernel, c.Initrd = loader.File{}, loader.File{}
	c.Drives = slices.Clone(c.Drives)
	c.Nets = slices.Clone(c.Nets)
	if c.Vsock != nil {
		v := *c.Vsock
		c.Vsock = &v
	}
	return c
}

// Pause stops every vCPU at its next exit, then quiesces every device, and
// returns once all have stopped: the guest's state then holds still.
func (m *Machine) Pause() error {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	if err := m.broadcast(cmdPause); err != nil {
		return err
	}
	for _, d := range m.devices {
		d.Quiesce()
	}
	m.paused = true
	return nil
}

// Resume lets the devices work again, then the vCPUs run.
func (m *Machine) Resume() error {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	for _, d := range m.devices {
		d.Unquiesce()
	}
	if err := m.broadcast(cmdResume); err != nil {
		return err
	}
	m.paused = false
	return nil
}

// UpdateDrive makes the image at path drive id's medium (PATCH /drives) on
// a started machine, running or paused, or a restored one: the drive's
// device is quiesced while blk swaps its file, so that no request is
// half-served across the swap, and the guest's driver is then told of the
// new capacity (configuration space, ConfigGeneration and a configuration
// change interrupt). A paused machine's device stays quiesced until Resume.
// On an error the drive keeps its file.
func (m *Machine) UpdateDrive(id, path string) error {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	select {
	case <-m.stopping:
		return errors.New("the VM has ended")
	default:
	}
	i := slices.IndexFunc(m.plan.Drives, func(d blk.Config) bool { return d.ID == id })
	if i < 0 {
		return fmt.Errorf("the microVM has no drive %q", id)
	}
	j := slices.IndexFunc(m.devices, func(d Device) bool { return d.Name() == driveName(id) })
	v := m.devices[j].(*virtioDevice)
	d := v.dev.(drive)
	v.Quiesce()
	if !m.paused {
		defer v.Unquiesce()
	}
	if err := d.Swap(path); err != nil {
		return err
	}
	m.plan.Drives[i].Path = path
	return v.UpdateConfig(0, d.Config())
}

// broadcast sends a command to every vCPU and waits for all to act on it;
// called with ctl held.
func (m *Machine) broadcast(kind cmdKind) error {
	done := make(chan error, len(m.vcpus))
	for _, c := range m.vcpus {
		select {
		case c.cmds <- command{kind: kind, done: done}:
			c.kick()
		case <-m.stopping:
			return errors.New("the VM has ended")
		}
	}
	var errs []error
	for range m.vcpus {
		select {
		case err := <-done:
			errs = append(errs, err)
		case <-m.stopping:
			return errors.New("the VM has ended")
		}
	}
	return errors.Join(errs...)
}

// Stop ends the VM.
func (m *Machine) Stop() { m.end(Stopped, nil) }

// end records the first outcome and makes every vCPU leave its loop.
func (m *Machine) end(o Outcome, err error) {
	m.endOnce.Do(func() {
		m.outcome, m.err = o, err
		close(m.stopping)
		for _, c := range m.vcpus {
			c.kick()
		}
	})
}

// Wait blocks until the VM has ended and every vCPU is gone, releases the
// devices (the guest's last console output is written), the VM and its
// memory, and reports how it ended.
func (m *Machine) Wait() (Outcome, error) {
	<-m.stopping
	m.wg.Wait()
	m.ctl.Lock() // not while UpdateDrive swaps a drive's file
	m.closeDevices()
	m.ctl.Unlock()
	err := m.vm.Close()
	if cerr := m.ram.Close(); err == nil {
		err = cerr
	}
	if m.err != nil {
		err = m.err
	}
	return m.outcome, err
}
