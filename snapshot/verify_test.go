package snapshot

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVerifyReport(t *testing.T) {
	dir := t.TempDir()
	base, d1, _, _, _, _ := chain(t, dir)
	r, err := Verify(base.State, base.Memory)
	if err != nil {
		t.Fatal(err)
	}
	m := r.Memory
	if r.Format != (Version{1, 2}) || len(r.VCPUs) != 2 || len(r.Devices) != 2 || r.Devices[0].Name != "pl011" ||
		m == nil || m.Type != Full || m.Size != 1<<20 || m.BlockSize != uint32(chainBS) || m.FileBytes <= 1<<20 {
		t.Errorf("report %+v, memory %+v", r, m)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"snapshot " + r.Header.ID + ": Full, format 1.2", fmt.Sprintf(`host        arm64, kvm "6.8.0", %d-byte pages`, os.Getpagesize()),
		"RAM         1.0 MiB at 0x40000000", "  0   MPIDR 0x80000000  On ", "pl031", "blocks hold data"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"type":"Full"`, `"power":"Off"`, `"backend":"kvm"`, `"format":{"major":1,"minor":2}`} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("JSON report lacks %s: %s", want, js)
		}
	}
	if d, err := Describe(d1.State); err != nil || d.Header.Type != Diff || d.Memory != nil {
		t.Errorf("Describe(diff) = %+v, %v", d, err)
	}
}

// TestVerifyMemory: Verify reads every block, so it finds damage Load does
// not look for.
func TestVerifyMemory(t *testing.T) {
	dir := t.TempDir()
	base, _, _, _, ram, _ := chain(t, dir)
	blocks, _ := nonZero(ram, chainBS)
	data, hole := -1, -1
	for i := range len(ram) / chainBS {
		if blocks.Has(i) && data < 0 {
			data = i
		} else if !blocks.Has(i) && hole < 0 {
			hole = i
		}
	}
	if data < 0 || hole < 0 {
		t.Fatal("the RAM needs data blocks and holes")
	}
	poke := func(off int) {
		f, err := os.OpenFile(base.Memory, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x10
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	poke(hole*chainBS + 100)
	if _, err := Load(kvm, base); err != nil {
		t.Errorf("Load looks at memory contents: %v", err)
	}
	if _, err := Verify(base.State, base.Memory); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "holds data the footer does not list") {
		t.Errorf("Verify with data in a hole = %v; want ErrCorrupt", err)
	}
	poke(hole*chainBS + 100)
	poke(data*chainBS + chainBS - 1)
	if r, err := Verify(base.State, base.Memory); !errors.Is(err, ErrChecksum) || r.Memory == nil {
		t.Errorf("Verify with a flipped data bit = %v; want ErrChecksum and a report", err)
	}
}

// sparsePair writes, in dir, a snapshot of size bytes of RAM in bs-byte
// blocks whose memory file is all holes but for its block table and footer,
// as a hostile or just idle snapshot may be: a full snapshot (parent empty)
// or a diff of snapshot parent. If marked, the memory file carries every
// block, each with the checksum of a zero block (a diff's blocks dirtied and
// zeroed); else it carries none, and its bitmap is a hole too. It returns
// the files and the memory file's footer.
func sparsePair(t *testing.T, dir, name string, size uint64, bs int, parent string, marked bool) (Files, *footer) {
	t.Helper()
	f := files(dir, name)
	ft := &footer{FileID: NewID(), Snapshot: NewID(), Type: Full, Size: size, BlockSize: uint32(bs)}
	if parent != "" {
		ft.Type, ft.Parent = Diff, parent
	}
	n := ft.blocks()
	var table []byte
	if !marked {
		ft.TableLen, ft.TableSum = uint64(n+7)/8, crcZeros(0, int64(n+7)/8)
	} else {
		table = bytes.Repeat([]byte{0xff}, (n+7)/8)
		if n%8 != 0 {
			table[len(table)-1] = 1<<(n%8) - 1
		}
		zsum := crc32.Checksum(make([]byte, bs), castagnoli)
		for range n {
			table = binary.LittleEndian.AppendUint32(table, zsum)
		}
		ft.TableLen, ft.TableSum = uint64(len(table)), crc32.Checksum(table, castagnoli)
	}
	body, err := Marshal(ft)
	if err != nil {
		t.Fatal(err)
	}
	env := seal(footerMagic, formatVersion, body)
	tail := binary.LittleEndian.AppendUint64(env, uint64(len(env)))
	mem, err := os.Create(f.Memory)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if err := mem.Truncate(int64(size + ft.TableLen)); err != nil {
		t.Skipf("cannot make a %#x-byte sparse file: %v", size+ft.TableLen, err)
	}
	if _, err := mem.WriteAt(table, int64(size)); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.WriteAt(tail, int64(size+ft.TableLen)); err != nil {
		t.Fatal(err)
	}
	s := newState(t, parent)
	h := &s.Header
	h.Arch, h.HostPageSize, h.RAMSize, h.ID, h.Type, h.Created = Arch, 4096, size, ft.Snapshot, ft.Type, time.Now().UTC()
	h.Memory = ft.ref()
	s.Machine.Config.MemoryMiB = size >> 20
	state, err := EncodeState(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.State, state, 0o600); err != nil {
		t.Fatal(err)
	}
	return f, ft
}

// holesFound reports whether dir's file system says where the holes of a
// sparse file are (SEEK_DATA), as holes.go needs to skip them.
func holesFound(t *testing.T, dir string) bool {
	f, err := os.Create(filepath.Join(dir, "seek-probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	e := extents{f: f, size: 1 << 20}
	return e.holeEnd(0) == 1<<20
}

// TestVerifySparse: verifying and merging memory files walks what the files
// hold, not the RAM size they declare. Snapshots of the largest RAM a restore
// accepts, all holes, verify and merge at once (read block by block, they
// would take minutes), and so do diffs carrying every block as a hole.
func TestVerifySparse(t *testing.T) {
	dir := t.TempDir()
	if !holesWork(t, dir) || !holesFound(t, dir) {
		t.Skip(dir, " keeps no holes, or cannot tell where they are")
	}
	const limit = 60 * time.Second // a few seconds at most, unless the machine is very busy
	verify := func(f Files) Report {
		t.Helper()
		var r Report
		err := promptly(t, limit, "Verify "+f.Memory, func() (err error) { r, err = Verify(f.State, f.Memory); return })
		if err != nil || r.Memory == nil || r.Memory.Size != r.Header.RAMSize {
			t.Fatalf("Verify(%s): %v, %+v", f.Memory, err, r.Memory)
		}
		return r
	}
	merge := func(base Files, diff Files) Files {
		t.Helper()
		out := files(dir, "merged-"+filepath.Base(diff.State))
		if err := promptly(t, limit, "Merge "+diff.State, func() error { _, err := Merge(base, []Files{diff}, out); return err }); err != nil {
			t.Fatal(err)
		}
		if got := allocated(t, out.Memory); got > 64<<20 {
			t.Errorf("%s takes %d bytes on disk", out.Memory, got)
		}
		return out
	}

	start := time.Now()
	base, ft := sparsePair(t, dir, "base", MaxRAMSize, 4096, "", false)
	diff, dft := sparsePair(t, dir, "diff", MaxRAMSize, 4096, ft.Snapshot, false)
	t.Logf("writing two %d GiB snapshots: %v", uint64(MaxRAMSize)>>30, time.Since(start))
	start = time.Now()
	verify(base)
	verify(diff)
	t.Logf("verifying them: %v", time.Since(start))
	start = time.Now()
	if r := verify(merge(base, diff)); r.Memory.DataBlocks != 0 || r.Header.ID != dft.Snapshot || r.Header.Type != Full {
		t.Errorf("the merged snapshot: %+v, carrying %d blocks", r.Header, r.Memory.DataBlocks)
	}
	t.Logf("merging them and verifying the result: %v", time.Since(start))

	// 256 GiB in 2 MiB blocks, a diff carrying every one: a table of 512 KiB.
	base, ft = sparsePair(t, dir, "base2", 256<<30, 2<<20, "", false)
	diff, _ = sparsePair(t, dir, "diff2", 256<<30, 2<<20, ft.Snapshot, true)
	start = time.Now()
	if r := verify(diff); r.Memory.DataBlocks != 256<<30/(2<<20) {
		t.Errorf("the diff carries %d blocks, want %d", r.Memory.DataBlocks, 256<<30/(2<<20))
	}
	if r := verify(merge(base, diff)); r.Memory.DataBlocks != 0 {
		t.Errorf("the merged snapshot carries %d blocks", r.Memory.DataBlocks)
	}
	t.Logf("256 GiB diff carrying every block: verify, merge, verify: %v", time.Since(start))
}

// TestWriteTextEscapes: strings from the files appear in the text report
// quoted, so a state file can neither forge lines nor send terminal escape
// sequences, whatever the decoder lets through.
func TestWriteTextEscapes(t *testing.T) {
	dir := t.TempDir()
	base, _, _, _, _, _ := chain(t, dir)
	r, err := Verify(base.State, base.Memory)
	if err != nil {
		t.Fatal(err)
	}
	var plain bytes.Buffer
	if err := r.WriteText(&plain); err != nil {
		t.Fatal(err)
	}
	const forged = "\nok: state file and memory file are intact\n\x1b[2J\x1b]0;owned\a\u202e"
	r.Header.BackendVersion += forged
	r.GIC.BackendVersion = forged
	r.Config.Cmdline = forged
	r.Devices = append(r.Devices, DeviceReport{Name: "pl011" + forged, Bytes: 1})
	r.Header.Arch, r.Header.Backend, r.Header.Parent, r.VCPUs[0].Power = "arm64"+forged, forged, forged, forged
	r.Memory.Path += forged
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, bad := range []string{"\x1b", "\a", "\u202e", "\nok:"} {
		if strings.Contains(out, bad) {
			t.Errorf("the report holds %q:\n%s", bad, out)
		}
	}
	// One line more than the plain report: the parent's, and one more device.
	if got, want := strings.Count(out, "\n"), strings.Count(plain.String(), "\n")+2; got != want {
		t.Errorf("the report has %d lines, want %d:\n%s", got, want, out)
	}
	for _, want := range []string{`, "\nok: state file`, `"6.8.0\nok: state file`, `GIC: kvm "\nok: state file`, `"pl011\nok:`, `\x1b[2J\x1b]0;owned\a\u202e"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %s:\n%s", want, out)
		}
	}
}
