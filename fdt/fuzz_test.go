package fdt

import (
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics, and that whatever it accepts and
// the Builder can write again parses back to the same tree.
func FuzzParse(f *testing.F) {
	f.Add(virtBoardDTB(f))
	golden := decodeAnnotatedHex(f, goldenTiny)
	f.Add(golden)
	f.Add(golden[:headerSize])
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, dtb []byte) {
		root, rsv, err := Parse(dtb)
		if err != nil {
			return
		}
		b := New()
		for _, r := range rsv {
			b.Reserve(r[0], r[1])
		}
		writeNode(b, root)
		again, err := b.Finish()
		if err != nil {
			return // names or reservations the Builder refuses to write
		}
		root2, rsv2, err := Parse(again)
		if err != nil {
			t.Fatalf("Parse(rebuilt blob): %v", err)
		}
		if !reflect.DeepEqual(root, root2) || !reflect.DeepEqual(rsv, rsv2) {
			t.Fatal("rebuilt blob parses to a different tree")
		}
	})
}
