package hvf

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/snapshot"
)

// Hypervisor is Hypervisor.framework, loaded and checked.
type Hypervisor struct {
	macOS    string // "15.3.1 (24D70)"
	tb       timebase
	maxVCPUs int
}

// Open loads Hypervisor.framework and checks that this Mac offers what squib
// needs: macOS 15 or later, for the framework's GIC. The error of an older
// macOS wraps ErrMacOSTooOld and hv.ErrNoHypervisor.
func Open() (*Hypervisor, error) {
	h := &Hypervisor{macOS: macOSVersion()}
	if err := load(h.macOS); err != nil {
		return nil, err
	}
	if r := machTimebaseInfo(&h.tb); r != 0 || h.tb.denom == 0 {
		return nil, fmt.Errorf("mach_timebase_info failed (%d)", int32(r))
	}
	var n uint32
	if err := check("hv_vm_get_max_vcpu_count", hvVMGetMaxVCPUCount(&n)); err != nil {
		return nil, entitlementError(err, executable())
	}
	h.maxVCPUs = min(int(n), gic.MaxVCPUs())
	if h.maxVCPUs < 1 {
		return nil, fmt.Errorf("%w: Hypervisor.framework allows %d vCPUs", hv.ErrNoHypervisor, n)
	}
	return h, nil
}

// macOSVersion is the product version and build, for messages and the GIC
// state's BackendVersion.
func macOSVersion() string {
	v, err := unix.Sysctl("kern.osproductversion")
	if err != nil {
		return "(unknown version)"
	}
	if b, err := unix.Sysctl("kern.osversion"); err == nil {
		v += " (" + b + ")"
	}
	return v
}

func executable() string {
	if exe, err := os.Executable(); err == nil {
		return exe
	}
	return "squibd"
}

// Name returns "hvf".
func (h *Hypervisor) Name() string { return gic.BackendHVF }

// MaxVCPUs is the smaller of the framework's limit and what the GIC layout holds.
func (h *Hypervisor) MaxVCPUs() int { return h.maxVCPUs }

// VM is a Hypervisor.framework VM. A process has at most one.
type VM struct {
	h     *Hypervisor
	cfg   hv.Config
	dirty *dirtyTracker

	// offset is the vtimer offset of every vCPU; each applies a new
	// value on its own thread before it next runs.
	offset atomic.Uint64

	// configIDs are configIDRegs as the default vCPU configuration,
	// which every vCPU is created with, gives them.
	configIDs map[uint16]uint64

	mu    sync.Mutex
	vcpus map[int]uint64 // squib index → hv_vcpu_t of the live vCPUs

	// Snapshot state, under mu. The ICC registers can only be read and
	// written on each vCPU's own thread, so SaveState reads them into
	// savedICC for SaveGIC, and RestoreGIC leaves them in restoreICC for
	// each vCPU to write before it first runs.
	savedICC   map[int]gic.ICCRegs
	restoreICC map[int]gic.ICCRegs
	counterSet bool   // a restored vCPU has set the guest's virtual counter
	counter    uint64 // the largest saved counter set so far
	dirtyBlock uint64 // TrackDirty's block size
}

// NewVM creates the process's VM, its GIC and its RAM mapping. The GIC must
// exist before any vCPU (hv_gic_create), so it is made here.
func (h *Hypervisor) NewVM(cfg hv.Config) (hv.VM, error) {
	if cfg.VCPUs < 1 || cfg.VCPUs > h.maxVCPUs {
		return nil, fmt.Errorf("%d vCPUs: Hypervisor.framework here supports 1 to %d", cfg.VCPUs, h.maxVCPUs)
	}
	size := uint64(len(cfg.RAM))
	if err := checkRAM(ramAddr(cfg.RAM), cfg.RAMBase, size); err != nil {
		return nil, err
	}
	if err := createVM(cfg.RAMBase + size); err != nil {
		return nil, err
	}
	vm := &VM{h: h, cfg: cfg, vcpus: make(map[int]uint64)}
	vm.dirty = newDirtyTracker(vm, cfg.RAMBase, size)
	if err := vm.setup(); err != nil {
		hvVMDestroy()
		return nil, err
	}
	vm.offset.Store(machAbsoluteTime()) // the guest counter starts near 0
	return vm, nil
}

// createVM creates the VM with a guest physical address space reaching top.
func createVM(top uint64) error {
	var defBits, maxBits uint32
	if err := firstError(
		check("hv_vm_config_get_default_ipa_size", hvVMConfigGetDefaultIPASize(&defBits)),
		check("hv_vm_config_get_max_ipa_size", hvVMConfigGetMaxIPASize(&maxBits)),
	); err != nil {
		return entitlementError(err, executable())
	}
	ipa, err := ipaBits(top, defBits, maxBits)
	if err != nil {
		return err
	}
	cfg := hvVMConfigCreate()
	if cfg == 0 {
		return errors.New("hv_vm_config_create failed")
	}
	defer osRelease(cfg)
	if ipa != 0 {
		if err := check("hv_vm_config_set_ipa_size", hvVMConfigSetIPASize(cfg, ipa)); err != nil {
			return fmt.Errorf("a %d-bit guest physical address space: %w", ipa, err)
		}
	}
	err = check("hv_vm_create", hvVMCreate(cfg))
	if errors.Is(err, ErrBusy) {
		return fmt.Errorf("%w (Hypervisor.framework allows one VM per process, and this process has one)", err)
	}
	return entitlementError(err, executable())
}

