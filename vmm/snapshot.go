package vmm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/devices/netdev"
	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/psci"
	"github.com/squibvm/squib/snapshot"
)

// Snapshot writes a snapshot of the paused machine to f: each vCPU saves
// its own state on its own thread, then the interrupt controller and the
// (quiesced) devices are saved, then guest RAM; both files appear
// atomically. A diff snapshot holds only the RAM written since the
// machine's last snapshot (or the one it was restored from), by the guest
// or by squib's devices, and needs dirty-page tracking. The
// machine stays paused, and intact if writing fails; the writes a failed
// snapshot collected go into the next one. The stats say where the time
// went.
func (m *Machine) Snapshot(f snapshot.Files, diff bool) (SnapshotStats, error) {
	var stats SnapshotStats
	err := m.snapshot(f, diff, &stats)
	return stats, err
}

// SnapshotStats says where the time of one Snapshot went.
type SnapshotStats struct {
	Save time.Duration // the vCPUs, the interrupt controller, the devices, the dirty log
	snapshot.CreateStats
}

func (m *Machine) snapshot(f snapshot.Files, diff bool, stats *SnapshotStats) error {
	t := time.Now()
	m.ctl.Lock()
	defer m.ctl.Unlock()
	switch {
	case !m.paused:
		return errors.New("the microVM must be paused before a snapshot is taken")
	case diff && !m.tracking:
		return errors.New("a diff snapshot needs dirty-page tracking: set track_dirty_pages when configuring or loading the microVM")
	case diff && m.lastID == "":
		return errors.New("a diff snapshot needs an earlier snapshot to apply to: take a full snapshot first")
	}
	sv, ok := m.vm.(hv.StateVM)
	if !ok {
		return fmt.Errorf("the %s backend cannot save interrupt-controller state", m.backend)
	}
	st := &snapshot.State{
		Header: snapshot.Header{Backend: m.backend, RAMBase: m.ram.Base(), RAMSize: m.ram.Size()},
		Machine: snapshot.Machine{
			Config: snapshot.Config{VCPUs: m.plan.VCPUs, MemoryMiB: m.plan.MemoryMiB, Cmdline: m.plan.Cmdline},
			VCPUs:  make([]snapshot.VCPU, len(m.vcpus)),
		},
	}
	for i := range m.vcpus {
		if err := m.tell(i, command{kind: cmdSave, state: &st.Machine.VCPUs[i]}); err != nil {
			return err
		}
	}
	// With PSCI in the kernel, squib never sees CPU_ON: the backend's MP
	// state, which SaveState read, is the truth. Otherwise squib's is.
	if !m.vm.InKernelPSCI() {
		for i, p := range m.psci.PowerStates() {
			st.Machine.VCPUs[i].Power = p
		}
	}
	var err error
	if st.Machine.GIC, err = sv.SaveGIC(); err != nil {
		return err
	}
	st.Header.BackendVersion = st.Machine.GIC.BackendVersion
	if st.Machine.Devices, err = m.saveDevices(); err != nil {
		return err
	}
	o := snapshot.CreateOptions{BlockSize: m.blockSize, Stats: &stats.CreateStats}
	var dirty snapshot.Bitmap
	if m.tracking {
		if dirty, err = m.collectDirty(sv); err != nil {
			return err
		}
	}
	stats.Save = time.Since(t)
	if diff {
		o.Dirty, st.Header.Parent = dirty, m.lastID
	}
	if err := snapshot.Create(f, st, m.ram.Bytes(), o); err != nil {
		m.carry = dirty
		return err
	}
	m.lastID, m.carry = st.Header.ID, nil
	return nil
}

// collectDirty returns the blocks written since the last snapshot that was
// written: the backend's log of the guest's writes and RAM's of the
// devices' since the last call (the devices are quiesced, so the log is
// complete), plus m.carry.
func (m *Machine) collectDirty(sv hv.StateVM) (snapshot.Bitmap, error) {
	guest, err := sv.CollectDirty()
	if err != nil {
		return nil, err
	}
	devices := m.ram.TakeWrites() // the same blocks as the backend's: see trackDirty
	n := int(m.ram.Size() / uint64(m.blockSize))
	b := snapshot.NewBitmap(n)
	for i := range n {
		if (guest[i/64]|devices[i/64])&(1<<(i%64)) != 0 || (m.carry != nil && m.carry.Has(i)) {
			b.Set(i)
		}
	}
	return b, nil
}

