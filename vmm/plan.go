// Package vmm is squib's backend-neutral VMM core: it lays out an arm64
// board (memory map, device tree, PL011, PL031, GICv3, virtio-mmio
// devices), loads a Linux kernel, and runs one locked goroutine per vCPU on
// any hv.Hypervisor, taking commands (pause, resume, stop) through each
// vCPU's channel.
package vmm

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/squibvm/squib/devices/blk"
	"github.com/squibvm/squib/devices/netdev"
	"github.com/squibvm/squib/devices/rng"
	"github.com/squibvm/squib/devices/vsock"
	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/loader"
	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// Config is what a user asks for.
type Config struct {
	Kernel    loader.File // arm64 Image: raw, gzip'd, EFI stub or EFI zboot
	Initrd    loader.File // optional (Size 0); New reads both, then they may be closed
	Cmdline   string
	VCPUs     int
	MemoryMiB uint64
	// TrackDirtyPages records the guest's writes to RAM from the start,
	// for diff snapshots.
	TrackDirtyPages bool
	// RNG gives the guest a virtio-rng device (its /dev/hwrng), fed from
	// the host's CSPRNG.
	RNG bool
	// Drives are the guest's virtio-blk drives. Prepare puts the root
	// drive (at most one) first, so the guest names it vda, and names it
	// on the command line, as Firecracker does.
	Drives []blk.Config
	// Vsock, if set, gives the guest a virtio-vsock device over Unix
	// sockets (Firecracker's hybrid vsock); its socket is bound when the
	// machine is built.
	Vsock *vsock.Config
	// Nets are the guest's virtio-net interfaces, eth0 first; each opens
	// its backend when the machine is built.
	Nets []netdev.Config
}

// OpenFiles opens the boot files into c: the kernel and, unless initrdPath
// is empty, the initrd, naming each in errors by its label (a flag or a
// JSON field). Call release once New has loaded them.
func (c *Config) OpenFiles(kernelLabel, kernelPath, initrdLabel, initrdPath string) (release func(), err error) {
	kernel, kf, err := loader.OpenFile(kernelPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kernelLabel, err)
	}
	c.Kernel, release = kernel, func() { kf.Close() }
	if initrdPath == "" {
		return release, nil
	}
	initrd, rf, err := loader.OpenFile(initrdPath)
	if err != nil {
		kf.Close()
		return nil, fmt.Errorf("%s: %w", initrdLabel, err)
	}
	c.Initrd = initrd
	return func() { kf.Close(); rf.Close() }, nil
}

// DefaultCmdline sends the console to the PL011 and turns a guest panic into
// an immediate reset, so a crashed guest ends squibd instead of hanging.
const DefaultCmdline = "console=ttyAMA0 panic=-1"

// Plan is a validated Config turned into a concrete board: everything needed
// to boot except the hypervisor. It is deterministic apart from the
// device tree's random seed.
type Plan struct {
	Config
	RAMSize uint64
	Image   *loader.Image
	Layout  loader.Layout
	GIC     *gic.Layout
	DTB     []byte

	uartSPI, rtcSPI gic.SPI
	virtio          []virtioSlot // in address order
}

// virtioSlot is where the board puts one virtio-mmio device, and the
// device type it holds.
type virtioSlot struct {
	name string // the device's Name
	base uint64
	spi  gic.SPI
	dev  func(*memory.RAM, *slog.Logger) (virtio.Device, error)
}

// The devices' names, in snapshots too: a drive's is driveName's prefix
// and its id.
const (
	rngName     = "virtio-rng"
	vsockName   = "virtio-vsock"
	drivePrefix = "virtio-blk-"
	netPrefix   = "virtio-net-"
)

func driveName(id string) string { return drivePrefix + id }
func netName(id string) string   { return netPrefix + id }

