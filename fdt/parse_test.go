package fdt

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// assemble wraps a structure block and a strings block, given as annotated
// hex, in a header with an empty reservation map.
func assemble(t *testing.T, structHex, strs string) []byte {
	t.Helper()
	st := decodeAnnotatedHex(t, structHex)
	offStruct := headerSize + rsvEntry
	total := offStruct + len(st) + len(strs)
	h := make([]uint32, headerSize/4)
	h[hdrMagic/4] = fdtMagic
	h[hdrTotalSize/4] = uint32(total)
	h[hdrOffDTStruct/4] = uint32(offStruct)
	h[hdrOffDTStrings/4] = uint32(offStruct + len(st))
	h[hdrOffMemRsvmap/4] = headerSize
	h[hdrVersion/4] = fdtVersion
	h[hdrLastCompVersion/4] = fdtLastCompVersion
	h[hdrSizeDTStrings/4] = uint32(len(strs))
	h[hdrSizeDTStruct/4] = uint32(len(st))
	out, err := binary.Append(nil, binary.BigEndian, h)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, make([]byte, rsvEntry)...)
	out = append(out, st...)
	return append(out, strs...)
}

// patch returns a copy of dtb with the header word at off set to v.
func patch(dtb []byte, off int, v uint32) []byte {
	out := append([]byte{}, dtb...)
	binary.BigEndian.PutUint32(out[off:], v)
	return out
}

