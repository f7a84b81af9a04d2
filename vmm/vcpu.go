package vmm

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/psci"
	"github.com/squibvm/squib/snapshot"
)

type cmdKind int

const (
	cmdPowerOn cmdKind = iota // reset and start at entry with x0 = arg (boot, PSCI CPU_ON)
	cmdRun                    // start running as is (in-kernel PSCI secondaries)
	cmdPause
	cmdResume
	cmdSave    // read the vCPU's state into saved (on its own thread)
	cmdRestore // write state into the vCPU (on its own thread)
)

// command is a request to a vCPU's goroutine. done, when set, receives the
// result once the vCPU has acted on it.
type command struct {
	kind       cmdKind
	entry, arg uint64
	state      *snapshot.VCPU // cmdSave fills it, cmdRestore reads it
	done       chan<- error
}

// vcpu is the VMM's side of one vCPU: its goroutine owns hv and the OS thread.
type vcpu struct {
	id   int
	cmds chan command
	wake chan struct{} // an interrupt was raised: stop sleeping in WFI

	mu     sync.Mutex // guards hv against a Kick racing with Close
	hv     hv.VCPU
	closed bool
}

func (c *vcpu) kick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hv != nil && !c.closed {
		c.hv.Kick()
	}
}

func (c *vcpu) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.hv.Close()
}

// vcpuState is what a vCPU's loop knows about itself.
type vcpuState struct {
	running bool // powered on (PSCI) and started
	paused  bool
	entered bool // has entered the guest (vCPU 0 then closes Machine.running)
}

// runVCPU is the life of one vCPU: created, run and destroyed on one OS
// thread. The goroutine never unlocks the thread, so the runtime retires the
// thread when the goroutine returns.
func (m *Machine) runVCPU(c *vcpu, created chan<- error) {
	defer m.wg.Done()
	runtime.LockOSThread()
	v, err := m.vm.NewVCPU(c.id)
	if err != nil {
		created <- err
		return
	}
	c.mu.Lock()
	c.hv = v
	c.mu.Unlock()
	created <- nil
	defer c.close()

	var st vcpuState
	for {
		if !st.running || st.paused {
			select {
			case <-m.stopping:
				return
			case cmd := <-c.cmds:
				m.command(c, &st, cmd)
			}
			continue
		}
		select {
		case <-m.stopping:
			return
		case cmd := <-c.cmds:
			m.command(c, &st, cmd)
			continue
		default:
		}
		if c.id == 0 && !st.entered {
			st.entered = true
			close(m.running)
		}
		exit, err := v.Run()
		if err == nil {
			err = m.handleExit(c, &st, exit)
		}
		if err != nil {
			m.end(Failed, err)
			return
		}
	}
}

func (m *Machine) command(c *vcpu, st *vcpuState, cmd command) {
	var err error
	switch cmd.kind {
	case cmdPowerOn:
		if err = c.hv.PowerOn(cmd.entry, cmd.arg); err != nil {
			m.end(Failed, fmt.Errorf("powering on vCPU %d: %w", c.id, err))
			break
		}
		m.psci.Started(c.id)
		st.running = true
		m.log.Info("vCPU powered on", "vcpu", c.id, "entry", fmt.Sprintf("%#x", cmd.entry))
	case cmdRun:
		st.running = true
	case cmdPause:
		st.paused = true
	case cmdResume:
		st.paused = false
	case cmdSave, cmdRestore:
		sv, ok := c.hv.(hv.StateVCPU)
		switch {
		case !ok:
			err = fmt.Errorf("vCPU %d: this backend cannot save or restore vCPU state", c.id)
		case cmd.kind == cmdSave:
			*cmd.state, err = sv.SaveState()
		default:
			err = sv.RestoreState(*cmd.state)
		}
	}
	if cmd.done != nil {
		cmd.done <- err
	}
}

// handleExit acts on one exit on the vCPU's own thread.
func (m *Machine) handleExit(c *vcpu, st *vcpuState, e hv.Exit) error {
	m.exits.count(e)
	switch e.Kind {
	case hv.ExitKicked:
		return nil // commands are looked at before the next Run
	case hv.ExitMMIO:
		if e.Write {
			m.bus.write(e.Addr, e.Size, e.Data)
			return nil
		}
		return c.hv.CompleteMMIORead(m.bus.read(e.Addr, e.Size))
	case hv.ExitHypercall:
		r := m.psci.Handle(c.id, e.FID, e.Args)
		if err := c.hv.CompleteHypercall(r.X); err != nil {
			return err
		}
		return m.psciAction(c, st, r.Action)
	case hv.ExitWFI:
		m.sleep(c, st, e.Sleep)
		return nil
	case hv.ExitSystemOff:
		m.end(PowerOff, nil)
		return nil
	case hv.ExitSystemReset:
		m.end(Reset, nil)
		return nil
	}
	return fmt.Errorf("vCPU %d: unhandled exit %v", c.id, e.Kind)
}

func (m *Machine) psciAction(c *vcpu, st *vcpuState, a psci.Action) error {
	switch a.Kind {
	case psci.CPUOn:
		select {
		case m.vcpus[a.Target].cmds <- command{kind: cmdPowerOn, entry: a.Entry, arg: a.Context}:
		case <-m.stopping:
		}
	case psci.CPUOff:
		st.running = false
		m.log.Info("vCPU powered off", "vcpu", c.id)
		if m.psci.Halted() {
			// Nothing can ever run again: treat it as a power-off
			// rather than leave squibd waiting forever.
			m.log.Warn("the guest turned off its last vCPU")
			m.end(PowerOff, nil)
		}
	case psci.SystemOff:
		m.end(PowerOff, nil)
	case psci.SystemReset:
		m.end(Reset, nil)
	}
	// psci.Suspend: the call returns at once, as a standby state may.
	return nil
}

// sleep waits in WFI until an interrupt is raised, the guest's timer is due
// (d > 0), a command arrives, or the VM ends.
func (m *Machine) sleep(c *vcpu, st *vcpuState, d time.Duration) {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-m.stopping:
	case cmd := <-c.cmds:
		m.command(c, st, cmd)
	case <-c.wake:
	case <-timeout:
	}
}
