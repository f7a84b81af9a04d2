package fdt

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// Builder writes a device tree as a sequence of Begin, Prop* and End calls,
// starting with the root node Begin("").
//
// Like bufio.Writer, a Builder records the first misuse (a property outside a
// node or after a child node, a duplicate or badly formed name, unbalanced
// Begin/End, ...) as an [*Error]; later Reserve, Begin, End and Prop* calls
// do nothing, and Finish returns the error. The same sequence of calls always
// yields the same bytes.
type Builder struct {
	err      error
	rsvmap   [][2]uint64
	structs  []byte            // structure block, without the final FDT_END
	strs     []byte            // strings block
	strOff   map[string]uint32 // property name -> offset in strs
	open     []*openNode       // open nodes, root first
	rootDone bool
	phandles uint32 // last phandle handed out
	bootCPU  uint32
}

// openNode tracks what a node being written already contains.
type openNode struct {
	path     string
	props    map[string]bool
	children map[string]bool
	child    string // first child node, once one was begun
}

// New returns an empty Builder.
func New() *Builder {
	return &Builder{strOff: make(map[string]uint32)}
}

// fail records the first misuse.
func (b *Builder) fail(path, format string, args ...any) {
	if b.err == nil {
		b.err = &Error{Path: path, Problem: fmt.Sprintf(format, args...)}
	}
}

// Reserve adds the memory reservation map entry {addr, size}. A zero size is
// refused, because a {0, 0} entry terminates the map.
func (b *Builder) Reserve(addr, size uint64) {
	switch {
	case b.err != nil:
	case size == 0:
		b.fail("", "zero-size memory reservation at %#x", addr)
	case addr > math.MaxUint64-(size-1):
		b.fail("", "memory reservation %#x+%#x wraps around", addr, size)
	default:
		b.rsvmap = append(b.rsvmap, [2]uint64{addr, size})
	}
}

// Begin opens a node named name inside the innermost open node. The root
// node is Begin(""); every other name is node-name[@unit-address].
func (b *Builder) Begin(name string) {
	if b.err != nil {
		return
	}
	path := "/"
	if len(b.open) == 0 {
		switch {
		case b.rootDone:
			b.fail("", "second root node %q", name)
		case name != "":
			b.fail("", `root node must be Begin(""), not %q`, name)
		}
	} else {
		parent := b.open[len(b.open)-1]
		path = strings.TrimSuffix(parent.path, "/") + "/" + name
		switch {
		case name == "":
			b.fail(parent.path, "empty node name")
		case !validNodeName(name):
			b.fail(parent.path, "invalid node name %q", name)
		case parent.children[name]:
			b.fail(parent.path, "duplicate node %q", name)
		default:
			parent.children[name] = true
			if parent.child == "" {
				parent.child = name
			}
		}
	}
	if b.err != nil {
		return
	}
	b.open = append(b.open, &openNode{
		path:     path,
		props:    make(map[string]bool),
		children: make(map[string]bool),
	})
	b.structs = binary.BigEndian.AppendUint32(b.structs, tokBeginNode)
	b.structs = append(b.structs, name...)
	b.structs = append(b.structs, 0)
	b.pad()
}

// End closes the innermost open node.
func (b *Builder) End() {
	if b.err != nil {
		return
	}
	if len(b.open) == 0 {
		b.fail("", "End without Begin")
		return
	}
	b.open = b.open[:len(b.open)-1]
	b.rootDone = len(b.open) == 0
	b.structs = binary.BigEndian.AppendUint32(b.structs, tokEndNode)
}

// PropEmpty adds a property with no value, such as "interrupt-controller".
func (b *Builder) PropEmpty(name string) { b.prop(name, nil) }

// PropU32 adds a property holding one big-endian 32-bit cell per value.
func (b *Builder) PropU32(name string, cells ...uint32) {
	v := make([]byte, 0, 4*len(cells))
	for _, c := range cells {
		v = binary.BigEndian.AppendUint32(v, c)
	}
	b.prop(name, v)
}

// PropU64 adds a property holding each value as two big-endian cells, high
// cell first.
func (b *Builder) PropU64(name string, vals ...uint64) {
	v := make([]byte, 0, 8*len(vals))
	for _, x := range vals {
		v = binary.BigEndian.AppendUint64(v, x)
	}
	b.prop(name, v)
}

// PropString adds a NUL-terminated string property.
func (b *Builder) PropString(name, s string) { b.PropStrings(name, s) }

// PropStrings adds a string-list property: each string NUL-terminated, one
// after another. No string may contain NUL.
func (b *Builder) PropStrings(name string, ss ...string) {
	var v []byte
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			b.fail(b.path(), "property %q: string %q contains NUL", name, s)
			return
		}
		v = append(v, s...)
		v = append(v, 0)
	}
	b.prop(name, v)
}

