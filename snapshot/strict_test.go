package snapshot

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/gic"
)

// The tests of this file build structurally valid state files that break one
// rule of docs/snapshot-format.md each, with valid checksums (seal), and
// check that reading them is refused in one line naming the field.

// body is a state file's CBOR body as a generic tree (maps keyed by uint64
// or string, arrays as []any), to be changed and sealed again with sealTree.
// Opaque parts (device states, VCPU.Backend, Config.Extra) are part of the
// tree too; re-encoded they are the same bytes.
func stTree(t testing.TB, s *State) map[any]any {
	t.Helper()
	b, err := Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := cbor.Unmarshal(b, &tree); err != nil {
		t.Fatal(err)
	}
	if again, err := Marshal(tree); err != nil || !bytes.Equal(again, b) {
		t.Fatalf("the body does not survive a generic round trip: %v", err)
	}
	return tree.(map[any]any)
}

// sealTree encodes tree deterministically (a cbor.RawMessage in it is
// written as it is) and seals it as a state file with valid checksums.
func stSeal(t testing.TB, tree any) []byte {
	t.Helper()
	b, err := stEncMode.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	return seal(stateMagic, formatVersion, b)
}

// stEncMode is the format's encoding mode, but lets hand-made raw CBOR
// with tags and indefinite lengths through.
var stEncMode = func() cbor.EncMode {
	opts := cbor.CoreDetEncOptions()
	opts.Time, opts.NilContainers = cbor.TimeRFC3339NanoUTC, cbor.NilContainerAsEmpty
	opts.IndefLength, opts.TagsMd = cbor.IndefLengthAllowed, cbor.TagsAllowed
	m, err := opts.EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// stAt returns the map or array at path in tree: uint64 keys for struct
// fields, int indexes for arrays, strings for device names.
func stAt(t testing.TB, tree any, path ...any) any {
	t.Helper()
	for _, k := range path {
		switch n := tree.(type) {
		case map[any]any:
			if i, ok := k.(int); ok {
				k = uint64(i)
			}
			tree = n[k]
		case []any:
			tree = n[k.(int)]
		default:
			t.Fatalf("no %v in %T", k, tree)
		}
	}
	return tree
}

// set replaces the value at path in tree.
func stSet(t testing.TB, tree any, v any, path ...any) {
	t.Helper()
	parent, k := stAt(t, tree, path[:len(path)-1]...), path[len(path)-1]
	switch n := parent.(type) {
	case map[any]any:
		if i, ok := k.(int); ok {
			k = uint64(i)
		}
		n[k] = v
	case []any:
		n[k.(int)] = v
	default:
		t.Fatalf("cannot set %v in %T", k, parent)
	}
}

// enc is the deterministic encoding of v, for raw CBOR built by hand.
func stEnc(t testing.TB, v any) []byte {
	t.Helper()
	b, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// raw joins CBOR fragments into one item written as it is.
func stRaw(parts ...[]byte) cbor.RawMessage { return bytes.Join(parts, nil) }

// Paths into body's tree.
var (
	stHdr   = []any{1}
	stVCPU0 = []any{2, 2, 0}
	stVCPU1 = []any{2, 2, 1}
	stGIC   = []any{2, 3}
)

func stPath(base []any, more ...any) []any { return append(append([]any{}, base...), more...) }

// refused checks that file is refused by DecodeState and ReadState with a
// one-line ErrCorrupt (or want) error whose problem starts with, or
// contains, msg.
func stRefused(t *testing.T, name string, file []byte, want error, msg string) {
	t.Helper()
	_, err := DecodeState(file)
	var fe *FormatError
	if !errors.Is(err, want) || !errors.As(err, &fe) || !strings.Contains(fe.Problem, msg) {
		t.Errorf("%s: DecodeState() = %v; want %v naming %q", name, err, want, msg)
		return
	}
	p := filepath.Join(t.TempDir(), "vm.state")
	if err := os.WriteFile(p, file, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ReadState(p)
	if err == nil || !strings.HasPrefix(err.Error(), "snapshot: "+p+": ") || !strings.Contains(err.Error(), msg) ||
		strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: ReadState() = %v; want one line naming %s and %q", name, err, p, msg)
	}
}

// TestStrictDecode: each finding of issue 10 item 5, as a file with valid
// checksums that decoded before and verified as intact.
func TestStrictDecode(t *testing.T) {
	s := testState(t)
	u := func(v uint64) []byte { return stEnc(t, v) }
	c1 := s.Machine.VCPUs[1]
	tests := []struct {
		name   string
		mutate func(tree map[any]any)
		msg    string
	}{
		{"30 registers", func(tree map[any]any) {
			stSet(t, tree, stAt(t, tree, stPath(stVCPU1, 1)...).([]any)[:30], stPath(stVCPU1, 1)...)
		}, "machine.vcpus[1].x: 30 registers, want 31"},
		{"32 registers", func(tree map[any]any) {
			x := stAt(t, tree, stPath(stVCPU1, 1)...).([]any)
			stSet(t, tree, append(x, uint64(0)), stPath(stVCPU1, 1)...)
		}, "machine.vcpus[1].x: 32 registers, want 31"},
		{"31 V registers", func(tree map[any]any) {
			stSet(t, tree, stAt(t, tree, stPath(stVCPU0, 8)...).([]any)[:31], stPath(stVCPU0, 8)...)
		}, "machine.vcpus[0].v: 31 registers, want 32"},
		{"3 halves", func(tree map[any]any) {
			stSet(t, tree, []any{uint64(1), uint64(2), uint64(3)}, stPath(stVCPU0, 8, 5)...)
		}, "machine.vcpus[0].v[5]: 3 halves, want 2"},
		{"null vCPU", func(tree map[any]any) { stSet(t, tree, nil, stVCPU1...) }, "machine.vcpus[1]: null, want a map"},
		{"null PC", func(tree map[any]any) { stSet(t, tree, nil, stPath(stVCPU0, 4)...) }, "machine.vcpus[0].pc: null, want an unsigned integer"},
		{"null MPIDR", func(tree map[any]any) { stSet(t, tree, nil, stPath(stVCPU1, 12)...) }, "machine.vcpus[1].mpidr: null"},
		{"null page size", func(tree map[any]any) { stSet(t, tree, nil, stPath(stHdr, 4)...) }, "header.host_page_size: null"},
		{"null ID", func(tree map[any]any) { stSet(t, tree, nil, stPath(stHdr, 7)...) }, "header.id: null, want a text string"},
		{"null register", func(tree map[any]any) { stSet(t, tree, nil, stPath(stVCPU0, 1, 3)...) }, "machine.vcpus[0].x[3]: null"},
		{"null blob", func(tree map[any]any) { stSet(t, tree, nil, stPath(stGIC, 3)...) }, "machine.gic.blob: null, want a byte string"},
		{"null ICC", func(tree map[any]any) { stSet(t, tree, nil, stPath(stGIC, 4, 1)...) }, "machine.gic.icc[1]: null, want a map"},
		{"null config", func(tree map[any]any) { stSet(t, tree, nil, 2, 1) }, "machine.config: null, want a map"},
		{"null machine", func(tree map[any]any) { stSet(t, tree, nil, 2) }, "machine: null, want a map"},
		{"undefined timer", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0xf7}), stPath(stVCPU0, 14, 2)...) }, "machine.vcpus[0].timer.cval: undefined"},
		{"false power", func(tree map[any]any) { stSet(t, tree, false, stPath(stVCPU0, 13)...) }, "machine.vcpus[0].power: false, want an integer"},
		{"simple value PC", func(tree map[any]any) { stSet(t, tree, cbor.SimpleValue(16), stPath(stVCPU0, 4)...) }, "machine.vcpus[0].pc: simple value 16, want an unsigned integer"},
		{"simple value 255 page", func(tree map[any]any) { stSet(t, tree, cbor.SimpleValue(255), stPath(stHdr, 4)...) }, "header.host_page_size: simple value 255"},
		{"simple value in a device", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0x82, 0x01, 0xf0}), 2, 4, "pl011")
		}, `machine.devices["pl011"][1]: simple value 16`},
		{"float PC", func(tree map[any]any) { stSet(t, tree, 1.0, stPath(stVCPU0, 4)...) }, "machine.vcpus[0].pc: a floating-point number, want an unsigned integer"},
		{"array blob", func(tree map[any]any) {
			stSet(t, tree, []any{uint64(1), uint64(2), uint64(3), uint64(4)}, stPath(stGIC, 3)...)
		}, "machine.gic.blob: an array, want a byte string"},
		{"text blob", func(tree map[any]any) { stSet(t, tree, "\x01\x02\x03\x04", stPath(stGIC, 3)...) }, "machine.gic.blob: a text string, want a byte string"},
		{"bytes as ID", func(tree map[any]any) { stSet(t, tree, []byte(s.Header.ID), stPath(stHdr, 7)...) }, "header.id: a byte string, want a text string"},
		{"negative vCPU count", func(tree map[any]any) { stSet(t, tree, int64(-2), 2, 1, 1) }, "machine.config.vcpus: the configuration has -2 vCPUs"},
		{"page size overflow", func(tree map[any]any) { stSet(t, tree, uint64(1)<<32|4096, stPath(stHdr, 4)...) }, "header.host_page_size: 4294971392 does not fit in 32 bits"},
		{"type overflow", func(tree map[any]any) { stSet(t, tree, uint64(258), stPath(stHdr, 9)...) }, "header.type: 258 does not fit in 8 bits"},
		{"non-shortest PC", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0x1b, 0, 0, 0, 0}, []byte{0x40, 0x08, 0, 0}), stPath(stVCPU0, 4)...)
		}, "machine.vcpus[0].pc: integer 1074266112 written in 9 bytes, not in the deterministic encoding's 5"},
		{"non-shortest small", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0x18, 0x01}), stPath(stVCPU0, 14, 1)...) }, "machine.vcpus[0].timer.ctl: integer 1 written in 2 bytes"},
		{"non-shortest key", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0xa3, 0x18, 0x01}, u(c1.Timer.CTL), []byte{0x02}, u(c1.Timer.CVAL), []byte{0x03}, u(c1.Timer.Counter)), stPath(stVCPU1, 14)...)
		}, "machine.vcpus[1].timer (key index 0): integer 1 written in 2 bytes"},
		{"non-shortest length", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0x58, 0x04, 1, 2, 3, 4}), stPath(stGIC, 3)...) }, "machine.gic.blob: the length 4 of a byte string written in 2 bytes"},
		{"non-shortest in a device", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0x19, 0x00, 0x07}), 2, 4, "pl031") }, `machine.devices["pl031"]: integer 7 written in 3 bytes`},
		{"non-shortest float", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0xa1, 0x61, 'f', 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}), 2, 1, 4) // {"f": 1.5 as float64}
		}, `machine.config.extra["f"]: floating-point number 1.5 written in 9 bytes, not in its shortest form`},
		{"NaN payload", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0xf9, 0x7e, 0x01}), 2, 1, 4) }, "machine.config.extra: floating-point number NaN written in 3 bytes"},
		{"unsorted timer", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0xa3, 0x02}, u(c1.Timer.CVAL), []byte{0x01}, u(c1.Timer.CTL), []byte{0x03}, u(c1.Timer.Counter)), stPath(stVCPU1, 14)...)
		}, "machine.vcpus[1].timer: key 1 comes after key 2"},
		{"unsorted devices", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0xa2, 0x65}, []byte("pl031"), s.Machine.Devices["pl031"], []byte{0x65}, []byte("pl011"), s.Machine.Devices["pl011"]), 2, 4)
		}, `machine.devices: key "pl011" comes after a greater key`},
		{"unsorted sys", func(tree map[any]any) {
			sys := c1.Sys
			a, b := SysReg(3, 0, 1, 0, 0), SysReg(3, 0, 10, 2, 0)
			stSet(t, tree, stRaw([]byte{0xa2}, u(uint64(b)), u(sys[b]), u(uint64(a)), u(sys[a])), stPath(stVCPU1, 11)...)
		}, "machine.vcpus[1].sys: key S3_0_C1_C0_0 comes after a greater key"},
		{"unsorted in a device", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0xa2, 0x61, 'b', 0x01, 0x61, 'a', 0x02}), 2, 4, "pl011")
		}, `machine.devices["pl011"]: key "a" comes after a greater key`},
		{"float created", func(tree map[any]any) { stSet(t, tree, 1.7775e9, stPath(stHdr, 10)...) }, "header.created: a floating-point number, want an RFC 3339 time as text"},
		{"NaN created", func(tree map[any]any) { stSet(t, tree, math.NaN(), stPath(stHdr, 10)...) }, "header.created: a floating-point number"},
		{"epoch created", func(tree map[any]any) { stSet(t, tree, uint64(1777638645), stPath(stHdr, 10)...) }, "header.created: an unsigned integer, want an RFC 3339 time as text"},
		{"created not UTC", func(tree map[any]any) { stSet(t, tree, "2026-05-01T14:30:45.123456789+02:00", stPath(stHdr, 10)...) }, `header.created: "2026-05-01T14:30:45.123456789+02:00" is not spelled as the format spells it, "2026-05-01T12:30:45.123456789Z"`},
		{"created zeros", func(tree map[any]any) { stSet(t, tree, "2026-05-01T12:30:45.100Z", stPath(stHdr, 10)...) }, "header.created: \"2026-05-01T12:30:45.100Z\" is not spelled"},
		{"created nonsense", func(tree map[any]any) { stSet(t, tree, "yesterday", stPath(stHdr, 10)...) }, `header.created: "yesterday" is not an RFC 3339 time`},
		{"created zero", func(tree map[any]any) { stSet(t, tree, "0001-01-01T00:00:00Z", stPath(stHdr, 10)...) }, "header.created: no creation time"},
		{"duplicate key", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0xa3, 0x01}, u(c1.Timer.CTL), []byte{0x01}, u(c1.Timer.CTL), []byte{0x03}, u(c1.Timer.Counter)), stPath(stVCPU1, 14)...)
		}, "machine.vcpus[1].timer: key 1 appears twice"},
		{"duplicate device", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0xa2, 0x65}, []byte("pl011"), s.Machine.Devices["pl011"], []byte{0x65}, []byte("pl011"), s.Machine.Devices["pl011"]), 2, 4)
		}, `machine.devices: key "pl011" appears twice`},
		{"duplicate in a device", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0xa2, 0x01, 0x01, 0x01, 0x02}), 2, 4, "pl011") }, `machine.devices["pl011"]: key 1 appears twice`},
		{"indefinite registers", func(tree map[any]any) {
			x := []byte{0x9f}
			for _, r := range c1.X {
				x = append(x, u(r)...)
			}
			stSet(t, tree, stRaw(x, []byte{0xff}), stPath(stVCPU1, 1)...)
		}, "machine.vcpus[1].x: an array of indefinite length"},
		{"indefinite blob", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0x5f, 0x42, 1, 2, 0x42, 3, 4, 0xff}), stPath(stGIC, 3)...)
		}, "machine.gic.blob: a byte string of indefinite length"},
		{"indefinite cmdline", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0x7f, 0x61, 'x', 0xff}), 2, 1, 3) }, "machine.config.cmdline: a text string of indefinite length"},
		{"indefinite in a device", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0xbf, 0x01, 0x02, 0xff}), 2, 4, "pl031") }, `machine.devices["pl031"]: a map of indefinite length`},
		{"tag in a device", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0xc1, 0x01}), 2, 4, "pl031") }, `machine.devices["pl031"]: a tag (1); the format has no tags`},
		{"tag created", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0xc0}, stEnc(t, "2026-05-01T12:30:45.123456789Z")), stPath(stHdr, 10)...)
		}, "header.created: a tag (0), want an RFC 3339 time"},
		{"unknown vCPU key", func(tree map[any]any) { stAt(t, tree, stVCPU0...).(map[any]any)[uint64(16)] = uint64(0) }, "machine.vcpus[0]: unknown key 16"},
		{"text key", func(tree map[any]any) { stAt(t, tree, stVCPU0...).(map[any]any)["pc"] = uint64(0) }, "machine.vcpus[0]: a text string as a key, want a field number"},
		{"missing PC", func(tree map[any]any) { delete(stAt(t, tree, stVCPU0...).(map[any]any), uint64(4)) }, "machine.vcpus[0].pc: missing (key 4)"},
		{"missing header field", func(tree map[any]any) { delete(stAt(t, tree, stHdr...).(map[any]any), uint64(10)) }, "header.created: missing (key 10)"},
		{"empty sys", func(tree map[any]any) { stSet(t, tree, map[any]any{}, stPath(stVCPU0, 11)...) }, "machine.vcpus[0].sys: a map that is empty; the format leaves an empty sys out"},
		{"empty devices", func(tree map[any]any) { stSet(t, tree, map[any]any{}, 2, 4) }, "machine.devices: a map that is empty"},
		{"key overflow", func(tree map[any]any) {
			stSet(t, tree, stRaw([]byte{0xa1, 0x1a, 0x00, 0x01, 0x00, 0x00, 0x01}), stPath(stVCPU0, 11)...)
		}, "machine.vcpus[0].sys (key index 0): 65536 does not fit in 16 bits"},
		{"invalid UTF-8", func(tree map[any]any) { stSet(t, tree, stRaw([]byte{0x62, 0xc3, 0x28}), 2, 1, 3) }, "machine.config.cmdline: text that is not valid UTF-8"},
	}
	for _, tt := range tests {
		tree := stTree(t, testState(t))
		tt.mutate(tree)
		stRefused(t, tt.name, stSeal(t, tree), ErrCorrupt, tt.msg)
	}
}

