package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/gic"
	"github.com/squibvm/squib/psci"
	"github.com/squibvm/squib/snapshot"
)

// The offline snapshot commands run the real binary (squibdBin) on snapshot
// files the tests write with the snapshot package.

const snapRAM = 1 << 20 // bytes of guest RAM in the test snapshots

// runSnapshot runs squibd snapshot args... and returns its exit status,
// stdout and stderr.
func runSnapshot(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(squibdBin, append([]string{"snapshot"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	if s := stderr.String(); strings.Contains(s, "panic:") || strings.Contains(s, "goroutine ") {
		t.Fatalf("squibd snapshot %v: stack trace on stderr: %s", args, s)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// snapState returns a valid machine state with one vCPU per power state
// given and snapRAM bytes of RAM, ready for snapshot.Create; parent is empty
// for a full snapshot.
func snapState(parent string, power ...psci.Power) *snapshot.State {
	st := &snapshot.State{
		Header: snapshot.Header{Backend: gic.BackendKVM, BackendVersion: "6.8.0", RAMBase: 0x4000_0000,
			RAMSize: snapRAM, Parent: parent},
		Machine: snapshot.Machine{
			Config: snapshot.Config{VCPUs: len(power), MemoryMiB: snapRAM >> 20, Cmdline: "console=ttyAMA0"},
			GIC:    gic.State{Backend: gic.BackendKVM, BackendVersion: "6.8.0", Blob: []byte{1, 2, 3}, ICC: make([]gic.ICCRegs, len(power))},
		},
	}
	for i, p := range power {
		st.Machine.VCPUs = append(st.Machine.VCPUs, snapshot.VCPU{PC: 0x4008_0000 + uint64(i)*4, MPIDR: 1<<31 | uint64(i), Power: p})
	}
	return st
}

func snapFiles(dir, name string) snapshot.Files {
	return snapshot.Files{State: filepath.Join(dir, name+".state"), Memory: filepath.Join(dir, name+".mem")}
}

// writeSnapshot creates a snapshot of st and ram at f: a diff holding the
// blocks dirty marks, or a full snapshot when dirty is nil.
func writeSnapshot(t *testing.T, f snapshot.Files, st *snapshot.State, ram []byte, dirty snapshot.Bitmap) {
	t.Helper()
	if err := snapshot.Create(f, st, ram, snapshot.CreateOptions{Dirty: dirty}); err != nil {
		t.Fatal(err)
	}
}

// testRAM returns snapRAM bytes of random data, with the second half zero.
func testRAM(seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	ram := make([]byte, snapRAM)
	for i := range snapRAM / 2 {
		ram[i] = byte(rng.Uint32())
	}
	return ram
}

// blockSize is the block size Create uses by default.
var blockSize = snapshot.DefaultBlockSize()

// describeJSON holds the fields of describe's and verify's JSON the tests
// check.
type describeJSON struct {
	Format struct{ Major, Minor int } `json:"format"`
	Header struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Parent  string `json:"parent"`
		RAMSize uint64 `json:"ram_size"`
	} `json:"header"`
	Config struct {
		VCPUs     int    `json:"vcpus"`
		MemoryMiB uint64 `json:"memory_mib"`
	} `json:"config"`
	VCPUs []struct {
		Power string `json:"power"`
		PC    uint64 `json:"pc"`
	} `json:"vcpus"`
	Memory *struct {
		Size       uint64 `json:"size"`
		Type       string `json:"type"`
		DataBlocks int    `json:"data_blocks"`
	} `json:"memory"`
	RestoreShape *struct {
		BootVCPU        []string `json:"boot_vcpu"`
		BootVCPURefused string   `json:"boot_vcpu_refused"`
		Saved           []string `json:"saved"`
	} `json:"restore_shape"`
	OK    *bool  `json:"ok"`
	Error string `json:"error"`
}

func parseJSON(t *testing.T, stdout string) describeJSON {
	t.Helper()
	var d describeJSON
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("output is not JSON: %v: %q", err, stdout)
	}
	if strings.Count(stdout, "\n") != 1 || !strings.HasSuffix(stdout, "\n") {
		t.Errorf("JSON output is not one line: %q", stdout)
	}
	return d
}

func TestSnapshotDescribe(t *testing.T) {
	dir := t.TempDir()
	f := snapFiles(dir, "vm")
	st := snapState("", psci.On, psci.On)
	writeSnapshot(t, f, st, testRAM(1), nil)
	id := st.Header.ID

	status, stdout, stderr := runSnapshot(t, "describe", "--snapshot", f.State)
	if status != exitOK || stderr != "" {
		t.Fatalf("describe: status %d, stderr %q", status, stderr)
	}
	for _, want := range []string{"snapshot " + id + ": Full, format 1.2", "RAM         1.0 MiB at 0x40000000",
		"config      2 vCPUs, 1 MiB", "  1   MPIDR 0x80000001  On "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("describe lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "restore shape") || strings.Contains(stdout, "memory:") {
		t.Errorf("describe without --restore-shape, or of a state file alone, says too much:\n%s", stdout)
	}

	status, stdout, stderr = runSnapshot(t, "describe", "--snapshot", f.State, "--json")
	if status != exitOK || stderr != "" {
		t.Fatalf("describe --json: status %d, stderr %q", status, stderr)
	}
	d := parseJSON(t, stdout)
	if d.Header.ID != id || d.Header.Type != "Full" || d.Header.RAMSize != snapRAM || d.Config.VCPUs != 2 ||
		d.Config.MemoryMiB != 1 || len(d.VCPUs) != 2 || d.VCPUs[1].PC != 0x4008_0004 || d.Format.Major != 1 {
		t.Errorf("describe --json: %+v", d)
	}
	if d.Memory != nil || d.RestoreShape != nil || d.OK != nil {
		t.Errorf("describe --json has memory, restore_shape or ok: %s", stdout)
	}

	// A diff's state file describes on its own.
	diff := snapFiles(dir, "diff")
	st2 := snapState(id, psci.On, psci.Off)
	writeSnapshot(t, diff, st2, testRAM(1), snapshot.NewBitmap(snapRAM/blockSize))
	_, stdout, _ = runSnapshot(t, "describe", "--snapshot", diff.State, "--json")
	if d := parseJSON(t, stdout); d.Header.Type != "Diff" || d.Header.Parent != id || d.Header.ID != st2.Header.ID {
		t.Errorf("describe --json of a diff: %+v", d)
	}
}

func TestSnapshotRestoreShape(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		saved            []psci.Power
		bootVCPU, saved2 []string
	}{
		{[]psci.Power{psci.On, psci.On}, nil, []string{"On", "On"}}, // boot_vcpu refused
		{[]psci.Power{psci.On, psci.OnPending, psci.Off}, nil, []string{"On", "On", "Off"}},
		{[]psci.Power{psci.On, psci.Off, psci.Off}, []string{"On", "Off", "Off"}, []string{"On", "Off", "Off"}},
		{[]psci.Power{psci.Off}, []string{"On"}, []string{"Off"}},
	}
	for i, c := range cases {
		f := snapFiles(dir, string(rune('a'+i)))
		writeSnapshot(t, f, snapState("", c.saved...), testRAM(2), nil)
		status, stdout, stderr := runSnapshot(t, "describe", "--snapshot", f.State, "--restore-shape", "--json")
		if status != exitOK {
			t.Fatalf("%v: status %d, stderr %q", c.saved, status, stderr)
		}
		d := parseJSON(t, stdout)
		refused := c.bootVCPU == nil
		if d.RestoreShape == nil || !reflect.DeepEqual(d.RestoreShape.BootVCPU, c.bootVCPU) || !reflect.DeepEqual(d.RestoreShape.Saved, c.saved2) ||
			refused != strings.Contains(d.RestoreShape.BootVCPURefused, "vCPU 1 was online") {
			t.Errorf("%v: restore_shape %+v; want boot_vcpu %v, saved %v", c.saved, d.RestoreShape, c.bootVCPU, c.saved2)
		}
		if len(d.VCPUs) != len(c.saved) || d.Header.ID == "" { // the report is still there
			t.Errorf("%v: report %+v", c.saved, d)
		}
		status, stdout, _ = runSnapshot(t, "describe", "--snapshot", f.State, "--restore-shape")
		boot := strings.Join(c.bootVCPU, " ") + "\n"
		if refused {
			boot = "refused: boot_vcpu restores only vCPU 0, but vCPU 1 was online"
		}
		want := "  saved      " + strings.Join(c.saved2, " ") + "\n  boot_vcpu  " + boot
		if status != exitOK || !strings.Contains(stdout, "restore shape") || !strings.Contains(stdout, want) {
			t.Errorf("%v: text output ends\n%s\nwant\n%s", c.saved, stdout[max(0, len(stdout)-200):], want)
		}
	}
}

func TestSnapshotVerify(t *testing.T) {
	dir := t.TempDir()
	f := snapFiles(dir, "vm")
	st := snapState("", psci.On, psci.Off)
	writeSnapshot(t, f, st, testRAM(3), nil)

	status, stdout, stderr := runSnapshot(t, "verify", "--snapshot", f.State, "--mem", f.Memory)
	if status != exitOK || stderr != "" || !strings.HasSuffix(stdout, "\nok: state file and memory file are intact\n") ||
		!strings.Contains(stdout, "snapshot "+st.Header.ID) || !strings.Contains(stdout, "memory: "+f.Memory) {
		t.Fatalf("verify: status %d, stdout %q, stderr %q", status, stdout, stderr)
	}
	status, stdout, _ = runSnapshot(t, "verify", "--snapshot", f.State, "--mem", f.Memory, "--json")
	d := parseJSON(t, stdout)
	wantBlocks := snapRAM / 2 / blockSize // the first half of the RAM holds data
	if status != exitOK || d.OK == nil || !*d.OK || d.Error != "" || d.Header.ID != st.Header.ID || d.Memory == nil ||
		d.Memory.Size != snapRAM || d.Memory.Type != "Full" || d.Memory.DataBlocks != wantBlocks {
		t.Errorf("verify --json: status %d, %+v, memory %+v; want %d data blocks", status, d, d.Memory, wantBlocks)
	}

	// A bit flipped in a data block of the memory file.
	mem, err := os.ReadFile(f.Memory)
	if err != nil {
		t.Fatal(err)
	}
	mem[3*blockSize+100] ^= 0x04
	bad := filepath.Join(dir, "flipped.mem")
	if err := os.WriteFile(bad, mem, 0o600); err != nil {
		t.Fatal(err)
	}
	status, stdout, stderr = runSnapshot(t, "verify", "--snapshot", f.State, "--mem", bad)
	if status != exitError || !strings.HasPrefix(stderr, "squibd: ") || strings.Count(stderr, "\n") != 1 ||
		!strings.Contains(stderr, bad+": checksum mismatch: block 3 ") {
		t.Errorf("verify of a flipped bit: status %d, stderr %q", status, stderr)
	}
	if strings.Contains(stdout, "ok:") {
		t.Errorf("verify of a flipped bit says ok: %q", stdout)
	}
	status, stdout, _ = runSnapshot(t, "verify", "--snapshot", f.State, "--mem", bad, "--json")
	if d := parseJSON(t, stdout); status != exitError || d.OK == nil || *d.OK || !strings.Contains(d.Error, "checksum mismatch") ||
		d.Header.ID != st.Header.ID {
		t.Errorf("verify --json of a flipped bit: status %d, %+v", status, d)
	}

	// A truncated state file.
	state, err := os.ReadFile(f.State)
	if err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.state")
	if err := os.WriteFile(short, state[:len(state)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	status, stdout, stderr = runSnapshot(t, "verify", "--snapshot", short, "--mem", f.Memory)
	if status != exitError || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, short+": file truncated") {
		t.Errorf("verify of a truncated state file: status %d, stdout %q, stderr %q", status, stdout, stderr)
	}
	status, stdout, _ = runSnapshot(t, "verify", "--snapshot", short, "--mem", f.Memory, "--json")
	if d := parseJSON(t, stdout); status != exitError || d.OK == nil || *d.OK || d.Header.ID != "" || !strings.Contains(d.Error, "file truncated") {
		t.Errorf("verify --json of a truncated state file: status %d, %q", status, stdout)
	}
	if status, _, stderr := runSnapshot(t, "describe", "--snapshot", short); status != exitError || !strings.Contains(stderr, "file truncated") {
		t.Errorf("describe of a truncated state file: status %d, stderr %q", status, stderr)
	}

	// A memory file of another snapshot.
	other := snapFiles(dir, "other")
	writeSnapshot(t, other, snapState("", psci.On, psci.Off), testRAM(3), nil)
	if status, _, stderr := runSnapshot(t, "verify", "--snapshot", f.State, "--mem", other.Memory); status != exitError ||
		!strings.Contains(stderr, "memory file does not match") {
		t.Errorf("verify of another snapshot's memory file: status %d, stderr %q", status, stderr)
	}
}

// mergeChain writes a full snapshot and two diffs, each changing some blocks
// of the RAM, and returns their files, the final RAM and the last diff's ID.
func mergeChain(t *testing.T, dir string) (base, d1, d2 snapshot.Files, ram []byte, id string) {
	ram = testRAM(4)
	base, d1, d2 = snapFiles(dir, "base"), snapFiles(dir, "d1"), snapFiles(dir, "d2")
	st0 := snapState("", psci.On, psci.On)
	writeSnapshot(t, base, st0, ram, nil)

	block := func(i int) []byte { return ram[i*blockSize : (i+1)*blockSize] }
	dirty := snapshot.NewBitmap(snapRAM / blockSize)
	for _, i := range []int{1, snapRAM / blockSize / 2} { // a data block, a hole
		for j := range block(i) {
			block(i)[j] = byte(i + j)
		}
		dirty.Set(i)
	}
	st1 := snapState(st0.Header.ID, psci.On, psci.On)
	writeSnapshot(t, d1, st1, ram, dirty)

	dirty = snapshot.NewBitmap(snapRAM / blockSize)
	clear(block(0)) // a data block zeroed
	copy(block(1), "rewritten again")
	copy(block(snapRAM/blockSize-1), "the last block")
	for _, i := range []int{0, 1, snapRAM/blockSize - 1} {
		dirty.Set(i)
	}
	st2 := snapState(st1.Header.ID, psci.On, psci.Off)
	st2.Machine.VCPUs[0].PC = 0x4010_0000
	writeSnapshot(t, d2, st2, ram, dirty)
	return base, d1, d2, ram, st2.Header.ID
}

func TestSnapshotMerge(t *testing.T) {
	dir := t.TempDir()
	base, d1, d2, ram, id := mergeChain(t, dir)
	out := snapFiles(t.TempDir(), "merged")
	status, stdout, stderr := runSnapshot(t, "merge", "--snapshot", base.State, "--mem", base.Memory,
		"--diff", d1.State+":"+d1.Memory, "--diff", d2.State+":"+d2.Memory, "--out-snapshot", out.State, "--out-mem", out.Memory)
	want := "merged 2 diff(s) into full snapshot " + id + "\n  state  " + out.State + "\n  memory " + out.Memory + "\n"
	if status != exitOK || stderr != "" || stdout != want {
		t.Fatalf("merge: status %d, stdout %q, stderr %q; want %q", status, stdout, stderr, want)
	}
	if status, stdout, stderr := runSnapshot(t, "verify", "--snapshot", out.State, "--mem", out.Memory); status != exitOK ||
		!strings.HasSuffix(stdout, "ok: state file and memory file are intact\n") {
		t.Errorf("verify of the merged snapshot: status %d, stderr %q", status, stderr)
	}
	got := make([]byte, snapRAM)
	if err := snapshot.LoadMemory(out.Memory, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ram) {
		t.Error("the merged RAM differs from the RAM of the last diff")
	}
	st, err := snapshot.ReadState(out.State)
	if err != nil {
		t.Fatal(err)
	}
	if h := st.Header; h.ID != id || h.Type != snapshot.Full || h.Parent != "" || st.Machine.VCPUs[0].PC != 0x4010_0000 ||
		st.Machine.VCPUs[1].Power != psci.Off {
		t.Errorf("merged state: header %+v, vCPUs %+v; want the last diff's state as a full snapshot", h, st.Machine.VCPUs)
	}

	// Merging one diff at a time, with JSON output.
	step := snapFiles(t.TempDir(), "step")
	status, stdout, stderr = runSnapshot(t, "merge", "--snapshot", base.State, "--mem", base.Memory,
		"--diff", d1.State+":"+d1.Memory, "--out-snapshot", step.State, "--out-mem", step.Memory, "--json")
	var m struct {
		ID            string
		Diffs         int
		State, Memory string
	}
	if err := json.Unmarshal([]byte(stdout), &m); status != exitOK || err != nil || m.Diffs != 1 || m.State != step.State ||
		m.Memory != step.Memory || m.ID == "" || m.ID == id {
		t.Fatalf("merge --json: status %d, %q (%v), stderr %q", status, stdout, err, stderr)
	}
	status, _, stderr = runSnapshot(t, "merge", "--snapshot", step.State, "--mem", step.Memory,
		"--diff", d2.State+":"+d2.Memory, "--out-snapshot", step.State, "--out-mem", step.Memory)
	clear(got)
	if err := snapshot.LoadMemory(step.Memory, got); status != exitOK || err != nil || !bytes.Equal(got, ram) {
		t.Errorf("merge in place: status %d, stderr %q, LoadMemory: %v, RAM equal: %v", status, stderr, err, bytes.Equal(got, ram))
	}
}

func TestSnapshotMergeFailures(t *testing.T) {
	dir := t.TempDir()
	base, d1, d2, _, _ := mergeChain(t, dir)
	diff := func(f snapshot.Files) string { return f.State + ":" + f.Memory }

	// A failed merge leaves nothing in the output directory: neither the
	// output files nor temporary ones.
	outDir := t.TempDir()
	out := snapFiles(outDir, "merged")
	noOutput := func(what string) {
		t.Helper()
		if entries, err := os.ReadDir(outDir); err != nil || len(entries) != 0 {
			t.Errorf("%s: the output directory holds %v (%v)", what, entries, err)
		}
	}
	merge := func(diffs ...string) []string {
		args := []string{"merge", "--snapshot", base.State, "--mem", base.Memory}
		for _, d := range diffs {
			args = append(args, "--diff", d)
		}
		return append(args, "--out-snapshot", out.State, "--out-mem", out.Memory)
	}

	// The diffs out of order.
	status, _, stderr := runSnapshot(t, merge(diff(d2), diff(d1))...)
	if status != exitError || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, d2.State+": diff does not apply to its base") {
		t.Errorf("merge out of order: status %d, stderr %q", status, stderr)
	}
	noOutput("merge out of order")

	// A diff whose memory file is damaged: the merge fails while writing.
	mem, err := os.ReadFile(d2.Memory)
	if err != nil {
		t.Fatal(err)
	}
	mem[blockSize+1] ^= 0x80 // block 1, which d2 carries
	bad := filepath.Join(dir, "bad.mem")
	if err := os.WriteFile(bad, mem, 0o600); err != nil {
		t.Fatal(err)
	}
	status, _, stderr = runSnapshot(t, merge(diff(d1), d2.State+":"+bad)...)
	if status != exitError || !strings.Contains(stderr, bad+": checksum mismatch") {
		t.Errorf("merge of a damaged diff: status %d, stderr %q", status, stderr)
	}
	noOutput("merge of a damaged diff")

	// Command-line mistakes.
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{merge("nocolon"), `invalid value "nocolon" for flag -diff: want STATE:MEM`},
		{merge(d1.State + ":"), "want STATE:MEM"},
		{merge(":" + d1.Memory), "want STATE:MEM"},
		{merge("a:b:c"), "want STATE:MEM"},
		{merge(), "at least one --diff STATE:MEM is required"},
		{[]string{"merge", "--snapshot", base.State, "--mem", base.Memory, "--diff", diff(d1), "--out-snapshot", out.State}, "--out-mem is required"},
		{[]string{"merge", "--snapshot", base.State, "--mem", base.Memory, "--diff", diff(d1), "--out-mem", out.Memory}, "--out-snapshot is required"},
		{[]string{"merge", "--snapshot", base.State, "--diff", diff(d1), "--out-snapshot", out.State, "--out-mem", out.Memory}, "--mem is required"},
		{[]string{"merge", "--mem", base.Memory, "--diff", diff(d1), "--out-snapshot", out.State, "--out-mem", out.Memory}, "--snapshot is required"},
		{[]string{"merge", "--snapshot", base.State, "--mem", base.Memory, "--diff", diff(d1), "--out-snapshot", out.State, "--out-mem", out.State}, "name the same file"},
		{append(merge(diff(d1)), "extra"), `unexpected argument "extra"`},
		{[]string{"describe"}, "--snapshot is required"},
		{[]string{"describe", "--snapshot", base.State, "--mem", base.Memory}, "flag provided but not defined: -mem"},
		{[]string{"describe", "--snapshot", base.State, "extra"}, `unexpected argument "extra"`},
		{[]string{"verify", "--snapshot", base.State}, "--mem is required"},
		{[]string{"verify", "--mem", base.Memory}, "--snapshot is required"},
		{[]string{"verify", "--snapshot", base.State, "--mem", base.Memory, "--restore-shape"}, "flag provided but not defined: -restore-shape"},
		{[]string{"inspect"}, "usage: squibd snapshot create|load"},
		{nil, "describe|verify|merge"},
	} {
		status, stdout, stderr := runSnapshot(t, c.args...)
		if status != exitUsage || stdout != "" || !strings.Contains(stderr, c.msg) {
			t.Errorf("%q: status %d, stdout %q, stderr %q; want status %d and %q", c.args, status, stdout, stderr, exitUsage, c.msg)
		}
	}
	noOutput("command-line mistakes")

	for _, what := range []string{"describe", "verify", "merge"} {
		status, stdout, stderr := runSnapshot(t, what, "-h")
		if status != exitOK || stdout != "" || !strings.HasPrefix(stderr, "usage: squibd snapshot "+what+" --snapshot ") {
			t.Errorf("%s -h: status %d, stderr %q", what, status, stderr)
		}
	}
}

// sealEnvelope wraps a CBOR body in the envelope of docs/snapshot-format.md
// §1, so the tests can write files the snapshot package would refuse to.
func sealEnvelope(magic string, body []byte) []byte {
	b := append([]byte(magic), 0, 0, 0, 0)
	binary.LittleEndian.PutUint16(b[8:], snapshot.FormatMajor)
	binary.LittleEndian.PutUint16(b[10:], snapshot.FormatMinor)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(body)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	b = append(b, body...)
	return binary.LittleEndian.AppendUint64(b, crc64.Checksum(b, crc64.MakeTable(crc64.ECMA)))
}

// writeState writes st as a state file at path without validating it.
func writeState(t *testing.T, path string, st *snapshot.State) {
	t.Helper()
	body, err := snapshot.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, sealEnvelope("SQUIB-ST", body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// holePair writes, as files f, a consistent snapshot of ramSize bytes of RAM
// in bs-byte blocks whose memory file is all holes (its block table too) but
// for the footer: a full snapshot, or a diff of parent that carries no
// block. The file's size is what the footer says, unless imageBytes is not
// zero: then the RAM image is that long, whatever the footer says. It
// returns the snapshot's ID.
func holePair(t *testing.T, f snapshot.Files, ramSize uint64, bs int, parent string, imageBytes int64) string {
	t.Helper()
	id, fileID, typ := snapshot.NewID(), snapshot.NewID(), snapshot.Full
	if parent != "" {
		typ = snapshot.Diff
	}
	bitmap := (ramSize/uint64(bs) + 7) / 8
	crc := crc32.MakeTable(crc32.Castagnoli)
	sum, zeros := uint32(0), make([]byte, 1<<20)
	for n := bitmap; n > 0; n -= min(n, uint64(len(zeros))) {
		sum = crc32.Update(sum, crc, zeros[:min(n, uint64(len(zeros)))])
	}
	body, err := snapshot.Marshal(map[int]any{1: fileID, 2: id, 3: parent, 4: uint8(typ), 5: ramSize, 6: uint32(bs), 7: bitmap, 8: sum})
	if err != nil {
		t.Fatal(err)
	}
	env := sealEnvelope("SQUIB-MM", body)
	image := int64(ramSize + bitmap)
	if imageBytes != 0 {
		image = imageBytes
	}
	mem, err := os.Create(f.Memory)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if err := mem.Truncate(image); err != nil {
		t.Skipf("cannot make a %d-byte sparse file: %v", image, err)
	}
	if _, err := mem.WriteAt(binary.LittleEndian.AppendUint64(env, uint64(len(env))), image); err != nil {
		t.Fatal(err)
	}
	st := snapState(parent, psci.On)
	h := &st.Header
	h.Arch, h.HostPageSize, h.RAMSize, h.ID, h.Type, h.Created = snapshot.Arch, 4096, ramSize, id, typ, time.Now().UTC()
	h.Memory = snapshot.MemoryRef{FileID: fileID, Size: ramSize, BlockSize: uint32(bs)}
	st.Machine.Config.MemoryMiB = ramSize >> 20
	writeState(t, f.State, st)
	return id
}

// holesReported reports whether the file system of dir says where a sparse
// file's holes are.
func holesReported(t *testing.T, dir string) bool {
	f, err := os.Create(filepath.Join(dir, "hole-probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(1 << 30); err != nil {
		return false
	}
	_, err = f.Seek(0, 3) // SEEK_DATA: there is none
	return errors.Is(err, syscall.ENXIO)
}

// staticSquibd is squibd built as the Makefile builds it, without cgo: a
// cgo binary makes threads with 8 MiB stacks, which a memory limit counts.
var staticSquibd = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(squibdBin), "squibd-static")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return bin, nil
})

// memoryLimit is the address space the offline commands get in
// TestSnapshotHugeRAM, in KiB (ulimit -v): 1 GiB. The Go runtime reserves
// about 750 MiB of it at start-up on linux/amd64 (squibd snapshot verify of
// an ordinary snapshot runs in 800 MiB, not in 750), so a command that
// allocates more than about 250 MiB dies.
const memoryLimit = 1 << 20

// runLimited runs squibd-static snapshot args... under memoryLimit, for at
// most limit. It returns the exit status, stdout, stderr, the time taken and
// the peak resident memory.
func runLimited(t *testing.T, limit time.Duration, args ...string) (int, string, string, time.Duration, int64) {
	t.Helper()
	bin, err := staticSquibd()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", fmt.Sprintf(`ulimit -v %d && exec "$0" snapshot "$@"`, memoryLimit), bin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("squibd snapshot %v: still running after %v", args, limit)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss << 10
	}
	if s := stderr.String(); strings.Contains(s, "fatal error") || strings.Contains(s, "panic:") || strings.Contains(s, "goroutine ") {
		t.Fatalf("squibd snapshot %v: crashed: %.2000s", args, s)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String(), took, rss
}

// TestSnapshotHugeRAM: snapshots that declare huge RAM in sparse files,
// verified and merged under a 1 GiB address-space limit. Those declaring
// more than a restore accepts (1 TiB, 4 TiB) are refused in one line; the
// largest a restore accepts, 1 TiB - 1 GiB, all holes, verifies and merges
// correctly. Each takes moments: the work grows with the data the files
// hold, not with the RAM they declare, and nothing is allocated by a size
// from a file before it is checked.
func TestSnapshotHugeRAM(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the memory limit (ulimit -v) and its headroom are measured on Linux")
	}
	dir := t.TempDir()
	if !holesReported(t, dir) {
		t.Skip(dir, " does not report holes (SEEK_DATA): reading a huge sparse file there takes minutes")
	}
	const limit = 60 * time.Second // moments, unless the machine is very busy; reading 1 TiB of holes takes minutes

	// A plain snapshot first, to see the limit leaves room for squibd.
	f := snapFiles(dir, "plain")
	writeSnapshot(t, f, snapState("", psci.On), testRAM(5), nil)
	status, stdout, stderr, took, rss := runLimited(t, limit, "verify", "--snapshot", f.State, "--mem", f.Memory)
	if status != exitOK || !strings.HasSuffix(stdout, "ok: state file and memory file are intact\n") {
		t.Fatalf("verify of a 1 MiB snapshot under the limit: status %d, stderr %q", status, stderr)
	}
	t.Logf("verify, 1 MiB snapshot: %v, %d KiB resident", took, rss>>10)

	const maxRAM = 1<<40 - 1<<30 // snapshot.MaxRAMSize
	for _, c := range []struct {
		name       string
		ram        uint64
		imageBytes int64 // the file's image, when not as declared
		ok         bool
	}{
		{"1 TiB", 1 << 40, 0, false},
		{"4 TiB", 4 << 40, 0, false},
		{"4 TiB in 64 KiB", 4 << 40, 64 << 10, false},
		{"1 TiB - 1 GiB", maxRAM, 0, true},
	} {
		base, diff, out := snapFiles(dir, "base"), snapFiles(dir, "diff"), snapFiles(dir, "merged")
		id := holePair(t, base, c.ram, 4096, "", c.imageBytes)
		holePair(t, diff, c.ram, 4096, id, c.imageBytes)
		for _, args := range [][]string{
			{"verify", "--snapshot", base.State, "--mem", base.Memory},
			{"verify", "--snapshot", diff.State, "--mem", diff.Memory},
			{"merge", "--snapshot", base.State, "--mem", base.Memory, "--diff", diff.State + ":" + diff.Memory,
				"--out-snapshot", out.State, "--out-mem", out.Memory},
			{"verify", "--snapshot", out.State, "--mem", out.Memory},
		} {
			if !c.ok && args[2] == out.State {
				continue // no merged snapshot to verify
			}
			status, stdout, stderr, took, rss := runLimited(t, limit, args...)
			t.Logf("%s: %s: status %d, %v, %d KiB resident", c.name, args[0], status, took, rss>>10)
			switch {
			case !c.ok && (status != exitError || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "squibd: ") ||
				!strings.Contains(stderr, args[2]+": ")):
				t.Errorf("%s: %v: status %d, stderr %q; want one line refusing %s", c.name, args, status, stderr, args[2])
			case c.ok && args[0] == "verify" && (status != exitOK || !strings.HasSuffix(stdout, "ok: state file and memory file are intact\n") ||
				!strings.Contains(stdout, "0 of 268173312 blocks")):
				t.Errorf("%s: %v: status %d, stdout %q, stderr %q", c.name, args, status, stdout, stderr)
			case c.ok && args[0] == "merge" && (status != exitOK || stderr != ""):
				t.Errorf("%s: merge: status %d, stderr %q", c.name, status, stderr)
			}
		}
		for _, f := range []snapshot.Files{base, diff, out} {
			os.Remove(f.State)
			os.Remove(f.Memory)
		}
	}
}

