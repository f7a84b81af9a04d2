package api

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/squibvm/squib/devices/netdev"
	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/snapshot"
	"github.com/squibvm/squib/vmm"
)

// Options configure a Controller.
type Options struct {
	ID      string // the instance's name, reported by GET /
	Version string // squibd's version, reported by GET / and GET /version
	// OpenHypervisor opens the backend when the microVM starts.
	OpenHypervisor func() (hv.Hypervisor, error)
	Console        io.Writer // the guest's serial console output
	Input          io.Reader // the guest's serial console input, or nil
	// Log is where logs go until PUT /logger says otherwise; LogLevel is
	// its level.
	Log      io.Writer
	LogLevel slog.Level
}

// Controller owns one microVM: its configuration before boot and the
// running vmm.Machine after. Every request goes through its mutex, the one
// serialized path into the VMM (each vCPU keeps its own command channel
// below it); callers read request bodies before they take it, and requests
// open and check the files they name before it too, so that a file that
// makes its reader or writer wait (a FIFO) holds up no other request. Logs
// and metrics are written without waiting (see sink).
type Controller struct {
	opts    Options
	log     atomic.Pointer[slog.Logger]
	metrics *metrics
	done    chan struct{} // closed when a started microVM has ended

	mu       sync.Mutex // let go with unlock
	view     atomic.Pointer[view]
	format   logFormat
	machine  machineConfig
	boot     *BootSource     // nil until PUT /boot-source
	entropy  *Entropy        // nil until PUT /entropy: no virtio-rng device
	drives   []Drive         // PUT /drives, in order, checked, with defaults filled in
	vsock    *Vsock          // nil until PUT /vsock; without vsock_id
	nets     []netdev.Config // PUT /network-interfaces, in order, checked
	logCfg   *Logger         // the last PUT /logger, for GET /vm/config
	metCfg   *Metrics
	bootPath bool // a boot resource was configured: no snapshot load
	m        *vmm.Machine
	paused   bool
	// pendingStart: a snapshot was loaded without resume_vm; it is
	// "Paused" and starts running at the first PATCH /vm Resumed.
	pendingStart bool

	outcome vmm.Outcome // set before done is closed
	err     error
}

// NewController returns the controller of a microVM that is not started.
func NewController(opts Options) *Controller {
	c := &Controller{
		opts:    opts,
		metrics: newMetrics(routes),
		done:    make(chan struct{}),
		format:  logFormat{out: opts.Log, level: opts.LogLevel, showLevel: true},
		machine: defaultMachine,
	}
	c.log.Store(c.format.logger())
	c.mu.Lock()
	c.unlock()
	return c
}

// Log returns the current logger.
func (c *Controller) Log() *slog.Logger { return c.log.Load() }

// Done is closed once a started microVM has ended; see Outcome.
func (c *Controller) Done() <-chan struct{} { return c.done }

// Outcome reports how the microVM ended; call it after Done is closed.
func (c *Controller) Outcome() (vmm.Outcome, error) { return c.outcome, c.err }

// RecordStartup puts the time from process start to a listening API socket,
// in wall-clock and CPU time, into the metrics.
func (c *Controller) RecordStartup(wall, cpu time.Duration) {
	c.metrics.store("api_server", "process_startup_time_us", wall)
	c.metrics.store("api_server", "process_startup_time_cpu_us", cpu)
}

// Stop ends the microVM, if it was started, and waits until it has ended.
func (c *Controller) Stop() {
	c.mu.Lock()
	m := c.m
	c.mu.Unlock()
	if m != nil {
		m.Stop()
		<-c.done
	}
}

// Close writes a last metrics line if the microVM ran, and closes the
// metrics and log files. Call it last.
func (c *Controller) Close() {
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		c.writeMetrics()
	}
	c.metrics.close()
	if c.format.file != nil {
		c.format.file.Close()
	}
}

// info answers GET /.
func (c *Controller) info() InstanceInfo { return c.view.Load().info }

func (c *Controller) machineConfig() MachineConfig { return c.view.Load().machine }

// fullConfig answers GET /vm/config.
func (c *Controller) fullConfig() FullConfig { return c.view.Load().full }

// A view is what the GET requests answer, published whenever c.mu is let
// go, so that they never wait for a request that holds it (a snapshot
// written to a slow disk, a machine being built).
type view struct {
	info    InstanceInfo
	machine MachineConfig
	full    FullConfig
}

