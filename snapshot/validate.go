package snapshot

import (
	"errors"
	"fmt"
	"os"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/psci"
)

// Expect describes the host a snapshot is about to be restored on.
type Expect struct {
	Backend  string // the running backend's name (hv.Hypervisor.Name): "kvm" or "hvf"
	PageSize int    // host page size in bytes; 0 means this host's
}

// Check returns an error unless a snapshot with header h can be restored on
// the host e describes.
func (e Expect) Check(h *Header) error {
	if e.Backend == "" {
		return errors.New("snapshot: Expect.Backend is not set")
	}
	if h.Backend != e.Backend {
		return problem(ErrBackend, "saved by the %q backend, this squib runs %q", h.Backend, e.Backend)
	}
	page := e.PageSize
	if page == 0 {
		page = os.Getpagesize()
	}
	if int64(h.HostPageSize) != int64(page) {
		return problem(ErrPageSize, "saved on a host with %d-byte pages, this host has %d-byte pages", h.HostPageSize, page)
	}
	return nil
}

// Limits a state file must keep to: a restore could not use a snapshot
// beyond them, so reading one (DecodeState, ReadState, Verify, Describe)
// refuses it at once rather than leaving the refusal to a restore.
const (
	// MaxVCPUs is the most vCPUs a snapshot may hold: as many as the GICv3
	// layout has redistributors for (gic.MaxVCPUs, which vmm and the API
	// enforce), 123.
	MaxVCPUs = (gic.RedistLimit - gic.RedistBase) / gic.RedistSizePerCPU

	// MaxRAMSize is the most guest RAM a snapshot may hold, 1 TiB - 1 GiB:
	// squib's board puts RAM at 0x4000_0000 and keeps it inside the 40-bit
	// guest physical address space every KVM host supports. vmm.MaxRAM is
	// this constant.
	MaxRAMSize = 1<<40 - 0x4000_0000
)

// validPageSize reports whether page is a host page size the format knows:
// 4, 16 or 64 KiB, the arm64 translation granules.
func validPageSize(page uint64) bool {
	return page == 4<<10 || page == 16<<10 || page == 64<<10
}

// Bounds on block sizes: at least the smallest page, at most a 2 MiB huge page.
const (
	minBlockSize = 4 << 10
	maxBlockSize = 2 << 20
)

// checkBlockSize returns an error unless bs can be a memory file's block size
// for size bytes of RAM.
func checkBlockSize(bs, size uint64) error {
	switch {
	case bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0:
		return fmt.Errorf("block size %d is not a power of two between %d and %d", bs, minBlockSize, maxBlockSize)
	case size == 0 || size%bs != 0:
		return fmt.Errorf("RAM size %#x is not a positive multiple of the %d-byte block size", size, bs)
	}
	return nil
}

// validate checks the state's internal consistency: everything a restore
// relies on that can be checked without the memory file or the host. Its
// errors wrap ErrCorrupt or ErrArch and name the field.
func (s *State) validate() error {
	if err := s.Header.validate(); err != nil {
		return err
	}
	m, h := &s.Machine, &s.Header
	switch {
	case m.Config.VCPUs < 1 || m.Config.VCPUs != len(m.VCPUs):
		return problem(ErrCorrupt, "machine.config.vcpus: the configuration has %d vCPUs, the state %d", m.Config.VCPUs, len(m.VCPUs))
	case m.Config.VCPUs > MaxVCPUs:
		return problem(ErrCorrupt, "machine.config.vcpus: %d vCPUs, more than the %d a restore can run", m.Config.VCPUs, MaxVCPUs)
	case h.RAMSize%(1<<20) != 0 || m.Config.MemoryMiB != h.RAMSize>>20:
		return problem(ErrCorrupt, "machine.config.memory_mib: the configuration has %d MiB of memory, the layout %#x bytes", m.Config.MemoryMiB, h.RAMSize)
	}
	if err := m.GIC.Check(h.Backend, len(m.VCPUs)); err != nil {
		return problem(ErrCorrupt, "machine.gic: %v", err)
	}
	mpidrs := make(map[uint64]int, len(m.VCPUs))
	for i := range m.VCPUs {
		c := &m.VCPUs[i]
		if c.Power < psci.On || c.Power > psci.OnPending {
			return problem(ErrCorrupt, "machine.vcpus[%d].power: vCPU %d: invalid power state %d (0 On, 1 Off, 2 OnPending)", i, i, int(c.Power))
		}
		if j, dup := mpidrs[c.MPIDR]; dup {
			return problem(ErrCorrupt, "machine.vcpus[%d].mpidr: vCPUs %d and %d have the same MPIDR %#x", i, j, i, c.MPIDR)
		}
		mpidrs[c.MPIDR] = i
		for enc := range c.Sys {
			if name, ok := dedicatedSysRegs[enc]; ok {
				return problem(ErrCorrupt, "machine.vcpus[%d].sys: vCPU %d: %s is in the system register map; it has a field of its own", i, i, name)
			}
		}
	}
	for name := range m.Devices {
		if name == "" {
			return problem(ErrCorrupt, `machine.devices[""]: a device has no name`)
		}
	}
	return nil
}

