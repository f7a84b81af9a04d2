package snapshot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// Version is a format version. A reader accepts a file whose Major equals
// its own and whose Minor is not newer than its own.
type Version struct {
	Major uint16 `json:"major"`
	Minor uint16 `json:"minor"`
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// The format version this package writes, and the newest it reads. Adding an
// optional field bumps the minor version: newer readers still read older
// files (the field decodes as its zero value), older readers refuse newer
// files up front. Any other change bumps the major version.
const (
	FormatMajor = 1
	FormatMinor = 2 // 1.1: every register KVM lists; 1.2: virtio-mmio device entries
)

// formatVersion is FormatMajor.FormatMinor; tests change it to play an older
// or newer squib.
var formatVersion = Version{FormatMajor, FormatMinor}

// MaxStateSize caps a state file. Real ones are far smaller (a few KiB per
// vCPU plus the GIC blob); the cap keeps a hostile file from exhausting memory.
const MaxStateSize = 32 << 20

// Magic numbers of the two envelopes: a state file, and a memory file's footer.
var (
	stateMagic  = [8]byte{'S', 'Q', 'U', 'I', 'B', '-', 'S', 'T'}
	footerMagic = [8]byte{'S', 'Q', 'U', 'I', 'B', '-', 'M', 'M'}
)

// Envelope layout, all integers little-endian:
//
//	[0, 8)       magic
//	[8, 10)      format major version
//	[10, 12)     format minor version
//	[12, 20)     n, the CBOR body's length
//	[20, 24)     CRC-32C of bytes [0, 20)
//	[24, 24+n)   CBOR body
//	[24+n, +8)   CRC-64/ECMA of bytes [0, 24+n)
const (
	prefixLen  = 24
	trailerLen = 8
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	ecma       = crc64.MakeTable(crc64.ECMA)
)

// seal wraps a CBOR body in an envelope.
func seal(magic [8]byte, v Version, body []byte) []byte {
	b := make([]byte, prefixLen, prefixLen+len(body)+trailerLen)
	copy(b, magic[:])
	binary.LittleEndian.PutUint16(b[8:], v.Major)
	binary.LittleEndian.PutUint16(b[10:], v.Minor)
	binary.LittleEndian.PutUint64(b[12:], uint64(len(body)))
	binary.LittleEndian.PutUint32(b[20:], crc32.Checksum(b[:20], castagnoli))
	b = append(b, body...)
	return binary.LittleEndian.AppendUint64(b, crc64.Checksum(b, ecma))
}

// checkPrefix validates an envelope's fixed prefix and returns its version
// and body length. The version is trusted only once the prefix checksum
// holds, so a flipped bit is reported as such, not as a version problem.
func checkPrefix(magic [8]byte, p []byte) (Version, uint64, error) {
	if len(p) < prefixLen {
		return Version{}, 0, problem(ErrTruncated, "%d bytes, shorter than the %d-byte header", len(p), prefixLen)
	}
	if [8]byte(p[:8]) != magic {
		return Version{}, 0, problem(ErrNotSnapshot, "magic %q, want %q", p[:8], magic[:])
	}
	if got, want := crc32.Checksum(p[:20], castagnoli), binary.LittleEndian.Uint32(p[20:]); got != want {
		return Version{}, 0, problem(ErrChecksum, "header CRC-32C is %#08x, stored %#08x", got, want)
	}
	v := Version{binary.LittleEndian.Uint16(p[8:]), binary.LittleEndian.Uint16(p[10:])}
	switch {
	case v.Major != formatVersion.Major:
		return v, 0, problem(ErrVersion, "format %v; this squib reads %d.x only", v, formatVersion.Major)
	case v.Minor > formatVersion.Minor:
		return v, 0, problem(ErrVersion, "format %v is newer than this squib's %v; upgrade squib", v, formatVersion)
	}
	return v, binary.LittleEndian.Uint64(p[12:]), nil
}

// open validates a whole envelope and returns its version and CBOR body.
func open(magic [8]byte, b []byte) (Version, []byte, error) {
	v, n, err := checkPrefix(magic, b)
	if err != nil {
		return v, nil, err
	}
	have := uint64(len(b) - prefixLen)
	switch {
	case n > have || have-n < trailerLen:
		return v, nil, problem(ErrTruncated, "%d bytes, the header says %d", len(b), prefixLen+n+trailerLen)
	case have-n > trailerLen:
		return v, nil, problem(ErrCorrupt, "%d bytes of trailing data", have-n-trailerLen)
	}
	end := prefixLen + int(n)
	if got, want := crc64.Checksum(b[:end], ecma), binary.LittleEndian.Uint64(b[end:]); got != want {
		return v, nil, problem(ErrChecksum, "CRC-64 of the contents is %#016x, stored %#016x", got, want)
	}
	return v, b[prefixLen:end], nil
}

// Bounds of the decoding mode (and of checkBody): nesting of arrays and maps,
// and elements of an array or pairs of a map.
const (
	maxNesting  = 24
	maxElements = 1 << 16
)

// The one encoding and one decoding mode of the format.
var (
	encMode = sync.OnceValue(func() cbor.EncMode {
		opts := cbor.CoreDetEncOptions()
		opts.Time = cbor.TimeRFC3339NanoUTC
		opts.TagsMd = cbor.TagsForbidden
		// A nil slice or map is written as an empty one, not as null: the
		// state file has no null, and Unmarshal decodes both alike.
		opts.NilContainers = cbor.NilContainerAsEmpty
		return must(opts.EncMode())
	})
	decMode = sync.OnceValue(func() cbor.DecMode {
		// Of the simple values only false, true and null are data; the
		// others (undefined, unassigned ones) are refused, not read as
		// integers.
		var reject []func(*cbor.SimpleValueRegistry) error
		for sv := range 256 {
			if sv != 20 && sv != 21 && sv != 22 && (sv < 24 || sv > 31) {
				reject = append(reject, cbor.WithRejectedSimpleValue(cbor.SimpleValue(sv)))
			}
		}
		return must(cbor.DecOptions{
			DupMapKey:         cbor.DupMapKeyEnforcedAPF,
			IndefLength:       cbor.IndefLengthForbidden,
			TagsMd:            cbor.TagsForbidden,
			MaxNestedLevels:   maxNesting,
			MaxArrayElements:  maxElements,
			MaxMapPairs:       maxElements,
			ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
			SimpleValues:      must(cbor.NewSimpleValueRegistryFromDefaults(reject...)),
		}.DecMode())
	})
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err) // the options are constants; only a programming error gets here
	}
	return v
}

