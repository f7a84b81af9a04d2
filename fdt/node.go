package fdt

import (
	"encoding/binary"
	"strings"
)

// Child returns the child node named name (with its unit address, if it has
// one), or nil. Child on a nil Node returns nil, so lookups can be chained.
func (n *Node) Child(name string) *Node {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Find returns the node at path below n, such as "/cpus/cpu@0", or nil.
// The leading slash is optional; "" and "/" return n itself.
func (n *Node) Find(path string) *Node {
	for _, name := range strings.Split(strings.Trim(path, "/"), "/") {
		if name != "" {
			n = n.Child(name)
		}
	}
	return n
}

// U32 decodes property prop as big-endian 32-bit cells. It reports false if
// the node lacks prop or its length is not a multiple of 4.
func (n *Node) U32(prop string) ([]uint32, bool) {
	v, ok := n.prop(prop)
	if !ok || len(v)%4 != 0 {
		return nil, false
	}
	out := make([]uint32, len(v)/4)
	for i := range out {
		out[i] = binary.BigEndian.Uint32(v[4*i:])
	}
	return out, true
}

// U64 decodes property prop as 64-bit values, each two big-endian cells. It
// reports false if the node lacks prop or its length is not a multiple of 8.
func (n *Node) U64(prop string) ([]uint64, bool) {
	v, ok := n.prop(prop)
	if !ok || len(v)%8 != 0 {
		return nil, false
	}
	out := make([]uint64, len(v)/8)
	for i := range out {
		out[i] = binary.BigEndian.Uint64(v[8*i:])
	}
	return out, true
}

// Strings decodes property prop as a list of NUL-terminated strings. It
// reports false if the node lacks prop or the value is empty or does not end
// in NUL.
func (n *Node) Strings(prop string) ([]string, bool) {
	v, ok := n.prop(prop)
	if !ok || len(v) == 0 || v[len(v)-1] != 0 {
		return nil, false
	}
	return strings.Split(string(v[:len(v)-1]), "\x00"), true
}

// prop returns the raw value of property name; it is safe on a nil Node.
func (n *Node) prop(name string) ([]byte, bool) {
	if n == nil {
		return nil, false
	}
	v, ok := n.Props[name]
	return v, ok
}
