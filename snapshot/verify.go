package snapshot

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
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
	r.Memory.DataBlocks = m.carried
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
// checksum and that every other block reads as zeros. The table must have
// been read. A block lying wholly in a hole of the file reads as zeros
// without being read, so the work grows with the data the file holds.
func (m *memFile) scan() error {
	bs, n := int(m.ft.BlockSize), m.ft.blocks()
	zero := make([]byte, bs)
	zsum := crc32.Checksum(zero, castagnoli)
	var buf []byte
	k := 0 // the index of the next carried block's checksum
	for i := 0; i < n; {
		// The next block to look at: one the file carries, or one not
		// wholly in a hole. The blocks before it are holes, and not carried.
		j, err := m.nextMarked(i)
		if err != nil {
			return err
		}
		if j = min(j, m.nextData(i)); j == n {
			break
		}
		if m.hole(j) { // so it is carried, and reads as zeros
			if err := m.checkSum(j, k, zsum, true); err != nil {
				return err
			}
			i, k = j+1, k+1
			continue
		}
		e := m.dataEnd(j, min(n, j+chunkSize/bs))
		if buf == nil {
			buf = make([]byte, min(chunkSize, n*bs))
		}
		c := buf[:(e-j)*bs]
		if _, err := m.ReadAt(c, int64(j)*int64(bs)); err != nil {
			return fmt.Errorf("snapshot: reading %s: %w", m.path, err)
		}
		for b := j; b < e; b++ {
			blk := c[(b-j)*bs : (b-j+1)*bs]
			if mk, err := m.marked(b); err != nil {
				return err
			} else if mk {
				if err := m.check(b, k, blk); err != nil {
					return err
				}
				k++
			} else if !bytes.Equal(blk, zero) {
				return &FormatError{Path: m.path, Err: ErrCorrupt, Problem: fmt.Sprintf(
					"block %d (offset %#x) holds data the footer does not list", b, uint64(b)*uint64(bs))}
			}
		}
		i = e
	}
	return nil
}

// WriteText prints the report for people. Strings from the files are
// printed so that they cannot forge output (see quote, token and pathText):
// a state file cannot break a line or send a terminal escape sequence.
func (r *Report) WriteText(w io.Writer) error {
	h := &r.Header
	p := &printer{w: w}
	p.printf("snapshot %s: %v, format %v, %d-byte state file\n", token(h.ID), h.Type, r.Format, r.StateBytes)
	if h.Parent != "" {
		p.printf("  parent      %s\n", token(h.Parent))
	}
	p.printf("  created     %s\n", h.Created.Format("2006-01-02 15:04:05.000 MST"))
	p.printf("  host        %s, %s %s, %d-byte pages\n", token(h.Arch), token(h.Backend), quote(h.BackendVersion), h.HostPageSize)
	p.printf("  RAM         %s at %#x\n", human(h.RAMSize), h.RAMBase)
	p.printf("  memory file %s, %d-byte blocks\n", token(h.Memory.FileID), h.Memory.BlockSize)
	p.printf("  config      %d vCPUs, %d MiB, cmdline %s\n", r.Config.VCPUs, r.Config.MemoryMiB, quote(r.Config.Cmdline))
	p.printf("vCPUs:\n")
	for i, c := range r.VCPUs {
		p.printf("  %-3d MPIDR %#x  %-9s PC %#x  PSTATE %#x  %d sysregs  counter %d\n",
			i, c.MPIDR, token(c.Power), c.PC, c.PSTATE, c.SysRegs, c.Counter)
	}
	p.printf("GIC: %s %s, %d-byte state\n", token(r.GIC.Backend), quote(r.GIC.BackendVersion), r.GIC.BlobBytes)
	p.printf("devices:\n")
	for _, d := range r.Devices {
		p.printf("  %-12s %d bytes\n", quote(d.Name), d.Bytes)
	}
	if m := r.Memory; m != nil {
		what := "hold data"
		if m.Type == Diff {
			what = "were dirtied"
		}
		p.printf("memory: %s\n  %v, %s of RAM, %d of %d blocks %s (%s), %s on disk\n",
			pathText(m.Path), m.Type, human(m.Size), m.DataBlocks, m.Size/uint64(max(m.BlockSize, 1)), what,
			human(uint64(m.DataBlocks)*uint64(m.BlockSize)), human(uint64(m.AllocatedBytes)))
	}
	return p.err
}

// Text output spells a string taken from a file in one of three ways, none
// of which can hold a line break, a control character (so no terminal
// escape sequence) or a character that prints as nothing or reorders the
// line (bidirectional overrides and the like):
//
//   - quote: free text (backend versions, device names, the kernel command
//     line) as a Go string literal (strconv.Quote), always, so the text
//     around it cannot be forged either.
//   - token: what the decoder has restricted to letters, digits and . _ -
//     (IDs, architecture, backend, power states) as it is; anything else,
//     which a valid file cannot hold, quoted.
//   - pathText: a path (given on the command line, not read from a file) as
//     it is when every character of it prints, else quoted.
func quote(s string) string { return strconv.Quote(s) }

func token(s string) string {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}

func pathText(s string) string {
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(c rune) bool { return c != ' ' && !strconv.IsPrint(c) }) {
		return strconv.Quote(s)
	}
	return s
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