// TestStrictDecodeBody covers the body's own map and well-formedness.
func TestStrictDecodeBody(t *testing.T) {
	b := stEnc(t, testState(t))
	tests := []struct {
		name string
		body []byte
		msg  string
	}{
		{"empty", nil, "decoding body at byte 24: the data ends where an item should begin"},
		{"null", []byte{0xf6}, "body: null, want a map {1: header, 2: machine}"},
		{"trailing", append(bytes.Clone(b), 0x00), "body: 1 bytes of data after the body's map"},
		{"cut", b[:len(b)-1], "decoding machine.devices[\"pl031\"] at byte"},
		{"reserved", []byte{0xa1, 0x01, 0x1c}, "decoding header at byte 26: initial byte 0x1c uses reserved additional information 28"},
		{"break", []byte{0xa1, 0x01, 0xff}, "decoding header at byte 26: a break code outside an indefinite-length item"},
		{"huge array", []byte{0xa1, 0x02, 0xa1, 0x02, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "machine.vcpus: 18446744073709551615 vCPUs, at most 123"},
		{"huge map", []byte{0xa1, 0x02, 0xa1, 0x04, 0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "machine.devices: a map of 18446744073709551615 pairs, more than the format's 65536"},
		{"map longer than the file", []byte{0xa1, 0x02, 0xa1, 0x04, 0xb9, 0xff, 0xff}, "decoding machine.devices at byte 28: a map of 65535 pairs with 0 bytes left"},
		{"long string", []byte{0xa1, 0x01, 0xa1, 0x01, 0x7a, 0xff, 0xff, 0xff, 0xff}, "decoding header.arch at byte 28: a text string of 4294967295 bytes with 0 bytes left"},
		{"deep", append([]byte{0xa1, 0x02, 0xa1, 0x01, 0xa1, 0x04}, bytes.Repeat([]byte{0x81}, 30)...), "nested deeper than 24 levels"},
	}
	for _, tt := range tests {
		stRefused(t, tt.name, seal(stateMagic, formatVersion, tt.body), ErrCorrupt, tt.msg)
	}
}

// TestStrictLimits: the bounds a restore has are checked on reading (issue
// 10 items 5 and 6), and EncodeState refuses to write past them.
func TestStrictLimits(t *testing.T) {
	if MaxVCPUs != gic.MaxVCPUs() {
		t.Errorf("MaxVCPUs = %d, the GIC layout holds %d", MaxVCPUs, gic.MaxVCPUs())
	}
	vcpus := func(n int) func(s *State) {
		return func(s *State) {
			s.Machine.Config.VCPUs = n
			s.Machine.VCPUs = make([]VCPU, n)
			s.Machine.GIC.ICC = make([]gic.ICCRegs, n)
			for i := range s.Machine.VCPUs {
				s.Machine.VCPUs[i].MPIDR = uint64(i)
			}
		}
	}
	ram := func(size uint64) func(s *State) {
		return func(s *State) {
			s.Header.RAMSize, s.Header.Memory.Size, s.Machine.Config.MemoryMiB = size, size, size>>20
		}
	}
	page := func(size uint32, block uint32) func(s *State) {
		return func(s *State) { s.Header.HostPageSize, s.Header.Memory.BlockSize = size, block }
	}
	tests := []struct {
		name   string
		mutate func(s *State)
		msg    string // empty: accepted
	}{
		{"65536 vCPUs", vcpus(65536), "machine.vcpus: 65536 vCPUs, at most 123"},
		{"124 vCPUs", vcpus(124), "machine.vcpus: 124 vCPUs, at most 123"},
		{"124 ICC entries", func(s *State) { s.Machine.GIC.ICC = make([]gic.ICCRegs, 124) }, "machine.gic.icc: 124 vCPUs' registers, at most 123"},
		{"123 vCPUs", vcpus(123), ""},
		{"RAM beyond MaxRAMSize", ram(MaxRAMSize + 1<<20), "header.ram_size: 0xffc0100000 bytes of RAM, more than the 0xffc0000000 a restore can map"},
		{"1 TiB of RAM", ram(1 << 40), "header.ram_size: 0x10000000000 bytes of RAM, more than"},
		{"MaxRAMSize", ram(MaxRAMSize), ""},
		{"8 KiB pages", page(8192, 16<<10), "header.host_page_size: host page size 8192 is not 4, 16 or 64 KiB"},
		{"32 KiB pages", page(32768, 64<<10), "header.host_page_size: host page size 32768 is not 4, 16 or 64 KiB"},
		{"2 KiB pages", page(2048, 16<<10), "header.host_page_size: host page size 2048 is not 4, 16 or 64 KiB"},
		{"128 KiB pages", page(128<<10, 1<<20), "header.host_page_size: host page size 131072 is not 4, 16 or 64 KiB"},
		{"16 KiB pages", page(16384, 16<<10), ""},
		{"64 KiB pages", page(65536, 64<<10), ""},
		{"block below the page", page(65536, 16<<10), "header.memory.block_size: block size 16384 is smaller than the 65536-byte host page"},
		{"4 MiB blocks", page(4096, 4<<20), "header.memory.block_size: block size 4194304 is not a power of two between 4096 and 2097152"},
	}
	for _, tt := range tests {
		s := testState(t)
		tt.mutate(s)
		b, err := Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		file := seal(stateMagic, formatVersion, b)
		_, encErr := EncodeState(s)
		if tt.msg == "" {
			if _, err := DecodeState(file); err != nil || encErr != nil {
				t.Errorf("%s: DecodeState() = %v, EncodeState() = %v; want both to accept it", tt.name, err, encErr)
			}
			continue
		}
		stRefused(t, tt.name, file, ErrCorrupt, tt.msg)
		if !errors.Is(encErr, ErrCorrupt) {
			t.Errorf("%s: EncodeState() = %v; want it refused", tt.name, encErr)
		}
	}
}

// TestStrictOpaque: opaque parts may hold any deterministic CBOR a device
// package might write, and a state round-trips with them; EncodeState refuses
// an opaque part not encoded with Marshal, as DecodeState would.
func TestStrictOpaque(t *testing.T) {
	s := testState(t)
	s.Machine.Devices["pl011"] = stEnc(t, map[string]any{"b": true, "f": 1.5, "n": nil, "neg": -7, "nan": math.NaN(),
		"s": []any{false, "x", []byte{1}, uint64(1) << 40, map[int]int{-1: 2, 3: 4}}})
	s.Machine.Config.Extra = stEnc(t, nil)
	b := encode(t, s)
	got, err := DecodeState(b)
	if err != nil {
		t.Fatalf("DecodeState: %v", err)
	}
	if again := encode(t, got); !bytes.Equal(again, b) {
		t.Error("the state re-encodes differently")
	}
	s.Machine.Devices["pl031"] = cbor.RawMessage{0x19, 0x00, 0x07}
	if _, err := EncodeState(s); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `machine.devices["pl031"]: integer 7 written in 3 bytes`) {
		t.Errorf("EncodeState with a non-shortest device state = %v; want it refused naming the device", err)
	}
	// A nil container is written empty, not as null, which no field may be.
	s = testState(t)
	s.Machine.GIC.Blob, s.Machine.GIC.ICC[1] = nil, nil
	if _, err := DecodeState(encode(t, s)); err != nil {
		t.Errorf("a state with a nil GIC blob and ICC map: %v", err)
	}
}

// TestStrictUnmarshal: the decoding mode device packages use refuses simple
// values as integers, as the state file's own fields do.
func TestStrictUnmarshal(t *testing.T) {
	var x uint64
	for _, b := range [][]byte{{0xf0}, {0xf7}, {0xf8, 0xff}} {
		if err := Unmarshal(b, &x); err == nil {
			t.Errorf("Unmarshal(%x) into a uint64 = %d, nil; want an error", b, x)
		}
	}
	var v any
	for _, b := range [][]byte{{0xf4}, {0xf5}, {0xf6}} {
		if err := Unmarshal(b, &v); err != nil {
			t.Errorf("Unmarshal(%x): %v", b, err)
		}
	}
}

// TestStrictGolden: the files squib 1.0, 1.1 and 1.2 wrote are in the
// deterministic encoding (so the strict reader still loads them) and
// re-encode to the same bytes.
func TestStrictGolden(t *testing.T) {
	for _, p := range append([]string{goldenState}, oldGoldens...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkBody(b[prefixLen : len(b)-trailerLen]); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		s, err := DecodeState(b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if again := encode(t, s); !bytes.Equal(again[prefixLen:len(again)-trailerLen], b[prefixLen:len(b)-trailerLen]) {
			t.Errorf("%s re-encodes differently", p)
		}
	}
}