// tell sends one command to vCPU i and waits for its result.
func (m *Machine) tell(i int, cmd command) error {
	done := make(chan error, 1)
	cmd.done = done
	select {
	case m.vcpus[i].cmds <- cmd:
	case <-m.stopping:
		return errors.New("the VM has ended")
	}
	select {
	case err := <-done:
		return err
	case <-m.stopping:
		return errors.New("the VM has ended")
	}
}

func (m *Machine) saveDevices() (map[string]cbor.RawMessage, error) {
	saved := make(map[string]cbor.RawMessage, len(m.devices))
	for _, d := range m.devices {
		b, err := d.Save()
		if err != nil {
			return nil, fmt.Errorf("saving %s: %w", d.Name(), err)
		}
		saved[d.Name()] = b
	}
	return saved, nil
}

// restoreDevices restores every device of the board from saved, which
// must hold a state for each and for no other.
func (m *Machine) restoreDevices(saved map[string]cbor.RawMessage) error {
	for name := range saved {
		if !slices.ContainsFunc(m.devices, func(d Device) bool { return d.Name() == name }) {
			return fmt.Errorf("the snapshot has the state of a device %q, which squib's board does not have", name)
		}
	}
	for _, d := range m.devices {
		b, ok := saved[d.Name()]
		if !ok {
			return fmt.Errorf("the snapshot has no %s state", d.Name())
		}
		if err := d.Restore(b); err != nil {
			return fmt.Errorf("%s state: %w", d.Name(), err)
		}
	}
	return nil
}

// RestoreOptions say how Restore brings a snapshot back.
type RestoreOptions struct {
	// Power decides which vCPUs run: psci.RestoreSaved (the zero value)
	// each as saved, psci.RestoreBSPOnly the boot vCPU alone.
	Power psci.RestorePolicy
	// CopyMemory reads the memory file into fresh guest RAM, checking every
	// block, instead of mapping it: for files that may change while the VM
	// runs.
	CopyMemory bool
	// TrackDirtyPages records the guest's writes from the restore on, so
	// that a diff snapshot of the restored machine applies to this one.
	TrackDirtyPages bool
	// VsockUDS, if set, is the vsock device's socket path instead of the
	// saved one (Firecracker's vsock_override): two clones of one snapshot
	// cannot share one.
	VsockUDS string
	// Nets override the backends of the saved network interfaces
	// (Firecracker's network_overrides), each naming an interface of the
	// snapshot.
	Nets []NetOverride
}

// NetOverride gives a restored network interface another backend of the
// kind it had: a tap's name (Firecracker's host_dev_name), a unixgram
// peer's socket, or the user-mode network's published ports.
type NetOverride struct {
	ID         string
	Tap        string
	Unixgram   string
	Publish    []netdev.Forward
	SetPublish bool // Publish replaces the saved forwards, even with none
}

// override applies o to the saved interfaces.
func (o NetOverride) override(nets []netdev.Config) error {
	i := slices.IndexFunc(nets, func(c netdev.Config) bool { return c.ID == o.ID })
	if i < 0 {
		return fmt.Errorf("network_overrides: the snapshot has no network interface %q", o.ID)
	}
	n := &nets[i]
	switch {
	case o.Tap != "" && n.Tap == "":
		return fmt.Errorf("network_overrides: interface %s has no tap to replace", o.ID)
	case o.Unixgram != "" && n.Unixgram == "":
		return fmt.Errorf("network_overrides: interface %s has no unixgram socket to replace", o.ID)
	case o.SetPublish && !n.User:
		return fmt.Errorf("network_overrides: interface %s is not on the user-mode network, which alone publishes ports", o.ID)
	}
	if o.Tap != "" {
		n.Tap = o.Tap
	}
	if o.Unixgram != "" {
		n.Unixgram = o.Unixgram
	}
	if o.SetPublish {
		n.Publish = o.Publish
	}
	return n.Check()
}