// PropBytes adds a property holding v as is.
func (b *Builder) PropBytes(name string, v []byte) { b.prop(name, v) }

// Phandle allocates the next phandle value: 1, 2, ... The caller writes it
// into the node it names with PropU32("phandle", p).
func (b *Builder) Phandle() uint32 {
	b.phandles++
	return b.phandles
}

// SetBootCPU sets the header's boot_cpuid_phys field (default 0), the
// physical ID ("reg" of the cpu node) of the boot CPU.
func (b *Builder) SetBootCPU(id uint32) { b.bootCPU = id }

// path returns the path of the innermost open node, or "" if none is open.
func (b *Builder) path() string {
	if len(b.open) == 0 {
		return ""
	}
	return b.open[len(b.open)-1].path
}

// prop writes an FDT_PROP token into the innermost open node.
func (b *Builder) prop(name string, v []byte) {
	if b.err != nil {
		return
	}
	if len(b.open) == 0 {
		b.fail("", "property %q outside a node", name)
		return
	}
	n := b.open[len(b.open)-1]
	switch {
	case !validPropName(name):
		b.fail(n.path, "invalid property name %q", name)
	case n.child != "":
		b.fail(n.path, "property %q after child node %q", name, n.child)
	case n.props[name]:
		b.fail(n.path, "duplicate property %q", name)
	case len(b.structs)+len(b.strs)+len(v) > maxTotalSize:
		b.fail(n.path, "property %q: tree exceeds %d bytes", name, maxTotalSize)
	}
	if b.err != nil {
		return
	}
	n.props[name] = true
	off, ok := b.strOff[name]
	if !ok {
		off = uint32(len(b.strs))
		b.strOff[name] = off
		b.strs = append(b.strs, name...)
		b.strs = append(b.strs, 0)
	}
	b.structs = binary.BigEndian.AppendUint32(b.structs, tokProp)
	b.structs = binary.BigEndian.AppendUint32(b.structs, uint32(len(v)))
	b.structs = binary.BigEndian.AppendUint32(b.structs, off)
	b.structs = append(b.structs, v...)
	b.pad()
}

// pad zero-fills the structure block up to the next 4-byte boundary.
func (b *Builder) pad() {
	for len(b.structs)%4 != 0 {
		b.structs = append(b.structs, 0)
	}
}

// Finish returns the blob, or the first misuse. It also fails if a node is
// still open, if there is no root node, or if the blob would exceed 2 MiB.
// Calling Finish again returns the same result.
func (b *Builder) Finish() ([]byte, error) {
	switch {
	case b.err != nil:
	case len(b.open) > 0:
		b.fail(b.path(), "node not closed")
	case !b.rootDone:
		b.fail("", "no root node")
	}
	if b.err != nil {
		return nil, b.err
	}
	offRsv := headerSize // already 8-aligned
	offStruct := offRsv + rsvEntry*(len(b.rsvmap)+1)
	sizeStruct := len(b.structs) + 4 // + FDT_END
	offStrings := offStruct + sizeStruct
	total := offStrings + len(b.strs)
	if total > maxTotalSize {
		b.fail("", "blob of %d bytes exceeds %d", total, maxTotalSize)
		return nil, b.err
	}

	out := make([]byte, headerSize, total)
	be := binary.BigEndian
	be.PutUint32(out[hdrMagic:], fdtMagic)
	be.PutUint32(out[hdrTotalSize:], uint32(total))
	be.PutUint32(out[hdrOffDTStruct:], uint32(offStruct))
	be.PutUint32(out[hdrOffDTStrings:], uint32(offStrings))
	be.PutUint32(out[hdrOffMemRsvmap:], uint32(offRsv))
	be.PutUint32(out[hdrVersion:], fdtVersion)
	be.PutUint32(out[hdrLastCompVersion:], fdtLastCompVersion)
	be.PutUint32(out[hdrBootCPUIDPhys:], b.bootCPU)
	be.PutUint32(out[hdrSizeDTStrings:], uint32(len(b.strs)))
	be.PutUint32(out[hdrSizeDTStruct:], uint32(sizeStruct))
	for _, r := range b.rsvmap {
		out = be.AppendUint64(out, r[0])
		out = be.AppendUint64(out, r[1])
	}
	out = append(out, make([]byte, rsvEntry)...) // {0, 0} terminator
	out = append(out, b.structs...)
	out = be.AppendUint32(out, tokEnd)
	out = append(out, b.strs...)
	return out, nil
}