// Prepare checks cfg and lays out the board. Its errors are meant for users.
func Prepare(cfg Config) (*Plan, error) {
	if cfg.VCPUs < 1 {
		return nil, fmt.Errorf("--cpus %d: a VM needs at least one vCPU", cfg.VCPUs)
	}
	if cfg.VCPUs > gic.MaxVCPUs() {
		return nil, fmt.Errorf("--cpus %d: the GICv3 layout holds at most %d vCPUs", cfg.VCPUs, gic.MaxVCPUs())
	}
	if cfg.MemoryMiB == 0 || cfg.MemoryMiB > MaxRAM>>20 {
		return nil, fmt.Errorf("--memory %d: must be between 1 and %d MiB", cfg.MemoryMiB, uint64(MaxRAM>>20))
	}
	cfg.Drives = slices.Clone(cfg.Drives) // the plan's own: UpdateDrive changes them
	if err := cfg.rootDrive(); err != nil {
		return nil, err
	}
	if v := cfg.Vsock; v != nil {
		if err := vsock.CheckCID(v.CID); err != nil {
			return nil, fmt.Errorf("vsock: %w", err)
		}
		cfg.Vsock = &vsock.Config{CID: v.CID, UDSPath: v.UDSPath} // the plan's own
	}
	cfg.Nets = slices.Clone(cfg.Nets)
	for i, n := range cfg.Nets {
		if err := n.Check(); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(cfg.Nets[:i], func(o netdev.Config) bool { return o.ID == n.ID }) {
			return nil, fmt.Errorf("network interface %s: interface ids must be unique", n.ID)
		}
	}
	img, err := loader.ParseImage(cfg.Kernel)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	p := &Plan{Config: cfg, RAMSize: cfg.MemoryMiB << 20, Image: img}
	p.Layout, err = loader.Place(RAMBase, p.RAMSize, img, uint64(cfg.Initrd.Size))
	if err != nil {
		return nil, fmt.Errorf("--memory %d: %w", cfg.MemoryMiB, err)
	}
	if err := p.layOut(); err != nil {
		return nil, err
	}
	if p.DTB, err = deviceTree(p); err != nil {
		return nil, fmt.Errorf("building the device tree: %w", err)
	}
	if len(p.DTB) > loader.DTBMax {
		return nil, fmt.Errorf("device tree of %d bytes exceeds 2 MiB", len(p.DTB))
	}
	return p, nil
}

// layOut assigns the interrupt controller, and the devices their windows
// and interrupts; the same VCPUs and devices always give the same board,
// so a restore finds it as saved.
func (p *Plan) layOut() (err error) {
	if p.GIC, err = gic.NewLayout(p.VCPUs); err != nil {
		return err
	}
	if p.uartSPI, err = p.GIC.AllocSPI(); err != nil {
		return err
	}
	if p.rtcSPI, err = p.GIC.AllocSPI(); err != nil {
		return err
	}
	for _, d := range p.Drives {
		p.virtio = append(p.virtio, virtioSlot{name: driveName(d.ID), dev: func(ram *memory.RAM, _ *slog.Logger) (virtio.Device, error) {
			dev, err := blk.Open(d, ram)
			return drive{dev}, err
		}})
	}
	if p.RNG {
		p.virtio = append(p.virtio, virtioSlot{name: rngName, dev: func(ram *memory.RAM, _ *slog.Logger) (virtio.Device, error) { return rng.New(ram), nil }})
	}
	if v := p.Vsock; v != nil {
		p.virtio = append(p.virtio, virtioSlot{name: vsockName, dev: func(ram *memory.RAM, log *slog.Logger) (virtio.Device, error) {
			dev, err := vsock.New(*v, ram, log)
			return vsocket{dev}, err
		}})
	}
	for _, n := range p.Nets {
		p.virtio = append(p.virtio, virtioSlot{name: netName(n.ID), dev: func(ram *memory.RAM, log *slog.Logger) (virtio.Device, error) {
			be, err := netdev.Open(n, log)
			if err != nil {
				return nil, err
			}
			return netif{netdev.New(n, be, ram, log)}, nil
		}})
	}
	for i := range p.virtio {
		p.virtio[i].base = VirtioBase + uint64(i)*virtio.Size
		if p.virtio[i].spi, err = p.GIC.AllocSPI(); err != nil {
			return err
		}
	}
	return nil
}

// rootDrive checks the drives' ids, moves the root drive first and adds
// it to the command line as Firecracker does: root=PARTUUID=... if it has
// a partuuid, else root=/dev/vda; then ro or rw.
func (c *Config) rootDrive() error {
	root := -1
	for i, d := range c.Drives {
		if d.ID == "" || slices.ContainsFunc(c.Drives[:i], func(o blk.Config) bool { return o.ID == d.ID }) {
			return fmt.Errorf("drive %q: drive ids must be given and unique", d.ID)
		}
		if d.Root {
			if root >= 0 {
				return fmt.Errorf("drive %s: drive %s is already the root device; there can be only one", d.ID, c.Drives[root].ID)
			}
			root = i
		}
	}
	if root < 0 {
		return nil
	}
	r := c.Drives[root]
	c.Drives = slices.Concat([]blk.Config{r}, c.Drives[:root], c.Drives[root+1:])
	arg := "root=/dev/vda"
	if r.PartUUID != "" {
		arg = "root=PARTUUID=" + r.PartUUID
	}
	mode := "rw"
	if r.ReadOnly {
		mode = "ro"
	}
	c.Cmdline = strings.TrimSpace(strings.Join([]string{c.Cmdline, arg, mode}, " "))
	return nil
}
