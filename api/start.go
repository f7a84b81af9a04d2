package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/vmm"
)

// Start boots the microVM as configured (PUT /actions InstanceStart). If
// it fails, the microVM stays "Not started" and the reason is returned and
// logged; the configuration can then be fixed and Start tried again.
func (c *Controller) Start() error {
	c.mu.Lock()
	defer c.unlock()
	if c.m != nil {
		return errAfterStart
	}
	if c.boot == nil {
		return errors.New("Start microvm error: Cannot start microvm without kernel configuration.")
	}
	t := time.Now()
	m, err := c.build()
	if err != nil {
		err = fmt.Errorf("Start microvm error: %w", err)
		c.Log().Error("the microVM failed to start", "err", err)
		return err
	}
	m.Start(c.opts.Input)
	c.m = m
	c.Log().Info("microVM started", "vcpus", c.machine.vcpus, "mem_mib", c.machine.memMiB, "took", time.Since(t))
	go c.wait(m)
	return nil
}

// build reads the boot files and builds the machine.
func (c *Controller) build() (*vmm.Machine, error) {
	cfg := vmm.Config{Cmdline: vmm.DefaultCmdline, VCPUs: c.machine.vcpus, MemoryMiB: c.machine.memMiB,
		TrackDirtyPages: c.machine.trackDirty, RNG: c.entropy != nil}
	for _, d := range c.drives {
		cfg.Drives = append(cfg.Drives, d.config())
	}
	if v := c.vsock; v != nil {
		cfg.Vsock = &vsock.Config{CID: uint64(*v.GuestCID), UDSPath: *v.UDSPath}
	}
	cfg.Nets = c.nets
	if c.boot.BootArgs != nil {
		cfg.Cmdline = *c.boot.BootArgs
	}
	initrd := ""
	if c.boot.InitrdPath != nil {
		initrd = *c.boot.InitrdPath
	}
	release, err := cfg.OpenFiles("kernel_image_path", *c.boot.KernelImagePath, "initrd_path", initrd)
	if err != nil {
		return nil, err
	}
	defer release() // vmm.New has read them by the time build returns
	plan, err := vmm.Prepare(cfg)
	if err != nil {
		return nil, err
	}
	h, err := c.opts.OpenHypervisor()
	if err != nil {
		return nil, err
	}
	return vmm.New(h, plan, c.opts.Console, c.Log())
}

// wait writes metrics while m runs, every metricsPeriod; then records how m
// ended and closes c.done.
func (c *Controller) wait(m *vmm.Machine) {
	ended := make(chan struct{})
	go func() {
		c.outcome, c.err = m.Wait()
		close(ended)
	}()
	c.writeMetricsUntil(ended, metricsPeriod, m.Exits)
	c.Log().Info("microVM ended", "outcome", c.outcome, "err", c.err)
	close(c.done)
}

// writeMetricsUntil writes metrics Firecracker-style, at once and then every
// period, until ended is closed; exits gives the vCPU exit counts so far.
func (c *Controller) writeMetricsUntil(ended <-chan struct{}, period time.Duration, exits func() vmm.ExitCounts) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		if err := c.metrics.write(exits()); err != nil {
			c.Log().Error("metrics", "err", err)
		}
		select {
		case <-tick.C:
		case <-ended:
			return
		}
	}
}

// Configure applies a whole configuration (--config-file, with the schema
// of GET /vm/config) and starts the microVM.
func (c *Controller) Configure(cfg FullConfig) error {
	if err := unsupported(cfg); err != nil {
		return err
	}
	if cfg.Logger != nil {
		if err := c.setLogger(*cfg.Logger); err != nil {
			return err
		}
	}
	if cfg.Metrics != nil {
		if err := c.setMetrics(*cfg.Metrics); err != nil {
			return err
		}
	}
	if cfg.MachineConfig != nil {
		if err := c.putMachineConfig(*cfg.MachineConfig); err != nil {
			return err
		}
	}
	if cfg.Entropy != nil {
		if err := c.setEntropy(*cfg.Entropy); err != nil {
			return err
		}
	}
	if cfg.Vsock != nil {
		if err := c.setVsock(*cfg.Vsock); err != nil {
			return err
		}
	}
	for _, d := range cfg.Drives {
		if d.DriveID == nil {
			return bodyError("missing field `drive_id`")
		}
		if err := c.setDrive(*d.DriveID, d); err != nil {
			return err
		}
	}
	for _, n := range cfg.NetworkInterfaces {
		if n.IfaceID == nil {
			return bodyError("missing field `iface_id`")
		}
		if err := c.setNet(*n.IfaceID, n); err != nil {
			return err
		}
	}
	if cfg.BootSource == nil {
		return bodyError("missing field `boot-source`")
	}
	if err := c.setBootSource(*cfg.BootSource); err != nil {
		return err
	}
	return c.Start()
}

// unsupported refuses a configuration that asks for devices squib does
// not have yet.
func unsupported(cfg FullConfig) error {
	lists := map[string][]json.RawMessage{"pmem": cfg.Pmem}
	for name, l := range lists {
		if len(l) > 0 {
			return fmt.Errorf("%s: squibd does not support this device yet", name)
		}
	}
	single := map[string]json.RawMessage{"balloon": cfg.Balloon, "mmds-config": cfg.MMDSConfig,
		"cpu-config": cfg.CPUConfig, "memory-hotplug": cfg.MemoryHotplug}
	for name, v := range single {
		if len(v) > 0 && string(v) != "null" {
			return fmt.Errorf("%s: squibd does not support this device yet", name)
		}
	}
	return nil
}

// checkReadable checks, as Firecracker does when the boot source is set,
// that a boot file can be opened.
func checkReadable(path string) error {
	_, f, err := loader.OpenFile(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// ParseConfig parses a configuration file (the schema of GET /vm/config).
// Unknown keys are refused, so that a typo does not go unnoticed.
func ParseConfig(b []byte) (FullConfig, error) {
	var cfg FullConfig
	if err := decode(b, &cfg, true); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// config is the vmm's drive for a checked drive.
func (d Drive) config() blk.Config {
	c := blk.Config{ID: *d.DriveID, Path: *d.PathOnHost, ReadOnly: *d.IsReadOnly, Root: *d.IsRootDevice}
	if *d.CacheType == "Writeback" {
		c.Cache = blk.Writeback
	}
	if d.PartUUID != nil {
		c.PartUUID = *d.PartUUID
	}
	return c
}

// wireDrive is a restored machine's drive as GET /vm/config shows it (its
// io_engine is not in snapshots: Sync, the one engine squibd has).
func wireDrive(c blk.Config) Drive {
	d := Drive{DriveID: &c.ID, PathOnHost: &c.Path, IsRootDevice: &c.Root, IsReadOnly: &c.ReadOnly,
		CacheType: ptr(c.Cache.String()), IOEngine: ptr("Sync")}
	if c.PartUUID != "" {
		d.PartUUID = &c.PartUUID
	}
	return d
}
