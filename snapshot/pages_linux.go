package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// On Linux the probe reads /proc/self/pagemap, one 8-byte entry per page
// (many at once), where bit 63 says the page is present, bit 62 that it is
// swapped out, and bit 61 that a present page is a file's (page cache)
// rather than anonymous memory. What a page reads as depends on its mapping:
//
//   - In a private anonymous mapping (guest RAM of a booted VM), a page
//     neither present nor swapped reads as zeros: it was never touched, or
//     was discarded.
//   - In a private file mapping (RAM restored by MapMemory), a page reads as
//     the file unless the process has a private copy of it (an anonymous
//     page, present or swapped): it is not present, or is the file's own
//     page cache page. The probe opens the file, checking that it is the
//     mapped one (device and inode), and asks lseek(SEEK_DATA) where it
//     holds data: such a page over a hole (or past the end of the file)
//     reads as zero.
//
// The mappings come from /proc/self/smaps, read once per write. Anything
// else is read: shared mappings (their pages live outside the process),
// anonymous mappings a userfaultfd fills on demand, file mappings whose
// file cannot be opened and checked (opening /proc/self/map_files needs
// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE; the path shown may name another
// file by now), and pages outside any mapping the probe knows. The probe
// trusts that the VM is paused and the file unchanged while it writes, as a
// snapshot and MapMemory already require.

const (
	pmPresent = 1 << 63
	pmSwapped = 1 << 62
	pmFile    = 1 << 61
)

type pagemapProbe struct {
	pagemap *os.File
	maps    []mapping // the mappings over RAM the probe knows, by address
}

// mapping is a private mapping: anonymous, or of file from offset off.
type mapping struct {
	start, end uintptr
	file       *os.File
	off        int64
}

func newProbe(ram []byte) pageProbe {
	if len(ram) == 0 {
		return nil
	}
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		pm.Close()
		return nil
	}
	p := &pagemapProbe{pagemap: pm}
	lo, hi := addrOf(ram), addrOf(ram)+uintptr(len(ram))
	known := false // the last header read is in p.maps
	for _, line := range strings.Split(string(smaps), "\n") {
		key, _, _ := strings.Cut(line, " ")
		if strings.HasSuffix(key, ":") { // a field of the last mapping
			if key == "VmFlags:" && known && strings.Contains(line+" ", " um ") {
				p.maps[len(p.maps)-1].close() // userfaultfd supplies missing pages
				p.maps = p.maps[:len(p.maps)-1]
			}
			continue
		}
		m, ok := parseMapping(line, lo, hi)
		if known = ok; ok {
			p.maps = append(p.maps, m)
		}
	}
	return p
}

// parseMapping parses a mapping's line in /proc/self/smaps, "start-end perms
// offset major:minor inode  path", and returns the mapping if it overlaps
// [lo, hi) and is private and anonymous, or private of a file it could open.
func parseMapping(line string, lo, hi uintptr) (mapping, bool) {
	f := strings.SplitN(line, " ", 6)
	if len(f) < 5 || len(f[1]) != 4 || f[1][3] != 'p' {
		return mapping{}, false
	}
	a, b, _ := strings.Cut(f[0], "-")
	start, err1 := strconv.ParseUint(a, 16, 64)
	end, err2 := strconv.ParseUint(b, 16, 64)
	off, err3 := strconv.ParseInt(f[2], 16, 64)
	if err1 != nil || err2 != nil || err3 != nil || uintptr(end) <= lo || uintptr(start) >= hi {
		return mapping{}, false
	}
	m := mapping{start: uintptr(start), end: uintptr(end), off: off}
	path := ""
	if len(f) == 6 {
		path = strings.TrimLeft(f[5], " ")
	}
	if f[4] == "0" { // no file: anonymous, or a special mapping such as [vdso]
		return m, path == "" || path == "[heap]" || strings.HasPrefix(path, "[anon:")
	}
	for _, name := range []string{fmt.Sprintf("/proc/self/map_files/%x-%x", start, end), path} {
		if m.file = openMapped(name, f[3], f[4]); m.file != nil {
			return m, true
		}
	}
	return mapping{}, false
}

// openMapped opens the regular file at name if its device and inode are dev
// ("major:minor", hex) and ino, or returns nil.
func openMapped(name, dev, ino string) *os.File {
	same := func(fi os.FileInfo) bool {
		st, ok := fi.Sys().(*syscall.Stat_t)
		return ok && fi.Mode().IsRegular() && strconv.FormatUint(st.Ino, 10) == ino &&
			fmt.Sprintf("%02x:%02x", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev))) == dev
	}
	if fi, err := os.Stat(name); err != nil || !same(fi) {
		return nil
	}
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	if fi, err := f.Stat(); err != nil || !same(fi) {
		f.Close()
		return nil
	}
	return f
}

func (p *pagemapProbe) mayHold(data []byte) []bool {
	ps := uintptr(pageSize)
	first, end := addrOf(data)/ps, (addrOf(data)+uintptr(len(data))+ps-1)/ps // page numbers
	entries := make([]byte, 8*(end-first))
	if _, err := p.pagemap.ReadAt(entries, int64(first)*8); err != nil {
		return nil
	}
	hold := make([]bool, end-first)
	for i := range hold {
		hold[i] = true // unless a known mapping says otherwise
	}
	for _, m := range p.maps {
		lo, hi := max(m.start/ps, first), min(m.end/ps, end)
		if lo >= hi {
			continue
		}
		for pg := lo; pg < hi; pg++ {
			e := binary.LittleEndian.Uint64(entries[8*(pg-first):])
			if m.file != nil && e&(pmFile|pmSwapped) == pmFile {
				e = 0 // the file's own page: as the file says
			}
			hold[pg-first] = e&(pmPresent|pmSwapped) != 0
		}
		if m.file != nil {
			m.markData(hold[lo-first:hi-first], m.off+int64(lo*ps-m.start))
		}
	}
	return hold
}

// markData sets hold[i] for each page i whose file range, from offset off
// on, holds data.
func (m *mapping) markData(hold []bool, off int64) {
	ps := int64(pageSize)
	end := off + int64(len(hold))*ps
	mark := func(from, to int64) {
		for i := (from - off) / ps; i < min((to-off+ps-1)/ps, int64(len(hold))); i++ {
			hold[i] = true
		}
	}
	for at := off; at < end; {
		data, err := m.file.Seek(at, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) { // no data from at to the end of the file
			return
		} else if err != nil || data < at {
			mark(at, end)
			return
		} else if data >= end {
			return
		}
		hole, err := m.file.Seek(data, unix.SEEK_HOLE)
		if err != nil || hole <= data {
			hole = end
		}
		mark(data, min(hole, end))
		at = hole
	}
}

func (m *mapping) close() {
	if m.file != nil {
		m.file.Close()
	}
}

func (p *pagemapProbe) Close() error {
	for i := range p.maps {
		p.maps[i].close()
	}
	return p.pagemap.Close()
}
