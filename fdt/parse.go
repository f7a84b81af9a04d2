package fdt

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Node is one node of a parsed device tree.
type Node struct {
	Name     string            // "" for the root, else node-name[@unit-address]
	Props    map[string][]byte // property name -> raw value (never nil for a present property)
	Children []*Node           // in blob order
}

// Parse reads a DTB of version 17 or any later version compatible with it.
// It returns the root node and the memory reservation map. Parse checks the
// header, the bounds of every block and token, and rejects duplicate node
// or property names; it never panics, whatever the input. Property values are
// copied, so dtb may be reused afterwards.
func Parse(dtb []byte) (root *Node, reserved [][2]uint64, err error) {
	blob, h, err := parseHeader(dtb)
	if err != nil {
		return nil, nil, err
	}
	reserved, err = parseRsvmap(blob, h.offRsvmap)
	if err != nil {
		return nil, nil, err
	}
	st := structWalker{
		blob: blob,
		off:  h.offStruct,
		end:  h.offStruct + h.sizeStruct,
		strs: blob[h.offStrings : h.offStrings+h.sizeStrings],
	}
	root, err = st.walk()
	if err != nil {
		return nil, nil, err
	}
	return root, reserved, nil
}

// header holds the block offsets and sizes from a checked header.
type header struct {
	offRsvmap, offStruct, sizeStruct, offStrings, sizeStrings int
}

// parseHeader checks the header and returns the blob cut to totalsize.
func parseHeader(dtb []byte) ([]byte, header, error) {
	var h header
	if len(dtb) < headerSize {
		return nil, h, &FormatError{0, fmt.Sprintf("%d bytes is shorter than the %d-byte header", len(dtb), headerSize)}
	}
	field := func(off int) uint64 { return uint64(binary.BigEndian.Uint32(dtb[off:])) }
	if m := field(hdrMagic); m != fdtMagic {
		return nil, h, &FormatError{hdrMagic, fmt.Sprintf("bad magic %#x", m)}
	}
	if v := field(hdrVersion); v < fdtVersion {
		return nil, h, &FormatError{hdrVersion, fmt.Sprintf("version %d, need at least %d", v, fdtVersion)}
	}
	if v := field(hdrLastCompVersion); v > fdtVersion {
		return nil, h, &FormatError{hdrLastCompVersion, fmt.Sprintf("last_comp_version %d, can read only up to %d", v, fdtVersion)}
	}
	total := field(hdrTotalSize)
	if total < headerSize || total > uint64(len(dtb)) {
		return nil, h, &FormatError{hdrTotalSize, fmt.Sprintf("totalsize %d outside [%d, %d]", total, headerSize, len(dtb))}
	}
	// block checks that [off, off+size) lies within the blob after the
	// header and that off is a multiple of align.
	block := func(name string, hdrOff int, off, size, align uint64) (int, error) {
		if off < headerSize || off%align != 0 || off > total || size > total-off {
			return 0, &FormatError{hdrOff, fmt.Sprintf("%s block [%#x, +%#x) misplaced in %#x-byte blob", name, off, size, total)}
		}
		return int(off), nil
	}
	var err error
	if h.offRsvmap, err = block("memory reservation", hdrOffMemRsvmap, field(hdrOffMemRsvmap), rsvEntry, 8); err != nil {
		return nil, h, err
	}
	if h.offStruct, err = block("structure", hdrOffDTStruct, field(hdrOffDTStruct), field(hdrSizeDTStruct), 4); err != nil {
		return nil, h, err
	}
	if h.offStrings, err = block("strings", hdrOffDTStrings, field(hdrOffDTStrings), field(hdrSizeDTStrings), 1); err != nil {
		return nil, h, err
	}
	h.sizeStruct = int(field(hdrSizeDTStruct))
	h.sizeStrings = int(field(hdrSizeDTStrings))
	return dtb[:total], h, nil
}