func TestParseMalformed(t *testing.T) {
	golden := decodeAnnotatedHex(t, goldenTiny)
	total := uint32(len(golden))
	tests := []struct {
		name string
		dtb  []byte
		want string
	}{
		{"empty", nil, "shorter than the 40-byte header"},
		{"short", golden[:39], "shorter than the 40-byte header"},
		{"magic", patch(golden, hdrMagic, 0xfeedd00d), "bad magic"},
		{"old version", patch(golden, hdrVersion, 16), "version 16"},
		{"future format", patch(golden, hdrLastCompVersion, 18), "last_comp_version 18"},
		{"totalsize too big", patch(golden, hdrTotalSize, total+1), "totalsize"},
		{"totalsize too small", patch(golden, hdrTotalSize, 39), "totalsize"},
		{"truncated", golden[:total-1], "totalsize"},
		{"rsvmap misaligned", patch(golden, hdrOffMemRsvmap, 0x2c), "memory reservation block"},
		{"rsvmap inside header", patch(golden, hdrOffMemRsvmap, 0), "memory reservation block"},
		{"rsvmap unterminated", patch(golden, hdrOffMemRsvmap, 0x48), "no {0, 0} terminator"},
		{"struct past end", patch(golden, hdrSizeDTStruct, total), "structure block"},
		{"struct offset huge", patch(golden, hdrOffDTStruct, 0xfffffffc), "structure block"},
		{"strings past end", patch(golden, hdrSizeDTStrings, 0x17), "strings block"},
		{"no FDT_END", patch(golden, hdrSizeDTStruct, 0x5c), "without FDT_END"},
		{"unknown token", assemble(t, "00000001 00000000 00000005", ""), "unknown token 0x5"},
		{"no root", assemble(t, "00000009", ""), "FDT_END with 0 nodes open, root seen: false"},
		{"unclosed", assemble(t, "00000001 00000000 00000009", ""), "FDT_END with 1 nodes open"},
		{"end node outside", assemble(t, "00000002", ""), "FDT_END_NODE outside a node"},
		{"prop outside", assemble(t, "00000003 00000000 00000000", "a\x00"), "FDT_PROP outside a node"},
		{"second root", assemble(t, "00000001 00000000 00000002 00000001 00000000 00000002 00000009", ""), "second root node"},
		{"name without NUL", assemble(t, "00000001 61616161", ""), "no NUL terminator"},
		{"prop len cut", assemble(t, "00000001 00000000 00000003", ""), "without FDT_END"},
		{"prop nameoff cut", assemble(t, "00000001 00000000 00000003 00000004", ""), "without FDT_END"},
		{"prop value too long", assemble(t, "00000001 00000000 00000003 00000100 00000000", "a\x00"), "runs past the structure block"},
		{"prop value huge", assemble(t, "00000001 00000000 00000003 ffffffff 00000000", "a\x00"), "runs past the structure block"},
		{"nameoff out of range", assemble(t, "00000001 00000000 00000003 00000000 00000002 00000002 00000009", "a\x00"), "name offset 0x2 outside"},
		{"prop name without NUL", assemble(t, "00000001 00000000 00000003 00000000 00000000 00000002 00000009", "ab"), "no NUL terminator"},
		{"duplicate prop", assemble(t, `00000001 00000000
			00000003 00000000 00000000
			00000003 00000000 00000000
			00000002 00000009`, "a\x00"), `duplicate property "a"`},
		{"duplicate node", assemble(t, `00000001 00000000
			00000001 61000000 00000002
			00000001 61000000 00000002
			00000002 00000009`, ""), `duplicate node "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, rsv, err := Parse(tt.dtb)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("Parse() = %v, %v, %v; want *FormatError", root, rsv, err)
			}
			if root != nil || rsv != nil {
				t.Errorf("Parse returned a tree or reservations along with an error")
			}
			if !strings.Contains(fe.Msg, tt.want) || !strings.HasPrefix(err.Error(), "fdt: malformed blob at offset 0x") {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestParseTolerates checks inputs that are valid though our Builder never
// writes them: NOPs, a named root, trailing bytes past totalsize.
func TestParseTolerates(t *testing.T) {
	dtb := assemble(t, `00000004 00000001 72000000 00000004
		00000003 00000001 00000000 07000000
		00000002 00000004 00000009`, "p\x00")
	root, _, err := Parse(append(dtb, 0xff, 0xff))
	if err != nil {
		t.Fatal(err)
	}
	want := &Node{Name: "r", Props: map[string][]byte{"p": {7}}}
	if !reflect.DeepEqual(root, want) {
		t.Errorf("Parse() = %+v, want %+v", root, want)
	}
}

func TestNodeLookups(t *testing.T) {
	root, _, err := Parse(virtBoardDTB(t))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"":                     "",
		"/":                    "",
		"/cpus/cpu@1":          "cpu@1",
		"cpus/cpu@0":           "cpu@0",
		"/cpus/cpu@1/":         "cpu@1",
		"/memory@40000000":     "memory@40000000",
		"/virtio_mmio@a000000": "virtio_mmio@a000000",
	} {
		if n := root.Find(path); n == nil || n.Name != want {
			t.Errorf("Find(%q) = %v, want node %q", path, n, want)
		}
	}
	for _, path := range []string{"/memory", "/cpus/cpu@2", "/cpus/cpu@0/x", "/nope/deeper"} {
		if n := root.Find(path); n != nil {
			t.Errorf("Find(%q) = %q, want nil", path, n.Name)
		}
	}
	var nilNode *Node
	if nilNode.Child("x") != nil || nilNode.Find("/x") != nil {
		t.Error("lookups on a nil node are not nil")
	}
	if _, ok := nilNode.U32("reg"); ok {
		t.Error("U32 on a nil node reported ok")
	}
}

func TestTypedAccessorsReject(t *testing.T) {
	n := &Node{Props: map[string][]byte{
		"five":     {1, 2, 3, 4, 5},
		"four":     {0, 0, 0, 7},
		"empty":    {},
		"unended":  []byte("abc"),
		"twoempty": []byte("a\x00\x00"),
	}}
	if _, ok := n.U32("five"); ok {
		t.Error("U32 accepted 5 bytes")
	}
	if _, ok := n.U64("four"); ok {
		t.Error("U64 accepted 4 bytes")
	}
	if _, ok := n.U32("missing"); ok {
		t.Error("U32 accepted a missing property")
	}
	if v, ok := n.U32("empty"); !ok || len(v) != 0 {
		t.Errorf("U32(empty) = %v, %t; want [], true", v, ok)
	}
	for _, p := range []string{"empty", "unended", "missing"} {
		if v, ok := n.Strings(p); ok {
			t.Errorf("Strings(%q) = %q, want not ok", p, v)
		}
	}
	if v, ok := n.Strings("twoempty"); !ok || !reflect.DeepEqual(v, []string{"a", ""}) {
		t.Errorf(`Strings("twoempty") = %q, %t; want ["a" ""], true`, v, ok)
	}
}

// TestParseQEMU reads the DTB of QEMU's virt board, written by libfdt with a
// layout of its own (and free space up to totalsize).
func TestParseQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not found")
	}
	path := filepath.Join(t.TempDir(), "qemu.dtb")
	// -nic none: the default NIC wants efi-virtio.rom, which may be absent.
	out, err := exec.Command(qemu, "-M", "virt,gic-version=3,dumpdtb="+path,
		"-cpu", "max", "-smp", "2", "-m", "512", "-nographic", "-nic", "none").CombinedOutput()
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, out)
	}
	dtb, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	root, _, err := Parse(dtb)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := root.Find("/intc@8000000").Strings("compatible"); !reflect.DeepEqual(got, []string{"arm,gic-v3"}) {
		t.Errorf("intc compatible = %q", got)
	}
	// QEMU sizes the redistributor region for all 123 vCPUs that fit.
	if got, _ := root.Find("/intc@8000000").U64("reg"); !reflect.DeepEqual(got, []uint64{0x08000000, 0x10000, 0x080a0000, 123 * 0x20000}) {
		t.Errorf("intc reg = %#x", got)
	}
	if got, _ := root.Find("/memory@40000000").U64("reg"); !reflect.DeepEqual(got, []uint64{0x40000000, 512 << 20}) {
		t.Errorf("memory reg = %#x", got)
	}
	if got, _ := root.Find("/timer").U32("interrupts"); len(got) < 12 || !reflect.DeepEqual(got[:12], []uint32{1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4}) {
		t.Errorf("timer interrupts = %v", got)
	}
	if root.Find("/cpus/cpu@0") == nil || root.Find("/cpus/cpu@1") == nil || root.Find("/chosen") == nil {
		t.Error("QEMU tree lacks cpu@0, cpu@1 or /chosen")
	}
}
