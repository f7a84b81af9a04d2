package snapshot

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"syscall"
)

// Report summarizes a snapshot for people (WriteText) and scripts (JSON).
type Report struct {
	Format     Version        `json:"format"`
	StateBytes int64          `json:"state_bytes"`
	Header     Header         `json:"header"`
	Config     Config         `json:"config"`
	VCPUs      []VCPUReport   `json:"vcpus"`
	GIC        GICReport      `json:"gic"`
	Devices    []DeviceReport `json:"devices"` // sorted by name
	Memory     *MemoryReport  `json:"memory,omitempty"`
}

// VCPUReport summarizes one vCPU.
type VCPUReport struct {
	MPIDR        uint64 `json:"mpidr"`
	Power        string `json:"power"` // PSCI state: On, Off or OnPending
	PC           uint64 `json:"pc"`
	PSTATE       uint64 `json:"pstate"`
	SysRegs      int    `json:"sysregs"`       // system registers saved
	Counter      uint64 `json:"counter"`       // virtual count when saved
	BackendBytes int    `json:"backend_bytes"` // backend-specific state
}

// GICReport summarizes the interrupt controller state.
type GICReport struct {
	Backend        string `json:"backend"`
	BackendVersion string `json:"backend_version"`
	BlobBytes      int    `json:"blob_bytes"`
}

// DeviceReport summarizes one device's state.
type DeviceReport struct {
	Name  string `json:"name"`
	Bytes int    `json:"bytes"`
}

// MemoryReport summarizes a memory file.
type MemoryReport struct {
	Path           string `json:"path"`
	FileID         string `json:"file_id"`
	Type           Type   `json:"type"`
	Size           uint64 `json:"size"` // RAM bytes
	BlockSize      uint32 `json:"block_size"`
	DataBlocks     int    `json:"data_blocks"`     // blocks the file carries
	FileBytes      int64  `json:"file_bytes"`      // apparent size, footer included
	AllocatedBytes int64  `json:"allocated_bytes"` // disk space used
}

// Describe reads and checks a state file (as ReadState does) and summarizes
// it. It does not look at the memory file.
func Describe(statePath string) (Report, error) {
	s, v, n, err := readState(statePath)
	if err != nil {
		return Report{}, err
	}
	return describe(s, v, n), nil
}

// Verify checks a snapshot completely: the state file as ReadState does, the
// memory file's footer and its binding to the state file, and every block of
// the memory file (data blocks against their checksums, the others for
// zeros). It does not check the snapshot against the host; see Load. The
// report holds what could be read even when Verify fails.
func Verify(statePath, memPath string) (Report, error) {
	s, v, n, err := readState(statePath)
	if err != nil {
		return Report{}, err
	}
	r := describe(s, v, n)
	m, err := openMemory(memPath, false)
	if err != nil {
		return r, err
	}
	defer m.Close()
	r.Memory = &MemoryReport{Path: memPath, FileID: m.ft.FileID, Type: m.ft.Type, Size: m.ft.Size, BlockSize: m.ft.BlockSize}
	if fi, err := m.Stat(); err == nil {
		r.Memory.FileBytes = fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			r.Memory.AllocatedBytes = st.Blocks * 512
		}
	}
	if err := checkBinding(s, m); err != nil {
		return r, err
	}
	if err := m.readTable(); err != nil {
		return r, err
	}
	r.Memory.DataBlocks = m.ft.Blocks.Count()
	return r, m.scan()
}

func describe(s *State, v Version, n int64) Report {
	m := &s.Machine
	r := Report{Format: v, StateBytes: n, Header: s.Header, Config: m.Config,
		GIC: GICReport{m.GIC.Backend, m.GIC.BackendVersion, len(m.GIC.Blob)}}
	for _, c := range m.VCPUs {
		r.VCPUs = append(r.VCPUs, VCPUReport{MPIDR: c.MPIDR, Power: c.Power.String(), PC: c.PC, PSTATE: c.PSTATE,
			SysRegs: len(c.Sys), Counter: c.Timer.Counter, BackendBytes: len(c.Backend)})
	}
	for name, d := range m.Devices {
		r.Devices = append(r.Devices, DeviceReport{name, len(d)})
	}
	sort.Slice(r.Devices, func(i, j int) bool { return r.Devices[i].Name < r.Devices[j].Name })
	return r
}

// scan reads the whole RAM image, checking each carried block against its
// checksum and that every other block reads as zeros.
func (m *memFile) scan() error {
	bs, k := int(m.ft.BlockSize), 0
	zero, buf := make([]byte, bs), make([]byte, chunkSize)
	for off := uint64(0); off < m.ft.Size; off += chunkSize {
		c := buf[:min(chunkSize, m.ft.Size-off)]
		if _, err := m.ReadAt(c, int64(off)); err != nil {
			return fmt.Errorf("snapshot: reading %s: %w", m.path, err)
		}
		for j := 0; j < len(c); j += bs {
			i, b := int(off/uint64(bs))+j/bs, c[j:j+bs]
			if m.ft.Blocks.Has(i) {
				if err := m.check(i, k, b); err != nil {
					return err
				}
				k++
			} else if !bytes.Equal(b, zero) {
				return &FormatError{Path: m.path, Err: ErrCorrupt, Problem: fmt.Sprintf(
					"block %d (offset %#x) holds data the footer does not list", i, uint64(i)*uint64(bs))}
			}
		}
	}
	return nil
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) error {
	h := &r.Header
	p := &printer{w: w}
	p.printf("snapshot %s: %v, format %v, %d-byte state file\n", h.ID, h.Type, r.Format, r.StateBytes)
	if h.Parent != "" {
		p.printf("  parent      %s\n", h.Parent)
	}
	p.printf("  created     %s\n", h.Created.Format("2006-01-02 15:04:05.000 MST"))
	p.printf("  host        %s, %s %s, %d-byte pages\n", h.Arch, h.Backend, h.BackendVersion, h.HostPageSize)
	p.printf("  RAM         %s at %#x\n", human(h.RAMSize), h.RAMBase)
	p.printf("  memory file %s, %d-byte blocks\n", h.Memory.FileID, h.Memory.BlockSize)
	p.printf("  config      %d vCPUs, %d MiB, cmdline %q\n", r.Config.VCPUs, r.Config.MemoryMiB, r.Config.Cmdline)
	p.printf("vCPUs:\n")
	for i, c := range r.VCPUs {
		p.printf("  %-3d MPIDR %#x  %-9s PC %#x  PSTATE %#x  %d sysregs  counter %d\n",
			i, c.MPIDR, c.Power, c.PC, c.PSTATE, c.SysRegs, c.Counter)
	}
	p.printf("GIC: %s %s, %d-byte state\n", r.GIC.Backend, r.GIC.BackendVersion, r.GIC.BlobBytes)
	p.printf("devices:\n")
	for _, d := range r.Devices {
		p.printf("  %-12s %d bytes\n", d.Name, d.Bytes)
	}
	if m := r.Memory; m != nil {
		what := "hold data"
		if m.Type == Diff {
			what = "were dirtied"
		}
		p.printf("memory: %s\n  %v, %s of RAM, %d of %d blocks %s (%s), %s on disk\n",
			m.Path, m.Type, human(m.Size), m.DataBlocks, m.Size/uint64(m.BlockSize), what,
			human(uint64(m.DataBlocks)*uint64(m.BlockSize)), human(uint64(m.AllocatedBytes)))
	}
	return p.err
}

// human spells a byte count with a binary unit.
func human(n uint64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB"}
	u, f := 0, float64(n)
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%.1f %s", f, units[u])
}

// printer remembers the first write error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}