// unlock publishes the view and lets c.mu go.
func (c *Controller) unlock() {
	state := StateNotStarted
	switch {
	case c.m != nil && c.paused:
		state = StatePaused
	case c.m != nil:
		state = StateRunning
	}
	boot := BootSource{KernelImagePath: new(string)}
	if c.boot != nil {
		boot = *c.boot
	}
	mc := c.machine.wire()
	none := []json.RawMessage{}
	nets := []NetworkInterface{}
	for _, n := range c.nets {
		nets = append(nets, wireNet(n))
	}
	c.view.Store(&view{
		info:    InstanceInfo{ID: c.opts.ID, State: state, VMMVersion: c.opts.Version, AppName: "squibd"},
		machine: mc,
		full: FullConfig{BootSource: &boot, MachineConfig: &mc, Logger: c.logCfg, Metrics: c.metCfg, Entropy: c.entropy,
			Drives: append([]Drive{}, c.drives...), Vsock: c.vsock, NetworkInterfaces: nets, Pmem: none},
	})
	c.mu.Unlock()
}

// putMachineConfig sets the machine configuration; optional fields that
// are left out take their defaults.
func (c *Controller) putMachineConfig(u MachineConfig) error {
	return c.setMachineConfig(u, true)
}

// patchMachineConfig changes the fields u sets.
func (c *Controller) patchMachineConfig(u MachineConfig) error {
	return c.setMachineConfig(u, false)
}

func (c *Controller) setMachineConfig(u MachineConfig, put bool) error {
	if put {
		if err := required(field{"vcpu_count", u.VCPUCount != nil}, field{"mem_size_mib", u.MemSizeMiB != nil}); err != nil {
			return err
		}
	} else if u.empty() {
		return errEmptyPatch
	}
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		return errAfterStart
	}
	base := c.machine
	if put {
		base = defaultMachine
	}
	mc, err := base.update(u)
	if err != nil {
		return fmt.Errorf("Machine config error: %w", err)
	}
	c.machine, c.bootPath = mc, true
	return nil
}

// Requests whose files may take time to open (a FIFO, a slow disk) open
// them before they take c.mu, so that no other request waits for them: they
// check the phase first without holding it, then again under it.

// beforeStart returns errAfterStart once the microVM has started.
func (c *Controller) beforeStart() error {
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		return errAfterStart
	}
	return nil
}

func (c *Controller) setBootSource(b BootSource) error {
	if err := required(field{"kernel_image_path", b.KernelImagePath != nil}); err != nil {
		return err
	}
	if err := c.beforeStart(); err != nil {
		return err
	}
	if err := checkReadable(*b.KernelImagePath); err != nil {
		return fmt.Errorf("Boot source error: The kernel file cannot be opened: %w", err)
	}
	if b.InitrdPath != nil {
		if err := checkReadable(*b.InitrdPath); err != nil {
			return fmt.Errorf("Boot source error: The initrd file cannot be opened: %w", err)
		}
	}
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		return errAfterStart
	}
	c.boot, c.bootPath = &b, true
	return nil
}

// setEntropy gives the microVM an entropy device (PUT /entropy). Like
// Firecracker, a second PUT replaces the first, and the device is a boot
// resource: a snapshot load is refused after it.
func (c *Controller) setEntropy(e Entropy) error {
	if err := e.check(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		return errAfterStart
	}
	c.entropy, c.bootPath = &Entropy{}, true // a rate limiter that does not limit is none
	return nil
}

// setVsock gives the microVM a vsock device (PUT /vsock), before the start
// as on Firecracker; a second PUT replaces the first. The socket path is
// checked before c.mu is taken (nothing there, or a stale socket), and
// bound when the microVM starts, as drives are opened then.
func (c *Controller) setVsock(v Vsock) error {
	if err := v.check(); err != nil {
		return err
	}
	if err := c.beforeStart(); err != nil {
		return err
	}
	if err := vsock.CheckPath(*v.UDSPath); err != nil {
		return fmt.Errorf("Vsock config error: %w", err)
	}
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		return errAfterStart
	}
	if v.VsockID != nil {
		c.Log().Info("PUT /vsock: vsock_id field is deprecated.") // Firecracker's words
	}
	c.vsock, c.bootPath = &Vsock{GuestCID: v.GuestCID, UDSPath: v.UDSPath}, true
	return nil
}

