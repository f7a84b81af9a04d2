package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.cbor")

const goldenState = "testdata/state-v1.2.cbor"

// oldGoldens are the same fixture written by formats 1.0 and 1.1, which
// this reader still decodes.
var oldGoldens = []string{"testdata/state-v1.0.cbor", "testdata/state-v1.1.cbor"}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func encode(t testing.TB, s *State) []byte {
	t.Helper()
	b, err := EncodeState(s)
	if err != nil {
		t.Fatalf("EncodeState: %v", err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	want := testState(t)
	got, err := DecodeState(encode(t, want))
	if err != nil {
		t.Fatalf("DecodeState: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip changed the state:\n got %+v\nwant %+v", got, want)
	}
}

// TestGolden pins the encoding: the fixture must encode to the checked-in
// bytes, and those bytes must decode to the fixture. Regenerate with
// go test ./snapshot -run TestGolden -update, and only with a format version bump.
func TestGolden(t *testing.T) {
	b := encode(t, testState(t))
	if *update {
		if err := os.WriteFile(goldenState, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(goldenState)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, golden) {
		t.Errorf("encoding differs from %s (%d bytes, golden %d)", goldenState, len(b), len(golden))
	}
	for _, path := range append([]string{goldenState}, oldGoldens...) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if s, err := DecodeState(b); err != nil || !reflect.DeepEqual(s, testState(t)) {
			t.Errorf("decoding %s: %v, or the state differs from the fixture", path, err)
		}
	}
}

// reseal re-encodes s as a state file without validating it, with a valid
// envelope, so that decode-time checks can be tested.
func reseal(t testing.TB, s *State) []byte {
	t.Helper()
	body, err := Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return seal(stateMagic, formatVersion, body)
}

// withVersion runs f with the package playing format version v.
func withVersion(v Version, f func()) {
	defer func(old Version) { formatVersion = old }(formatVersion)
	formatVersion = v
	f()
}

func TestDecodeRefuses(t *testing.T) {
	good := encode(t, testState(t))
	withPrefix := func(f func(p []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		binary.LittleEndian.PutUint32(b[20:], crc32c(b[:20]))
		return b
	}
	var newer, major2 []byte
	withVersion(Version{1, 3}, func() { newer = encode(t, testState(t)) })
	withVersion(Version{2, 0}, func() { major2 = encode(t, testState(t)) })
	x86 := testState(t)
	x86.Header.Arch = "x86_64"
	tests := []struct {
		name string
		b    []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrTruncated, "shorter than the 24-byte header"},
		{"prefix only", good[:prefixLen], ErrTruncated, "the header says"},
		{"no trailer", good[:len(good)-trailerLen], ErrTruncated, "the header says"},
		{"one byte short", good[:len(good)-1], ErrTruncated, "the header says"},
		{"trailing data", append(bytes.Clone(good), 0), ErrCorrupt, "1 bytes of trailing data"},
		{"memory file footer", withPrefix(func(p []byte) { copy(p, footerMagic[:]) }), ErrNotSnapshot, `magic "SQUIB-MM"`},
		{"text", []byte(strings.Repeat("hello, world\n", 4)), ErrNotSnapshot, "magic"},
		{"newer minor", newer, ErrVersion, "format 1.3 is newer than this squib's 1.2; upgrade squib"},
		{"other major", major2, ErrVersion, "format 2.0; this squib reads 1.x only"},
		{"length", withPrefix(func(p []byte) { p[12]++ }), ErrTruncated, "the header says"},
		{"body CRC", withPrefix(func(p []byte) { p[len(p)-1] ^= 1 }), ErrChecksum, "CRC-64 of the contents"},
		{"prefix CRC", func() []byte { b := bytes.Clone(good); b[9] ^= 1; return b }(), ErrChecksum, "header CRC-32C"},
		{"x86_64", reseal(t, x86), ErrArch, `saved for "x86_64", this is arm64`},
		{"not CBOR", seal(stateMagic, formatVersion, []byte{0xff}), ErrCorrupt, "decoding"},
		{"too large", make([]byte, MaxStateSize+1), ErrTooLarge, "the limit is"},
	}
	for _, tt := range tests {
		_, err := DecodeState(tt.b)
		var fe *FormatError
		if !errors.Is(err, tt.want) || !errors.As(err, &fe) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: DecodeState() = %v; want a *FormatError wrapping %q mentioning %q", tt.name, err, tt.want, tt.msg)
		}
	}
	withVersion(Version{1, 3}, func() {
		if _, err := DecodeState(good); err != nil {
			t.Errorf("a 1.3 reader refuses a 1.0 file: %v", err)
		}
	})
}

// TestDecodeBitFlips flips every bit of a state file; each flip must be
// refused, and only a flip in the magic may be reported as anything but a
// checksum mismatch.
func TestDecodeBitFlips(t *testing.T) {
	good := encode(t, testState(t))
	for i := range 8 * len(good) {
		b := bytes.Clone(good)
		b[i/8] ^= 1 << (i % 8)
		want := ErrChecksum
		if i/8 < len(stateMagic) {
			want = ErrNotSnapshot
		}
		if _, err := DecodeState(b); !errors.Is(err, want) {
			t.Fatalf("bit %d: DecodeState() = %v; want %v", i, err, want)
		}
	}
}

// TestDecodeStrict checks the decoding mode on bodies with valid checksums.
func TestDecodeStrict(t *testing.T) {
	s := testState(t)
	m := &s.Machine
	hb, err1 := Marshal(s.Header)
	mb, err2 := Marshal(m)
	extra, err3 := Marshal(map[int]any{1: m.Config, 2: m.VCPUs, 3: m.GIC, 4: m.Devices, 5: "new"})
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	one, two := []byte{0x01}, []byte{0x02}
	if ok := cat([]byte{0xa2}, one, hb, two, mb); !bytes.Equal(ok, reseal(t, s)[prefixLen:len(ok)+prefixLen]) {
		t.Fatal("the body is not {1: header, 2: machine}")
	}
	tests := map[string][]byte{
		"unknown field":         cat([]byte{0xa3}, one, hb, two, mb, []byte{0x18, 0x63, 0x00}), // ..., 99: 0
		"unknown machine field": cat([]byte{0xa2}, one, hb, two, extra),
		"duplicate key":         cat([]byte{0xa3}, one, hb, one, hb, two, mb),
		"indefinite map":        cat([]byte{0xbf}, one, hb, two, mb, []byte{0xff}),
		"tag":                   cat([]byte{0xd8, 0x40, 0xa2}, one, hb, two, mb),
		"array":                 cat([]byte{0x82}, hb, mb),
		"no machine":            cat([]byte{0xa1}, one, hb),
	}
	for name, b := range tests {
		if _, err := DecodeState(seal(stateMagic, formatVersion, b)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: DecodeState() = %v; want ErrCorrupt", name, err)
		}
	}
}

// TestValidate breaks one consistency rule at a time: EncodeState refuses to
// write such a state and DecodeState refuses to read it.
func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(s *State)
		msg    string
	}{
		{"vCPU count", func(s *State) { s.Machine.Config.VCPUs = 3 }, "the configuration has 3 vCPUs, the state 2"},
		{"no vCPUs", func(s *State) { s.Machine.Config.VCPUs, s.Machine.VCPUs = 0, nil }, "0 vCPUs"},
		{"memory size", func(s *State) { s.Machine.Config.MemoryMiB = 2 }, "2 MiB of memory, the layout 0x100000 bytes"},
		{"memory file size", func(s *State) { s.Header.Memory.Size = 2 << 20 }, "memory file size 0x200000 differs"},
		{"block size", func(s *State) { s.Header.Memory.BlockSize = 3 << 10 }, "block size 3072 is smaller"},
		{"big block", func(s *State) { s.Header.Memory.BlockSize = 4 << 20 }, "not a power of two between"},
		{"page size", func(s *State) { s.Header.HostPageSize = 8192 + 4096 }, "not 4, 16 or 64 KiB"},
		{"RAM base", func(s *State) { s.Header.RAMBase = 0x4000_0100 }, "not page-aligned"},
		{"GIC vCPUs", func(s *State) { s.Machine.GIC.ICC = s.Machine.GIC.ICC[:1] }, "saved with 1 vCPUs, VM has 2"},
		{"GIC backend", func(s *State) { s.Machine.GIC.Backend = "hvf" }, `saved by the "hvf" backend`},
		{"backend", func(s *State) { s.Header.Backend = "whp" }, `unknown backend "whp"`},
		{"power", func(s *State) { s.Machine.VCPUs[1].Power = 7 }, "vCPU 1: invalid power state 7"},
		{"MPIDR", func(s *State) { s.Machine.VCPUs[1].MPIDR = s.Machine.VCPUs[0].MPIDR }, "the same MPIDR 0x80000000"},
		{"dedicated sysreg", func(s *State) { s.Machine.VCPUs[0].Sys[SysReg(3, 0, 4, 0, 1)] = 1 }, "ELR_EL1 is in the system register map"},
		{"ID", func(s *State) { s.Header.ID = "0123" }, `snapshot ID "0123"`},
		{"upper-case ID", func(s *State) { s.Header.ID = strings.ToUpper(s.Header.ID) }, "not 32 hex digits"},
		{"type", func(s *State) { s.Header.Type = 0 }, "unknown snapshot type 0"},
		{"full with parent", func(s *State) { s.Header.Type = Full }, "a full snapshot has parent"},
		{"diff without parent", func(s *State) { s.Header.Parent = "" }, `parent ID ""`},
		{"diff of itself", func(s *State) { s.Header.Parent = s.Header.ID }, "not another snapshot's ID"},
		{"memory file ID", func(s *State) { s.Header.Memory.FileID = "" }, `memory file ID ""`},
		{"device name", func(s *State) { s.Machine.Devices[""] = s.Machine.Devices["pl011"] }, "a device has no name"},
	}
	for _, tt := range tests {
		s := testState(t)
		tt.mutate(s)
		_, encErr := EncodeState(s)
		_, decErr := DecodeState(reseal(t, s))
		for _, err := range []error{encErr, decErr} {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("%s: got %v; want ErrCorrupt mentioning %q", tt.name, err, tt.msg)
			}
		}
	}
}