// Restore builds a machine from snapshot f on hypervisor h. Guest RAM maps
// the memory file copy-on-write, so the cost does not grow with guest
// memory and clones share the host's page cache (unless o.CopyMemory). The
// board has the devices whose states the snapshot holds, where they were
// saved. The machine waits for Start.
func Restore(h hv.Hypervisor, f snapshot.Files, o RestoreOptions, console io.Writer, log *slog.Logger) (*Machine, error) {
	st, err := snapshot.Load(snapshot.Expect{Backend: h.Name()}, f)
	if err != nil {
		return nil, err
	}
	if st.Header.RAMBase != RAMBase {
		return nil, fmt.Errorf("snapshot %s: RAM at %#x, squib's board has it at %#x", f.State, st.Header.RAMBase, uint64(RAMBase))
	}
	saved := make([]psci.Power, len(st.Machine.VCPUs))
	for i, c := range st.Machine.VCPUs {
		saved[i] = c.Power
	}
	shape, err := psci.RestoreShape(saved, o.Power)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", f.State, err)
	}
	c := st.Machine.Config
	_, hasRNG := st.Machine.Devices[rngName]
	drives, err := savedDrives(st.Machine.Devices)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", f.State, err)
	}
	sock, err := savedVsock(st.Machine.Devices)
	switch {
	case err != nil:
		return nil, fmt.Errorf("snapshot %s: %w", f.State, err)
	case o.VsockUDS != "" && sock == nil:
		return nil, fmt.Errorf("snapshot %s has no vsock device for vsock_override", f.State)
	case o.VsockUDS != "":
		sock.UDSPath = o.VsockUDS
	}
	nets, err := savedNets(st.Machine.Devices)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", f.State, err)
	}
	for _, n := range o.Nets {
		if err := n.override(nets); err != nil {
			return nil, err
		}
	}
	plan := &Plan{Config: Config{Cmdline: c.Cmdline, VCPUs: c.VCPUs, MemoryMiB: c.MemoryMiB, TrackDirtyPages: o.TrackDirtyPages, RNG: hasRNG,
		Drives: drives, Vsock: sock, Nets: nets}, RAMSize: st.Header.RAMSize}
	if plan.VCPUs > h.MaxVCPUs() {
		return nil, fmt.Errorf("snapshot %s has %d vCPUs; the %s backend supports at most %d here", f.State, plan.VCPUs, h.Name(), h.MaxVCPUs())
	}
	if err := plan.layOut(); err != nil {
		return nil, err
	}
	ram, err := restoreRAM(f.Memory, st.Header.RAMSize, o.CopyMemory)
	if err != nil {
		return nil, err
	}
	m, err := build(h, plan, ram, console, log)
	if errors.Is(err, vsock.ErrInUse) {
		return nil, fmt.Errorf("%w (a clone of this snapshot?): give this microVM a socket of its own with vsock_override (squibd snapshot load --vsock-uds PATH)", err)
	}
	if err != nil {
		return nil, err
	}
	// A diff of this machine applies to the loaded snapshot, in its blocks.
	m.lastID, m.blockSize = st.Header.ID, int(st.Header.Memory.BlockSize)
	// Until Start it is a paused machine, which can be snapshotted again.
	m.paused = true
	err = m.restore(st, shape)
	if err == nil && o.TrackDirtyPages {
		err = m.trackDirty()
	}
	if err != nil {
		m.end(Failed, err)
		m.Wait()
		return nil, err
	}
	return m, nil
}

// restoreRAM maps the memory file at path as guest RAM, or copies it in.
func restoreRAM(path string, size uint64, copyIn bool) (*memory.RAM, error) {
	if !copyIn {
		mem, err := snapshot.MapMemory(path)
		if err != nil {
			return nil, err
		}
		return memory.Adopt(RAMBase, mem, snapshot.Unmap), nil
	}
	ram, err := memory.New(RAMBase, size)
	if err != nil {
		return nil, err
	}
	if err := snapshot.LoadMemory(path, ram.Bytes()); err != nil {
		ram.Close()
		return nil, err
	}
	return ram, nil
}

// restore writes the saved state into a freshly built machine: vCPUs (on
// their threads, each with its power state from shape), then the interrupt
// controller, devices (left quiesced until Start) and PSCI power.
func (m *Machine) restore(st *snapshot.State, shape []psci.Power) error {
	sv, ok := m.vm.(hv.StateVM)
	if !ok {
		return fmt.Errorf("the %s backend cannot restore interrupt-controller state", m.backend)
	}
	for i := range m.vcpus {
		s := st.Machine.VCPUs[i]
		s.Power = shape[i]
		if err := m.tell(i, command{kind: cmdRestore, state: &s}); err != nil {
			return fmt.Errorf("restoring vCPU %d: %w", i, err)
		}
	}
	if err := sv.RestoreGIC(st.Machine.GIC); err != nil {
		return err
	}
	if err := m.restoreDevices(st.Machine.Devices); err != nil {
		return err
	}
	return m.psci.SetPowerStates(shape)
}