// setDrive adds a drive, or replaces the one with its id (PUT
// /drives/{id}), before the start as on Firecracker; there may be one root
// device. The file is checked (see checkImage) before c.mu is taken, and
// opened when the microVM starts. The drives are kept in the order the
// guest gets them (vmm.Prepare's): the root drive first, then the others
// in the order they were added.
func (c *Controller) setDrive(id string, d Drive) error {
	if err := d.check(id); err != nil {
		return err
	}
	if err := c.beforeStart(); err != nil {
		return err
	}
	if err := checkImage(*d.PathOnHost); err != nil {
		return err
	}
	d.IsReadOnly = cmp.Or(d.IsReadOnly, new(bool))
	d.CacheType = cmp.Or(d.CacheType, ptr("Unsafe"))
	d.IOEngine = cmp.Or(d.IOEngine, ptr("Sync"))
	d.RateLimiter = nil // one that does not limit is none
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		return errAfterStart
	}
	i := slices.IndexFunc(c.drives, func(o Drive) bool { return *o.DriveID == id })
	if *d.IsRootDevice && slices.ContainsFunc(c.drives, func(o Drive) bool { return *o.IsRootDevice && *o.DriveID != id }) {
		return errors.New("Drive config error: A root block device already exists!")
	}
	if i < 0 {
		c.drives = append(c.drives, d)
	} else {
		c.drives[i] = d
	}
	if r := slices.IndexFunc(c.drives, func(o Drive) bool { return *o.IsRootDevice }); r > 0 {
		c.drives = slices.Concat(c.drives[r:r+1], c.drives[:r], c.drives[r+1:])
	}
	if *d.IOEngine == "Async" {
		c.Log().Info("drive io_engine Async: squibd serves it with its one engine, synchronous reads and writes on the drive's goroutine", "drive", id)
	}
	c.bootPath = true
	return nil
}

func ptr[T any](v T) *T { return &v }

// checkImage checks a drive's file: it exists, and is a regular file or a
// block device (a FIFO would hold up the open).
func checkImage(path string) error {
	if fi, err := os.Stat(path); err != nil {
		return fmt.Errorf("Drive config error: Unable to open the block device backing file: %w", err)
	} else if !fi.Mode().IsRegular() && fi.Mode()&os.ModeDevice == 0 {
		return fmt.Errorf("Drive config error: %s is neither a regular file nor a block device", path)
	}
	return nil
}

// patchFault begins the faults of PATCH /drives past its phase check, in
// Firecracker's words.
const patchFault = "Drive config error: Unable to patch the block device: "

// patchDrive gives a drive a new image, or tells the guest that its image
// was resized (PATCH /drives/{id} with path_on_host, the same path then),
// after the start as on Firecracker: running, paused, or restored by a
// snapshot load. The file is checked before c.mu is taken, as PUT
// /drives's is; one that cannot be opened leaves the drive as it was.
// GET /vm/config and later snapshots name the new file.
func (c *Controller) patchDrive(id string, p PartialDrive) error {
	if err := p.check(id); err != nil {
		return err
	}
	if err := c.hasDrive(id); err != nil {
		return err
	}
	switch {
	case p.PathOnHost == nil && p.RateLimiter == nil:
		// Firecracker takes a body with neither for a vhost-user drive's
		// configuration refresh, and refuses it for a drive over a file
		// (InvalidBlockBackend): so does squibd, whose drives all are.
		return fmt.Errorf(patchFault+"drive %s has no vhost-user backend to refresh; give path_on_host to change its file", id)
	case p.PathOnHost == nil:
		return nil // a rate limiter that does not limit, as the drive's does not (checked)
	}
	if err := checkImage(*p.PathOnHost); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.unlock()
	if err := c.m.UpdateDrive(id, *p.PathOnHost); err != nil { // c.m, once set, stays
		return fmt.Errorf(patchFault+"%w", err)
	}
	i := slices.IndexFunc(c.drives, func(d Drive) bool { return *d.DriveID == id }) // after the start, the drives stay
	c.drives[i].PathOnHost = p.PathOnHost
	c.Log().Info("drive updated", "drive", id, "path", *p.PathOnHost)
	return nil
}