func TestExpect(t *testing.T) {
	h := &testState(t).Header
	tests := []struct {
		e    Expect
		want error
		msg  string
	}{
		{Expect{Backend: "kvm", PageSize: 4096}, nil, ""},
		{Expect{Backend: "hvf", PageSize: 4096}, ErrBackend, `saved by the "kvm" backend, this squib runs "hvf"`},
		{Expect{Backend: "kvm", PageSize: 16384}, ErrPageSize, "4096-byte pages, this host has 16384-byte pages"},
		{Expect{PageSize: 4096}, nil, "Expect.Backend is not set"},
	}
	for _, tt := range tests {
		err := tt.e.Check(h)
		if tt.msg == "" && err != nil || tt.msg != "" && (err == nil || !strings.Contains(err.Error(), tt.msg)) ||
			tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%+v: Check() = %v; want %v mentioning %q", tt.e, err, tt.want, tt.msg)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vm.state")
	b := encode(t, testState(t))
	b[len(b)-1] ^= 0x80
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ReadState(path)
	want := "snapshot: " + path + ": checksum mismatch: CRC-64 of the contents is "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("ReadState() = %v; want %q...", err, want)
	}
}

func TestSysReg(t *testing.T) {
	if got := SysReg(3, 0, 4, 1, 0); got != 0xc208 { // SP_EL0, as hv_sys_reg_t spells it
		t.Errorf("SysReg(SP_EL0) = %#x; want 0xc208", got)
	}
	if got := SysRegName(SysReg(3, 3, 14, 3, 1)); got != "S3_3_C14_C3_1" {
		t.Errorf("SysRegName(CNTV_CTL_EL0) = %q", got)
	}
}
