// Package fdt writes and reads Flattened Device Tree blobs (DTB), the binary
// form of a device tree that a boot loader hands to an arm64 Linux kernel.
//
// The format is defined by the Devicetree Specification v0.4, chapter 5
// ("Flattened Devicetree (DTB) Format"). The writer emits version 17 with
// last_comp_version 16, laid out as header, memory reservation map, structure
// block, strings block. The package has no knowledge of any board: callers
// describe nodes and properties with [Builder], and [Parse] reads a blob back
// into a [Node] tree.
package fdt

import "strings"

// Header and token constants (Devicetree Specification v0.4, §5.2 and §5.4.1).
const (
	fdtMagic = 0xd00dfeed

	fdtVersion         = 17
	fdtLastCompVersion = 16

	headerSize = 40 // ten big-endian u32 fields
	rsvEntry   = 16 // {u64 address, u64 size}

	tokBeginNode = 0x1
	tokEndNode   = 0x2
	tokProp      = 0x3
	tokNop       = 0x4
	tokEnd       = 0x9
)

// Header field offsets (Devicetree Specification v0.4, §5.2).
const (
	hdrMagic           = 0
	hdrTotalSize       = 4
	hdrOffDTStruct     = 8
	hdrOffDTStrings    = 12
	hdrOffMemRsvmap    = 16
	hdrVersion         = 20
	hdrLastCompVersion = 24
	hdrBootCPUIDPhys   = 28
	hdrSizeDTStrings   = 32
	hdrSizeDTStruct    = 36
)

// maxTotalSize is the largest blob the Builder produces: arm64 Linux requires
// the DTB not to exceed 2 MiB (Documentation/arch/arm64/booting.rst).
const maxTotalSize = 2 << 20

// align4 rounds n up to a multiple of 4.
func align4(n int) int { return (n + 3) &^ 3 }

// validNodeName reports whether name is node-name[@unit-address] with both
// parts non-empty and drawn from the characters of spec Table 2.1.
func validNodeName(name string) bool {
	base, unit, hasUnit := strings.Cut(name, "@")
	if base == "" || (hasUnit && unit == "") {
		return false
	}
	return allIn(base, nodeChars) && allIn(unit, nodeChars)
}

// validPropName reports whether name is non-empty and drawn from the
// characters of spec Table 2.2.
func validPropName(name string) bool {
	return name != "" && allIn(name, propChars)
}

const (
	nodeChars = ",._+-"
	propChars = ",._+?#-"
)

// allIn reports whether every byte of s is an ASCII letter, a digit, or one
// of the bytes in extra.
func allIn(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte(extra, c) >= 0:
		default:
			return false
		}
	}
	return true
}