// hasDrive returns errBeforeStart until the microVM has started, then an
// error unless it has drive id.
func (c *Controller) hasDrive(id string) error {
	c.mu.Lock()
	defer c.unlock()
	if c.m == nil {
		return errBeforeStart
	}
	if !slices.ContainsFunc(c.drives, func(d Drive) bool { return *d.DriveID == id }) {
		return fmt.Errorf(patchFault+"the microVM has no drive %q", id)
	}
	return nil
}

func (c *Controller) setLogger(l Logger) error {
	if err := c.beforeStart(); err != nil {
		return err
	}
	if err := l.check(); err != nil {
		return err
	}
	file, err := l.open(&c.metrics.logDrops)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		if file != nil {
			file.Close()
		}
		return errAfterStart
	}
	f := c.format.apply(l, file)
	if old := c.format.file; old != nil && f.file != old {
		defer old.Close()
	}
	c.format, c.logCfg = f, &l
	c.log.Store(f.logger())
	return nil
}

func (c *Controller) setMetrics(m Metrics) error {
	if err := required(field{"metrics_path", m.MetricsPath != nil}); err != nil {
		return err
	}
	if err := c.beforeStart(); err != nil {
		return err
	}
	if err := c.metrics.open(*m.MetricsPath); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.unlock()
	c.metCfg = &m // a microVM that started meanwhile writes them too
	return nil
}

func (c *Controller) version() Version { return Version{FirecrackerVersion: c.opts.Version} }

// action runs PUT /actions.
func (c *Controller) action(a Action) error {
	if err := required(field{"action_type", a.ActionType != nil}); err != nil {
		return err
	}
	switch kind := *a.ActionType; kind {
	case ActionInstanceStart:
		return c.Start()
	case ActionFlushMetrics:
		c.mu.Lock()
		defer c.unlock()
		if c.m == nil {
			return errBeforeStart
		}
		return c.writeMetrics()
	case ActionSendCtrlAltDel:
		return errors.New("SendCtrlAltDel does not supported on aarch64.") // sic: Firecracker's words
	default:
		return bodyError("unknown variant `%s`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel`", kind)
	}
}

// setState runs PATCH /vm. Pausing a paused microVM and resuming a running
// one do nothing, as in Firecracker.
func (c *Controller) setState(v VM) error {
	if err := required(field{"state", v.State != nil}); err != nil {
		return err
	}
	state := *v.State
	if state != VMPaused && state != VMResumed {
		return bodyError("unknown variant `%s`, expected `Paused` or `Resumed`", state)
	}
	c.mu.Lock()
	defer c.unlock()
	if c.m == nil {
		return errBeforeStart
	}
	pause := state == VMPaused
	if pause == c.paused {
		return nil
	}
	if c.pendingStart { // a loaded snapshot's first Resumed starts it
		c.startLoaded(time.Now())
		return nil
	}
	op, metric, verb := c.m.Resume, "vmm_resume_vm", "resuming"
	if pause {
		op, metric, verb = c.m.Pause, "vmm_pause_vm", "pausing"
	}
	t := time.Now()
	if err := op(); err != nil {
		return fmt.Errorf("%s the microVM: %w", verb, err)
	}
	d := time.Since(t)
	c.metrics.store("latencies_us", metric, d)
	c.paused = pause
	c.Log().Info("microVM "+state, "took", d)
	return nil
}