// parseRsvmap reads {address, size} pairs up to the {0, 0} terminator.
func parseRsvmap(blob []byte, off int) ([][2]uint64, error) {
	var rsv [][2]uint64
	for ; off+rsvEntry <= len(blob); off += rsvEntry {
		addr := binary.BigEndian.Uint64(blob[off:])
		size := binary.BigEndian.Uint64(blob[off+8:])
		if addr == 0 && size == 0 {
			return rsv, nil
		}
		rsv = append(rsv, [2]uint64{addr, size})
	}
	return nil, &FormatError{off, "memory reservation map has no {0, 0} terminator"}
}

// structWalker reads the tokens of the structure block blob[off:end].
type structWalker struct {
	blob     []byte
	off, end int
	strs     []byte // strings block
}

func (w *structWalker) errorf(off int, format string, args ...any) error {
	return &FormatError{off, fmt.Sprintf(format, args...)}
}

// u32 reads the next big-endian word of the structure block.
func (w *structWalker) u32() (uint32, error) {
	if w.end-w.off < 4 {
		return 0, w.errorf(w.off, "structure block ends without FDT_END")
	}
	v := binary.BigEndian.Uint32(w.blob[w.off:])
	w.off += 4
	return v, nil
}

// openParsed is a node whose FDT_END_NODE has not been seen yet.
type openParsed struct {
	node     *Node
	children map[string]bool
}

// walk builds the tree. It keeps its own stack, so deep nesting in a hostile
// blob costs heap, not goroutine stack.
func (w *structWalker) walk() (*Node, error) {
	var root *Node
	var open []openParsed
	for {
		at := w.off
		tok, err := w.u32()
		if err != nil {
			return nil, err
		}
		switch tok {
		case tokBeginNode:
			name, err := w.cstring(w.blob[w.off:w.end], w.off)
			if err != nil {
				return nil, err
			}
			w.off = align4(w.off + len(name) + 1)
			n := &Node{Name: name, Props: make(map[string][]byte)}
			if len(open) == 0 {
				if root != nil {
					return nil, w.errorf(at, "second root node %q", name)
				}
				root = n
			} else {
				parent := open[len(open)-1]
				if parent.children[name] {
					return nil, w.errorf(at, "duplicate node %q", name)
				}
				parent.children[name] = true
				parent.node.Children = append(parent.node.Children, n)
			}
			open = append(open, openParsed{n, make(map[string]bool)})
		case tokEndNode:
			if len(open) == 0 {
				return nil, w.errorf(at, "FDT_END_NODE outside a node")
			}
			open = open[:len(open)-1]
		case tokProp:
			if len(open) == 0 {
				return nil, w.errorf(at, "FDT_PROP outside a node")
			}
			if err := w.prop(at, open[len(open)-1].node); err != nil {
				return nil, err
			}
		case tokNop:
		case tokEnd:
			if len(open) > 0 || root == nil {
				return nil, w.errorf(at, "FDT_END with %d nodes open, root seen: %t", len(open), root != nil)
			}
			return root, nil
		default:
			return nil, w.errorf(at, "unknown token %#x", tok)
		}
	}
}

// prop reads the body of an FDT_PROP token into n.
func (w *structWalker) prop(at int, n *Node) error {
	size, err := w.u32()
	if err != nil {
		return err
	}
	nameOff, err := w.u32()
	if err != nil {
		return err
	}
	if uint64(size) > uint64(w.end-w.off) {
		return w.errorf(at, "property value of %d bytes runs past the structure block", size)
	}
	if uint64(nameOff) >= uint64(len(w.strs)) {
		return w.errorf(at, "property name offset %#x outside the %d-byte strings block", nameOff, len(w.strs))
	}
	name, err := w.cstring(w.strs[nameOff:], at)
	if err != nil {
		return err
	}
	if _, dup := n.Props[name]; dup {
		return w.errorf(at, "duplicate property %q", name)
	}
	n.Props[name] = append([]byte{}, w.blob[w.off:w.off+int(size)]...)
	w.off = align4(w.off + int(size))
	return nil
}

// cstring returns the NUL-terminated string at the start of b; at is the
// blob offset reported if there is no NUL.
func (w *structWalker) cstring(b []byte, at int) (string, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", w.errorf(at, "string has no NUL terminator")
	}
	return string(b[:i]), nil
}
