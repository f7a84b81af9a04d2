package api

import (
	"errors"
	"fmt"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/vmm"
)

// machineConfig is the resolved machine configuration.
type machineConfig struct {
	vcpus      int
	memMiB     uint64
	trackDirty bool
}

// defaultMachine is Firecracker's default: 1 vCPU, 128 MiB.
var defaultMachine = machineConfig{vcpus: 1, memMiB: 128}

func (mc machineConfig) wire() MachineConfig {
	none, no := "None", false
	return MachineConfig{VCPUCount: &mc.vcpus, MemSizeMiB: &mc.memMiB, SMT: &no,
		TrackDirtyPages: &mc.trackDirty, HugePages: &none}
}

// update returns mc with the fields u sets changed, checked.
func (mc machineConfig) update(u MachineConfig) (machineConfig, error) {
	if u.SMT != nil && *u.SMT {
		return mc, errors.New("Enabling simultaneous multithreading is not supported on aarch64.")
	}
	if u.HugePages != nil && *u.HugePages != "None" {
		return mc, fmt.Errorf("huge_pages %q is not supported (only None)", *u.HugePages)
	}
	if u.CPUTemplate != nil && *u.CPUTemplate != "None" {
		return mc, fmt.Errorf("cpu_template %q is not supported (only None)", *u.CPUTemplate)
	}
	if u.VCPUCount != nil {
		mc.vcpus = *u.VCPUCount
	}
	if u.MemSizeMiB != nil {
		mc.memMiB = *u.MemSizeMiB
	}
	if u.TrackDirtyPages != nil {
		mc.trackDirty = *u.TrackDirtyPages
	}
	if mc.vcpus < 1 || mc.vcpus > gic.MaxVCPUs() {
		return mc, fmt.Errorf("vcpu_count %d: the number of vCPUs must be between 1 and %d", mc.vcpus, gic.MaxVCPUs())
	}
	if mc.memMiB == 0 || mc.memMiB > vmm.MaxRAM>>20 {
		return mc, fmt.Errorf("mem_size_mib %d: the memory size must be between 1 and %d MiB", mc.memMiB, uint64(vmm.MaxRAM>>20))
	}
	return mc, nil
}

// empty reports that a PATCH /machine-config body sets nothing.
func (u MachineConfig) empty() bool {
	return u == MachineConfig{}
}