// runPromptly is runSnapshot, failing the test if squibd does not exit
// within 10 s.
func runPromptly(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, squibdBin, append([]string{"snapshot"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("squibd snapshot %q: still running after 10 s", args)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// TestSnapshotSpecialFiles: a FIFO (no writer, no reader), a directory or a
// character device given as any file of the offline commands is refused at
// once, in one line naming it; as an output of merge, before anything is
// written, and it is left as it was.
func TestSnapshotSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	base, d1, _, _, _ := mergeChain(t, dir)
	sdir := t.TempDir()
	special := map[string]string{"FIFO": filepath.Join(sdir, "fifo"), "directory": filepath.Join(sdir, "dir")}
	if err := syscall.Mkfifo(special["FIFO"], 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // should squibd wait on the FIFO after all
		if f, err := os.OpenFile(special["FIFO"], os.O_RDWR|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	if err := os.Mkdir(special["directory"], 0o700); err != nil {
		t.Fatal(err)
	}
	if dev := filepath.Join(sdir, "zero"); syscall.Mknod(dev, syscall.S_IFCHR|0o600, 1<<8|5) == nil {
		special["character device"] = dev
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		special["/dev/zero"] = "/dev/zero"
	}
	outDir := t.TempDir()
	out := snapFiles(outDir, "merged")
	diff := d1.State + ":" + d1.Memory
	for kind, path := range special {
		cases := map[string][]string{
			"describe --snapshot": {"describe", "--snapshot", path},
			"verify --snapshot":   {"verify", "--snapshot", path, "--mem", base.Memory},
			"verify --mem":        {"verify", "--snapshot", base.State, "--mem", path},
			"merge --snapshot": {"merge", "--snapshot", path, "--mem", base.Memory, "--diff", diff,
				"--out-snapshot", out.State, "--out-mem", out.Memory},
			"merge --mem": {"merge", "--snapshot", base.State, "--mem", path, "--diff", diff,
				"--out-snapshot", out.State, "--out-mem", out.Memory},
			"merge --diff STATE": {"merge", "--snapshot", base.State, "--mem", base.Memory, "--diff", path + ":" + d1.Memory,
				"--out-snapshot", out.State, "--out-mem", out.Memory},
			"merge --diff :MEM": {"merge", "--snapshot", base.State, "--mem", base.Memory, "--diff", d1.State + ":" + path,
				"--out-snapshot", out.State, "--out-mem", out.Memory},
		}
		if !strings.HasPrefix(path, "/dev/") { // not a place to write into, even to see it refused
			cases["merge --out-snapshot"] = []string{"merge", "--snapshot", base.State, "--mem", base.Memory, "--diff", diff,
				"--out-snapshot", path, "--out-mem", out.Memory}
			cases["merge --out-mem"] = []string{"merge", "--snapshot", base.State, "--mem", base.Memory, "--diff", diff,
				"--out-snapshot", out.State, "--out-mem", path}
		}
		before, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		for name, args := range cases {
			status, stdout, stderr := runPromptly(t, args...)
			if name == "verify --mem" && !strings.Contains(stdout, "ok:") { // verify prints the state file's report first
				stdout = ""
			}
			if status != exitError || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "squibd: ") ||
				!strings.Contains(stderr, path+": ") || !strings.Contains(stderr, "not a regular file") {
				t.Errorf("%s as %s: status %d, stdout %q, stderr %q; want one line: not a regular file", kind, name, status, stdout, stderr)
			}
		}
		if after, err := os.Lstat(path); err != nil || !os.SameFile(before, after) || after.Mode() != before.Mode() {
			t.Errorf("%s: replaced by a refused merge: %v, %v", kind, after, err)
		}
	}
	if entries, err := os.ReadDir(outDir); err != nil || len(entries) != 0 {
		t.Errorf("refused merges left %v in the output directory (%v)", entries, err)
	}
}

// TestSnapshotForgedText: strings a state file holds (backend versions,
// device names, the command line) are quoted in describe's and verify's
// text, so a state file cannot forge lines of it or send terminal escape
// sequences; JSON escapes them too.
func TestSnapshotForgedText(t *testing.T) {
	dir := t.TempDir()
	f := snapFiles(dir, "vm")
	writeSnapshot(t, f, snapState("", psci.On), testRAM(6), nil)
	plain := map[string]string{}
	for _, what := range []string{"describe", "verify"} {
		args := []string{what, "--snapshot", f.State}
		if what == "verify" {
			args = append(args, "--mem", f.Memory)
		}
		status, stdout, stderr := runSnapshot(t, args...)
		if status != exitOK {
			t.Fatalf("%s: status %d, stderr %q", what, status, stderr)
		}
		plain[what] = stdout
	}

	const forged = "\nok: state file and memory file are intact\n\x1b[2J\x1b]0;owned\a\u202e"
	st, err := snapshot.ReadState(f.State)
	if err != nil {
		t.Fatal(err)
	}
	st.Header.BackendVersion += forged
	st.Machine.GIC.BackendVersion += forged
	st.Machine.Config.Cmdline += forged
	dev, err := snapshot.Marshal(uint64(1))
	if err != nil {
		t.Fatal(err)
	}
	st.Machine.Devices = map[string]cbor.RawMessage{"pl011" + forged: dev}
	writeState(t, f.State, st) // still bound to the memory file
	for _, what := range []string{"describe", "verify"} {
		args := []string{what, "--snapshot", f.State}
		if what == "verify" {
			args = append(args, "--mem", f.Memory)
		}
		status, stdout, stderr := runSnapshot(t, args...)
		if status != exitOK || stderr != "" {
			t.Fatalf("%s of the forged state: status %d, stderr %q", what, status, stderr)
		}
		for _, bad := range []string{"\x1b", "\a", "\u202e", "\nok: state file and memory file are intact\n\x1b"} {
			if strings.Contains(stdout, bad) {
				t.Errorf("%s prints %q raw:\n%s", what, bad, stdout)
			}
		}
		if strings.Count(stdout, "\n") != strings.Count(plain[what], "\n")+1 { // one device line more
			t.Errorf("%s prints %d lines, %d for the plain state plus a device line:\n%s\n--- plain:\n%s",
				what, strings.Count(stdout, "\n"), strings.Count(plain[what], "\n"), stdout, plain[what])
		}
		if n := strings.Count(stdout, "\nok: "); what == "verify" && n != 1 || what == "describe" && n != 0 {
			t.Errorf("%s prints %d lines that start with ok:\n%s", what, n, stdout)
		}
		for _, want := range []string{`kvm "6.8.0\nok: state file`, `cmdline "console=ttyAMA0\nok:`, `"pl011\nok: `, `\x1b[2J\x1b]0;owned\a\u202e"`} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s lacks %s:\n%s", what, want, stdout)
			}
		}

		status, stdout, _ = runSnapshot(t, append(args, "--json")...)
		var d struct {
			Header struct {
				BackendVersion string `json:"backend_version"`
			} `json:"header"`
			Devices []struct{ Name string } `json:"devices"`
		}
		if err := json.Unmarshal([]byte(stdout), &d); status != exitOK || err != nil || d.Header.BackendVersion != "6.8.0"+forged ||
			len(d.Devices) != 1 || d.Devices[0].Name != "pl011"+forged {
			t.Errorf("%s --json: status %d, %v, %+v", what, status, err, d)
		}
		if strings.Count(stdout, "\n") != 1 || strings.ContainsAny(stdout, "\x1b\a\u202e") || !strings.Contains(stdout, `\u001b[2J\u001b]0;owned\u0007\u202e`) {
			t.Errorf("%s --json prints strings raw: %q", what, stdout)
		}
	}

	// Paths are the user's, but may come from a hostile directory listing:
	// in an error message, and in merge's report, they cannot break lines
	// or send escapes either.
	odd := filepath.Join(dir, "x"+forged)
	status, stdout, stderr := runSnapshot(t, "describe", "--snapshot", odd)
	if status != exitError || stdout != "" || strings.Count(stderr, "\n") != 1 || strings.ContainsAny(stderr, "\x1b\a\u202e") ||
		!strings.Contains(stderr, `x\nok: state file and memory file are intact\n\x1b[2J\x1b]0;owned\a\u202e`) {
		t.Errorf("describe of a path with control characters: status %d, stdout %q, stderr %q", status, stdout, stderr)
	}
	base, d1, _, _, _ := mergeChain(t, t.TempDir())
	out := snapshot.Files{State: odd + ".state", Memory: odd + ".mem"}
	status, stdout, stderr = runSnapshot(t, "merge", "--snapshot", base.State, "--mem", base.Memory, "--diff", d1.State+":"+d1.Memory,
		"--out-snapshot", out.State, "--out-mem", out.Memory)
	if status != exitOK || strings.Count(stdout, "\n") != 3 || strings.ContainsAny(stdout, "\x1b\a\u202e") ||
		!strings.Contains(stdout, "  state  "+strconv.Quote(out.State)+"\n") {
		t.Errorf("merge to a path with control characters: status %d, stdout %q, stderr %q", status, stdout, stderr)
	}
}