func (c *Controller) snapshotCreate(s SnapshotCreate) error {
	if err := s.check(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.unlock()
	switch {
	case c.m == nil:
		return errBeforeStart
	case !c.paused:
		return errors.New("Create snapshot error: the microVM must be paused (PATCH /vm Paused) first")
	}
	diff, metric := s.SnapshotType != nil && *s.SnapshotType == "Diff", "full_create_snapshot"
	if diff {
		metric = "diff_create_snapshot"
	}
	t := time.Now()
	st, err := c.m.Snapshot(snapshot.Files{State: *s.SnapshotPath, Memory: *s.MemFilePath}, diff)
	if err != nil {
		err = fmt.Errorf("Create snapshot error: %w", err)
		c.Log().Error("the snapshot failed; the microVM stays paused", "err", err)
		return err
	}
	c.metrics.store("latencies_us", metric, time.Since(t))
	c.Log().Info("snapshot created", "diff", diff, "state", *s.SnapshotPath, "memory", *s.MemFilePath, "took", time.Since(t),
		"save", st.Save, "scan", st.Scan, "write", st.Write, "sync", st.Sync, "written", st.Written)
	return nil
}

func (c *Controller) snapshotLoad(s SnapshotLoad) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := c.loadAllowed(); err != nil {
		return err
	}
	mem := s.MemFilePath
	if b := s.MemBackend; b != nil {
		if b.BackendType != nil && *b.BackendType != "File" {
			return fmt.Errorf("Load snapshot error: memory backend %q is not supported; use File", *b.BackendType)
		}
		mem = b.BackendPath
	}
	if mem == nil {
		return errors.New("Load snapshot error: no memory file given (mem_backend.backend_path)")
	}
	files := snapshot.Files{State: *s.SnapshotPath, Memory: *mem}
	power, _ := s.power() // checked
	o := vmm.RestoreOptions{Power: power, CopyMemory: s.CopyMemory != nil && *s.CopyMemory,
		TrackDirtyPages: s.TrackDirtyPages != nil && *s.TrackDirtyPages || s.EnableDiffSnapshots != nil && *s.EnableDiffSnapshots}
	if s.VsockOverride != nil {
		o.VsockUDS = *s.VsockOverride.UDSPath
	}
	var err error
	if o.Nets, err = netOverrides(s.NetworkOverrides); err != nil {
		return fmt.Errorf("Load snapshot error: %w", err)
	}
	t := time.Now()
	// The files are checked before the hypervisor is opened, so that a bad
	// file is reported as such on any host, and before c.mu is taken, so
	// that reading them stalls no other request.
	err = snapshot.Check(files)
	c.mu.Lock()
	defer c.unlock()
	if perr := c.loadAllowedLocked(); perr != nil { // another request came first
		return perr
	}
	var h hv.Hypervisor
	if err == nil {
		h, err = c.opts.OpenHypervisor()
	}
	if err == nil {
		c.m, err = vmm.Restore(h, files, o, c.opts.Console, c.Log())
	}
	if err != nil {
		err = fmt.Errorf("Load snapshot error: %w", err)
		c.Log().Error("the snapshot failed to load", "err", err)
		return err
	}
	// GET /machine-config now describes the restored microVM, as on Firecracker.
	rc := c.m.Config()
	c.machine = machineConfig{vcpus: rc.VCPUs, memMiB: rc.MemoryMiB, trackDirty: rc.TrackDirtyPages}
	if rc.RNG { // and GET /vm/config its entropy device, drives and vsock
		c.entropy = &Entropy{}
	}
	for _, d := range rc.Drives {
		c.drives = append(c.drives, wireDrive(d))
	}
	if v := rc.Vsock; v != nil {
		c.vsock = &Vsock{GuestCID: ptr(uint32(v.CID)), UDSPath: &v.UDSPath}
	}
	c.nets = rc.Nets
	c.metrics.store("latencies_us", "load_snapshot", time.Since(t))
	c.Log().Info("snapshot loaded", "state", files.State, "memory", files.Memory, "took", time.Since(t))
	go c.wait(c.m)
	c.paused, c.pendingStart = true, true
	if s.ResumeVM != nil && *s.ResumeVM {
		c.startLoaded(t)
	}
	return nil
}

// loadAllowed refuses a snapshot load after a start or a boot resource.
func (c *Controller) loadAllowed() error {
	c.mu.Lock()
	defer c.unlock()
	return c.loadAllowedLocked()
}

func (c *Controller) loadAllowedLocked() error {
	switch {
	case c.m != nil:
		return errAfterStart
	case c.bootPath:
		return errLoadAfterBootConfig
	}
	return nil
}

// startLoaded lets a loaded snapshot run; c.mu is held. since is when the
// load was asked for: the log says how long until vCPU 0 ran.
func (c *Controller) startLoaded(since time.Time) {
	m := c.m
	m.Start(c.opts.Input)
	c.paused, c.pendingStart = false, false
	go func() {
		select {
		case <-m.Running():
			c.Log().Info("restored microVM running", "since_request", time.Since(since))
		case <-c.done:
		}
	}()
}

// writeMetrics writes a metrics line; c.mu is held and the microVM started.
func (c *Controller) writeMetrics() error {
	if err := c.metrics.write(c.m.Exits()); err != nil {
		c.Log().Error("metrics", "err", err)
		return fmt.Errorf("Internal VMM error: %w", err)
	}
	return nil
}