func (h *Header) validate() error {
	page := uint64(h.HostPageSize)
	switch {
	case h.Arch != Arch:
		return problem(ErrArch, "header.arch: saved for %q, this is %s", h.Arch, Arch)
	case h.Backend != gic.BackendKVM && h.Backend != gic.BackendHVF:
		return problem(ErrCorrupt, "header.backend: unknown backend %q", h.Backend)
	case !validPageSize(page):
		return problem(ErrCorrupt, "header.host_page_size: host page size %d is not 4, 16 or 64 KiB", page)
	case h.RAMSize == 0:
		return problem(ErrCorrupt, "header.ram_size: no RAM")
	case h.RAMSize > MaxRAMSize:
		return problem(ErrCorrupt, "header.ram_size: %#x bytes of RAM, more than the %#x a restore can map", h.RAMSize, uint64(MaxRAMSize))
	case h.RAMSize%page != 0:
		return problem(ErrCorrupt, "header.ram_size: RAM size %#x is not page-aligned", h.RAMSize)
	case h.RAMBase%page != 0:
		return problem(ErrCorrupt, "header.ram_base: RAM base %#x is not page-aligned", h.RAMBase)
	case h.RAMBase+h.RAMSize < h.RAMBase:
		return problem(ErrCorrupt, "header.ram_base: RAM [%#x, +%#x) overflows", h.RAMBase, h.RAMSize)
	case !validID(h.ID):
		return problem(ErrCorrupt, "header.id: snapshot ID %q is not 32 hex digits", h.ID)
	case h.Type != Full && h.Type != Diff:
		return problem(ErrCorrupt, "header.type: unknown snapshot type %d", uint8(h.Type))
	case h.Type == Full && h.Parent != "":
		return problem(ErrCorrupt, "header.parent: a full snapshot has parent %q", h.Parent)
	case h.Type == Diff && (!validID(h.Parent) || h.Parent == h.ID):
		return problem(ErrCorrupt, "header.parent: diff snapshot parent ID %q is not another snapshot's ID", h.Parent)
	case h.Created.IsZero():
		return problem(ErrCorrupt, "header.created: no creation time")
	case !validID(h.Memory.FileID):
		return problem(ErrCorrupt, "header.memory.file_id: memory file ID %q is not 32 hex digits", h.Memory.FileID)
	case h.Memory.Size != h.RAMSize:
		return problem(ErrCorrupt, "header.memory.size: memory file size %#x differs from RAM size %#x", h.Memory.Size, h.RAMSize)
	case uint64(h.Memory.BlockSize) < page:
		return problem(ErrCorrupt, "header.memory.block_size: block size %d is smaller than the %d-byte host page", h.Memory.BlockSize, page)
	}
	if err := checkBlockSize(uint64(h.Memory.BlockSize), h.RAMSize); err != nil {
		return problem(ErrCorrupt, "header.memory.block_size: %v", err)
	}
	return nil
}