// Marshal encodes v with the format's deterministic CBOR encoding. Device and
// backend state stored in a State (Machine.Devices, VCPU.Backend,
// Config.Extra) must be encoded with it, so snapshot files stay byte-stable:
// a state file whose opaque parts are not in this encoding is refused. Nil
// slices and maps are encoded as empty ones.
func Marshal(v any) (cbor.RawMessage, error) {
	return encMode().Marshal(v)
}

// Unmarshal decodes CBOR into v with the format's strict decoding mode:
// duplicate map keys, indefinite lengths, tags, unknown fields and simple
// values other than false, true and null are errors, and nesting, array and
// map sizes are bounded. (A state file's own fields are checked more
// strictly still when it is read; see checkBody.)
func Unmarshal(data []byte, v any) error {
	return decMode().Unmarshal(data, v)
}

// EncodeState validates s and returns it as a state file. It refuses a
// state DecodeState would refuse, one whose opaque parts (device states,
// VCPU.Backend, Config.Extra) were not encoded with Marshal included.
func EncodeState(s *State) ([]byte, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	body, err := Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("snapshot: encoding state: %w", err)
	}
	if prefixLen+len(body)+trailerLen > MaxStateSize {
		return nil, problem(ErrTooLarge, "state is %d bytes, the limit is %d", len(body), MaxStateSize)
	}
	if err := checkBody(body); err != nil {
		return nil, err
	}
	return seal(stateMagic, formatVersion, body), nil
}

// DecodeState checks a state file completely (envelope, checksums, version,
// decoding, internal consistency) and returns its contents. It does not check
// that the snapshot suits this host; see Expect.Check.
//
// Decoding is strict: the body must be exactly what docs/snapshot-format.md
// describes, in the deterministic encoding EncodeState writes, so an accepted
// file re-encodes to the same bytes. Every refusal names the field.
func DecodeState(b []byte) (*State, error) {
	s, _, err := decodeState(b)
	return s, err
}

// decodeState is DecodeState, also returning the file's format version.
func decodeState(b []byte) (*State, Version, error) {
	if len(b) > MaxStateSize {
		return nil, Version{}, problem(ErrTooLarge, "%d bytes, the limit is %d", len(b), MaxStateSize)
	}
	v, body, err := open(stateMagic, b)
	if err != nil {
		return nil, v, err
	}
	// The shape first, field by field (the header's architecture before
	// the machine), so a refusal names the field; then the decoder, which
	// now finds what it expects; then the consistency rules.
	if err := checkBody(body); err != nil {
		return nil, v, err
	}
	s := new(State)
	if err := Unmarshal(body, s); err != nil {
		return nil, v, problem(ErrCorrupt, "decoding: %v", err)
	}
	s.Header.Created = s.Header.Created.UTC()
	if err := s.validate(); err != nil {
		return nil, v, err
	}
	// checkBody leaves nothing for this to find; it keeps "accepted" equal
	// to "written by EncodeState" should the two ever drift apart.
	again, err := Marshal(s)
	if err != nil {
		return nil, v, problem(ErrCorrupt, "re-encoding: %v", err)
	}
	if !bytes.Equal(again, body) {
		i := 0
		for i < len(again) && i < len(body) && again[i] == body[i] {
			i++
		}
		return nil, v, problem(ErrCorrupt, "the body is not in the format's deterministic encoding: re-encoded, it differs from byte %d on", prefixLen+i)
	}
	return s, v, nil
}
