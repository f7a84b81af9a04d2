package fdt

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// goldenTiny is the blob for
//
//	/memreserve/ 0x48000000 0x1000;
//	/ {
//		compatible = "squib";
//		cpu@0 {
//			compatible = "arm";
//			reg = <0>;
//			ranges;
//		};
//	};
//
// worked out by hand from Devicetree Specification v0.4, chapter 5. Each line
// is one field or token; "#" starts a comment.
const goldenTiny = `
# header (§5.2): ten big-endian u32
d00dfeed  # magic
000000be  # totalsize = 0xa8 + 0x16
00000048  # off_dt_struct = 0x28 + 2 * 16
000000a8  # off_dt_strings = 0x48 + 0x60
00000028  # off_mem_rsvmap = 40, right after the header (8-aligned)
00000011  # version 17
00000010  # last_comp_version 16
00000000  # boot_cpuid_phys
00000016  # size_dt_strings = 22
00000060  # size_dt_struct = 96

# 0x28 memory reservation map (§5.3): {u64 address, u64 size}, then {0, 0}
00000000 48000000  00000000 00001000
00000000 00000000  00000000 00000000

# 0x48 structure block (§5.4)
00000001                    # FDT_BEGIN_NODE
00000000                    #   name "" + NUL, padded to 4
00000003                    # FDT_PROP
00000006                    #   len 6
00000000                    #   nameoff 0x00 "compatible"
73717569 62000000           #   "squib\0" + 2 bytes padding
00000001                    # FDT_BEGIN_NODE
6370 7540 3000 0000         #   "cpu@0\0" + 2 bytes padding
00000003 00000004 00000000  # FDT_PROP len 4, nameoff 0x00 "compatible" (shared)
61726d00                    #   "arm\0"
00000003 00000004 0000000b  # FDT_PROP len 4, nameoff 0x0b "reg"
00000000                    #   <0>
00000003 00000000 0000000f  # FDT_PROP len 0, nameoff 0x0f "ranges"; no value
00000002                    # FDT_END_NODE cpu@0
00000002                    # FDT_END_NODE /
00000009                    # FDT_END

# 0xa8 strings block (§5.5): NUL-terminated names, no alignment
636f6d70 61746962 6c6500    # "compatible\0" at 0x00
726567 00                   # "reg\0"        at 0x0b
72616e67 657300             # "ranges\0"     at 0x0f
`

// decodeAnnotatedHex strips comments and white space and decodes the rest.
func decodeAnnotatedHex(tb testing.TB, s string) []byte {
	tb.Helper()
	var digits strings.Builder
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestGoldenTiny(t *testing.T) {
	want := decodeAnnotatedHex(t, goldenTiny)
	b := New()
	b.Reserve(0x48000000, 0x1000)
	b.Begin("")
	b.PropString("compatible", "squib")
	b.Begin("cpu@0")
	b.PropString("compatible", "arm")
	b.PropU32("reg", 0)
	b.PropEmpty("ranges")
	b.End()
	b.End()
	got, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("blob differs from the golden:\n got:\n%s\nwant:\n%s", hex.Dump(got), hex.Dump(want))
	}
	if _, _, err := Parse(want); err != nil {
		t.Errorf("Parse(golden): %v", err)
	}
}