func (vm *VM) setup() error {
	ids, err := readConfigIDRegs()
	if err != nil {
		return err
	}
	vm.configIDs = ids
	if err := createGIC(vm.cfg.GIC); err != nil {
		return err
	}
	err = check("hv_vm_map", hvVMMap(vm.cfg.RAM, vm.cfg.RAMBase, HV_MEMORY_READ|HV_MEMORY_WRITE|HV_MEMORY_EXEC))
	if err != nil {
		return fmt.Errorf("mapping %d MiB of guest RAM at %#x: %w", len(vm.cfg.RAM)>>20, vm.cfg.RAMBase, err)
	}
	return nil
}

// readConfigIDRegs reads configIDRegs, the ID registers hv_sys_reg_t
// cannot name, from a default vCPU configuration.
func readConfigIDRegs() (map[uint16]uint64, error) {
	cfg := hvVCPUConfigCreate()
	if cfg == 0 {
		return nil, errors.New("hv_vcpu_config_create failed")
	}
	defer osRelease(cfg)
	ids := make(map[uint16]uint64, len(configIDRegs))
	for _, r := range configIDRegs {
		var x uint64
		if err := check("hv_vcpu_config_get_feature_reg", hvVCPUConfigGetFeatureReg(cfg, r.feature, &x)); err != nil {
			return nil, fmt.Errorf("ID register %s: %w", snapshot.SysRegLabel(r.enc), err)
		}
		ids[r.enc] = x
	}
	return ids, nil
}

// createGIC creates the framework's GICv3 where package gic places it,
// after checking that the framework's GIC fits that layout.
func createGIC(l *gic.Layout) error {
	var g gicGeometry
	err := firstError(
		check("hv_gic_get_distributor_size", hvGICParameter(fnGICGetDistributorSize, &g.distSize)),
		check("hv_gic_get_distributor_base_alignment", hvGICParameter(fnGICGetDistributorBaseAlignment, &g.distAlign)),
		check("hv_gic_get_redistributor_region_size", hvGICParameter(fnGICGetRedistributorRegionSize, &g.redistRegionSize)),
		check("hv_gic_get_redistributor_size", hvGICParameter(fnGICGetRedistributorSize, &g.redistSize)),
		check("hv_gic_get_redistributor_base_alignment", hvGICParameter(fnGICGetRedistributorBaseAlignment, &g.redistAlign)),
		check("hv_gic_get_spi_interrupt_range", hvGICGetSPIInterruptRange(&g.spiBase, &g.spiCount)),
		check("hv_gic_get_intid", hvGICGetIntid(HV_GIC_INT_EL1_VIRTUAL_TIMER, &g.vtimerINTID)),
		check("hv_gic_get_intid", hvGICGetIntid(HV_GIC_INT_EL1_PHYSICAL_TIMER, &g.ptimerINTID)),
	)
	if err != nil {
		return fmt.Errorf("querying the GIC: %w", err)
	}
	if err := g.check(l); err != nil {
		return err
	}
	cfg := hvGICConfigCreate()
	if cfg == 0 {
		return errors.New("hv_gic_config_create failed")
	}
	defer osRelease(cfg)
	if err := firstError(
		check("hv_gic_config_set_distributor_base", hvGICConfigSetDistributorBase(cfg, gic.DistBase)),
		check("hv_gic_config_set_redistributor_base", hvGICConfigSetRedistributorBase(cfg, gic.RedistBase)),
	); err != nil {
		return fmt.Errorf("configuring the GIC: %w", err)
	}
	if err := check("hv_gic_create", hvGICCreate(cfg)); err != nil {
		return fmt.Errorf("creating the GIC: %w", err)
	}
	return nil
}

// Ready checks, once every vCPU exists, that the framework placed each
// vCPU's redistributor inside the region the device tree describes.
func (vm *VM) Ready() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if len(vm.vcpus) != vm.cfg.VCPUs {
		return fmt.Errorf("GIC: %d of %d vCPUs created", len(vm.vcpus), vm.cfg.VCPUs)
	}
	bases := make([]uint64, vm.cfg.VCPUs)
	for id, v := range vm.vcpus {
		if err := check("hv_gic_get_redistributor_base", hvGICGetRedistributorBase(v, &bases[id])); err != nil {
			return fmt.Errorf("vCPU %d: %w", id, err)
		}
	}
	return checkRedists(bases, vm.cfg.GIC)
}

// SetSPI drives the level of the SPI with GIC INTID intid. Any thread.
func (vm *VM) SetSPI(intid uint32, level bool) error {
	if err := check("hv_gic_set_spi", hvGICSetSPI(intid, level)); err != nil {
		return fmt.Errorf("INTID %d: %w", intid, err)
	}
	return nil
}

// InKernelPSCI is false: every HVC and SMC exits to squib.
func (vm *VM) InKernelPSCI() bool { return false }

// protect implements protector for the dirty tracker.
func (vm *VM) protect(ipa, size, flags uint64) error {
	return check("hv_vm_protect", hvVMProtect(ipa, size, flags))
}

// inRAM reports whether ipa is guest RAM.
func (vm *VM) inRAM(ipa uint64) bool {
	return ipa >= vm.cfg.RAMBase && ipa-vm.cfg.RAMBase < uint64(len(vm.cfg.RAM))
}

// Close unmaps guest RAM and destroys the VM. Every vCPU must be closed.
func (vm *VM) Close() error {
	vm.mu.Lock()
	n := len(vm.vcpus)
	vm.mu.Unlock()
	if n != 0 {
		return fmt.Errorf("closing the VM with %d vCPUs still open", n)
	}
	return firstError(
		check("hv_vm_unmap", hvVMUnmap(vm.cfg.RAMBase, uint64(len(vm.cfg.RAM)))),
		check("hv_vm_destroy", hvVMDestroy()),
	)
}
