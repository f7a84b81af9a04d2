package snapshot

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/squibvm/squib/gic"
)

// checkBody checks a state file's CBOR body item by item against the format
// (docs/snapshot-format.md §2, "Strictness and limits"), before the decoder
// sees it, and names the first field that differs. The decoder alone would
// read many things the format does not describe: null as zero, an array of
// the wrong length padded or cut, simple values and floats as integers, an
// array of integers as a byte string, non-shortest forms and unsorted keys.
//
// Every item must be well-formed and in core deterministic encoding
// (RFC 8949 §4.2.1: shortest heads, definite lengths, map keys sorted
// bytewise and distinct), with no tags, and no simple values but false, true
// and null. The typed part (every field this package declares) must also have
// the field's own CBOR type: no null anywhere, every field present but the
// optional ones (omitempty), which are absent when empty, arrays of the
// declared length, integers that fit, times as RFC 3339 text in UTC as
// EncodeState spells them, vCPUs at most MaxVCPUs. Opaque parts (device
// states, VCPU.Backend, Config.Extra) are checked as deterministic CBOR only.
// The header's architecture is checked before the machine is looked at, so a
// file of another architecture is reported as such.
func checkBody(body []byte) error {
	s := &shape{b: body, base: prefixLen}
	h, err := s.head(0, nil)
	if err != nil {
		return err
	}
	if h.major != 5 {
		return fieldProblem(nil, "%s, want a map {1: header, 2: machine}", h.kind())
	}
	end, err := s.object(h, 0, typeState, nil, func(f *fieldInfo, raw []byte) error {
		if f.typ != typeHeader {
			return nil
		}
		var hdr Header
		if err := Unmarshal(raw, &hdr); err != nil {
			return problem(ErrCorrupt, "decoding the header: %v", err)
		}
		if hdr.Arch != Arch {
			return problem(ErrArch, "header.arch: saved for %q, this is %s", hdr.Arch, Arch)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if end != len(body) {
		return fieldProblem(nil, "%d bytes of data after the body's map", len(body)-end)
	}
	return nil
}

var (
	typeState  = reflect.TypeFor[State]()
	typeHeader = reflect.TypeFor[Header]()
	typeTime   = reflect.TypeFor[time.Time]()
	typeRaw    = reflect.TypeFor[cbor.RawMessage]()
)

// shape walks CBOR for checkBody. Nothing it reads is trusted: every length
// is checked against the bytes left before it is used, and nesting is
// bounded, so no input makes it panic, recurse deeply or allocate much.
type shape struct {
	b    []byte
	base int // the file offset of b[0], for messages
}

// cborHead is a CBOR item's initial byte and argument.
type cborHead struct {
	major, ai byte
	arg       uint64 // the value, length, count, tag number or simple value
	off, end  int    // the item's first byte, and the first byte past the head
}

// malformed reports CBOR that is not well-formed at all.
func (s *shape) malformed(p *fieldPath, off int, format string, args ...any) error {
	return problem(ErrCorrupt, "decoding %v at byte %d: %s", p, s.base+off, fmt.Sprintf(format, args...))
}

// shortestArg[i] is the least argument that needs a head with additional
// information 24+i (1, 2, 4 or 8 argument bytes).
var shortestArg = [4]uint64{24, 1 << 8, 1 << 16, 1 << 32}

func cborHeadLen(arg uint64) int {
	switch {
	case arg < 24:
		return 1
	case arg < 1<<8:
		return 2
	case arg < 1<<16:
		return 3
	case arg < 1<<32:
		return 5
	}
	return 9
}

// head reads the head of the item at off, which must be in its shortest
// form and of definite length.
func (s *shape) head(off int, p *fieldPath) (cborHead, error) {
	if off >= len(s.b) {
		return cborHead{}, s.malformed(p, off, "the data ends where an item should begin")
	}
	h := cborHead{major: s.b[off] >> 5, ai: s.b[off] & 31, off: off, end: off + 1}
	switch {
	case h.ai < 24:
		h.arg = uint64(h.ai)
	case h.ai < 28:
		n := 1 << (h.ai - 24)
		if len(s.b)-h.end < n {
			return cborHead{}, s.malformed(p, off, "the data ends inside the item's head")
		}
		for _, c := range s.b[h.end : h.end+n] {
			h.arg = h.arg<<8 | uint64(c)
		}
		h.end += n
		switch {
		case h.major == 7 && h.ai == 24 && h.arg < 32:
			return cborHead{}, s.malformed(p, off, "simple value %d in two bytes", h.arg)
		case h.major != 7 && h.arg < shortestArg[h.ai-24]:
			return cborHead{}, fieldProblem(p, "%s written in %d bytes, not in the deterministic encoding's %d",
				h.argText(), h.end-off, cborHeadLen(h.arg))
		}
	case h.ai == 31:
		switch h.major {
		case 2, 3, 4, 5:
			return cborHead{}, fieldProblem(p, "%s of indefinite length; the format has definite lengths only", h.kind())
		case 7:
			return cborHead{}, s.malformed(p, off, "a break code outside an indefinite-length item")
		}
		return cborHead{}, s.malformed(p, off, "initial byte %#02x has no indefinite-length form", s.b[off])
	default:
		return cborHead{}, s.malformed(p, off, "initial byte %#02x uses reserved additional information %d", s.b[off], h.ai)
	}
	return h, nil
}

// kind says what kind of item h begins, for messages.
func (h cborHead) kind() string {
	switch h.major {
	case 0:
		return "an unsigned integer"
	case 1:
		return "a negative integer"
	case 2:
		return "a byte string"
	case 3:
		return "a text string"
	case 4:
		return "an array"
	case 5:
		return "a map"
	case 6:
		return fmt.Sprintf("a tag (%d)", h.arg)
	}
	switch h.ai {
	case 20:
		return "false"
	case 21:
		return "true"
	case 22:
		return "null"
	case 23:
		return "undefined"
	case 25, 26, 27:
		return "a floating-point number"
	}
	return fmt.Sprintf("simple value %d", h.arg)
}

// argText names h's argument, for messages about its encoding.
func (h cborHead) argText() string {
	switch h.major {
	case 0:
		return fmt.Sprintf("integer %d", h.arg)
	case 1:
		return fmt.Sprintf("integer -1-%d", h.arg)
	case 5:
		return fmt.Sprintf("the size %d of a map", h.arg)
	case 6:
		return fmt.Sprintf("tag number %d", h.arg)
	}
	return fmt.Sprintf("the length %d of %s", h.arg, h.kind())
}

// shapeWant says what CBOR type decodes into t, for messages.
func shapeWant(t reflect.Type) string {
	switch {
	case t == typeTime:
		return "an RFC 3339 time as text"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return "a byte string"
	}
	switch t.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an unsigned integer"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.String:
		return "a text string"
	case reflect.Array:
		return fmt.Sprintf("an array of %d %s", t.Len(), shapeUnit(t))
	case reflect.Slice:
		return "an array"
	}
	return "a map"
}

// shapeUnit names the elements of an array type, for messages.
func shapeUnit(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[[31]uint64](), reflect.TypeFor[[32][2]uint64]():
		return "registers"
	case reflect.TypeFor[[2]uint64]():
		return "halves"
	}
	return "elements"
}

// count checks the element count of the array or map h begins, at nesting
// level depth, and returns it.
func (s *shape) count(h cborHead, depth int, p *fieldPath) (int, error) {
	what, per := "elements", uint64(1)
	if h.major == 5 {
		what, per = "pairs", 2
	}
	switch {
	case depth > maxNesting:
		return 0, fieldProblem(p, "nested deeper than %d levels", maxNesting)
	case h.arg > maxElements:
		return 0, fieldProblem(p, "%s of %d %s, more than the format's %d", h.kind(), h.arg, what, maxElements)
	case h.arg*per > uint64(len(s.b)-h.end):
		return 0, s.malformed(p, h.off, "%s of %d %s with %d bytes left", h.kind(), h.arg, what, len(s.b)-h.end)
	}
	return int(h.arg), nil
}

// str returns the end of the byte or text string h begins; text must be
// valid UTF-8.
func (s *shape) str(h cborHead, p *fieldPath) (int, error) {
	if uint64(len(s.b)-h.end) < h.arg {
		return 0, s.malformed(p, h.off, "%s of %d bytes with %d bytes left", h.kind(), h.arg, len(s.b)-h.end)
	}
	end := h.end + int(h.arg)
	if h.major == 3 && !utf8.Valid(s.b[h.end:end]) {
		return 0, fieldProblem(p, "text that is not valid UTF-8")
	}
	return end, nil
}

// keyOrder checks that key, a map's i-th key, follows prev, the previous
// one, in the deterministic encoding's order: bytewise, and no key twice.
// t is the map's key type, nil in opaque values.
func (s *shape) keyOrder(p *fieldPath, prev, key []byte, t reflect.Type, i int) error {
	switch c := bytes.Compare(prev, key); {
	case prev == nil:
		return nil
	case c == 0:
		return fieldProblem(p, "key %s appears twice", cborKeyName(key, t, i))
	case c > 0:
		return fieldProblem(p, "key %s comes after a greater key; the deterministic encoding sorts keys bytewise", cborKeyName(key, t, i))
	}
	return nil
}

// cborKeyName spells a map key, whose encoding key has been checked, for a
// path. System register maps (uint16 keys: VCPU.Sys, gic.ICCRegs) are keyed
// by encoding; a key with no short spelling is named by its index i.
func cborKeyName(key []byte, t reflect.Type, i int) string {
	h, err := (&shape{b: key}).head(0, nil)
	switch {
	case err != nil:
	case h.major == 0 && t != nil && t.Kind() == reflect.Uint16:
		return SysRegName(uint16(h.arg))
	case h.major == 0:
		return fmt.Sprint(h.arg)
	case h.major == 1:
		return fmt.Sprintf("-1-%d", h.arg)
	case h.major == 3 && h.arg <= 64 && h.arg <= uint64(len(key)-h.end):
		return fmt.Sprintf("%q", key[h.end:h.end+int(h.arg)])
	}
	return fmt.Sprintf("#%d", i)
}

// any checks an opaque item, at nesting level depth, as deterministic CBOR
// and returns its end.
func (s *shape) any(off, depth int, p *fieldPath) (int, error) {
	h, err := s.head(off, p)
	if err != nil {
		return 0, err
	}
	switch h.major {
	case 0, 1:
		return h.end, nil
	case 2, 3:
		return s.str(h, p)
	case 4:
		n, err := s.count(h, depth+1, p)
		if err != nil {
			return 0, err
		}
		off = h.end
		for i := range n {
			if off, err = s.any(off, depth+1, p.index(i)); err != nil {
				return 0, err
			}
		}
		return off, nil
	case 5:
		n, err := s.count(h, depth+1, p)
		if err != nil {
			return 0, err
		}
		off = h.end
		var prev []byte
		for i := range n {
			k := off
			if off, err = s.any(off, depth+1, p.nthKey(i)); err != nil {
				return 0, err
			}
			if err := s.keyOrder(p, prev, s.b[k:off], nil, i); err != nil {
				return 0, err
			}
			prev = s.b[k:off]
			if off, err = s.any(off, depth+1, p.value(i, prev, nil)); err != nil {
				return 0, err
			}
		}
		return off, nil
	case 6:
		return 0, fieldProblem(p, "%s; the format has no tags", h.kind())
	}
	switch h.ai {
	case 20, 21, 22: // false, true, null
		return h.end, nil
	case 25, 26, 27:
		return h.end, s.float(h, p)
	}
	return 0, fieldProblem(p, "%s; of the simple values the format has false, true and null only", h.kind())
}

// float checks that the floating-point number h begins is in its shortest
// form, as Marshal writes it (NaN as 0xf97e00).
func (s *shape) float(h cborHead, p *fieldPath) error {
	raw := s.b[h.off:h.end]
	var f float64
	if err := cbor.Unmarshal(raw, &f); err != nil {
		return s.malformed(p, h.off, "%v", err)
	}
	if canon, err := Marshal(f); err != nil || !bytes.Equal(canon, raw) {
		return fieldProblem(p, "floating-point number %v written in %d bytes, not in its shortest form", f, len(raw))
	}
	return nil
}

// typed checks the item at off, at nesting level depth, as the encoding of
// a value of type t, and returns its end.
func (s *shape) typed(off, depth int, t reflect.Type, p *fieldPath) (int, error) {
	if t == typeRaw {
		return s.any(off, depth, p)
	}
	h, err := s.head(off, p)
	if err != nil {
		return 0, err
	}
	wrong := func() (int, error) { return 0, fieldProblem(p, "%s, want %s", h.kind(), shapeWant(t)) }
	if t == typeTime {
		if h.major != 3 {
			return wrong()
		}
		end, err := s.str(h, p)
		if err != nil {
			return 0, err
		}
		text := string(s.b[h.end:end])
		tm, err := time.Parse(time.RFC3339Nano, text)
		if err != nil {
			return 0, fieldProblem(p, "%q is not an RFC 3339 time", text)
		}
		if canon := tm.UTC().Format(time.RFC3339Nano); canon != text {
			return 0, fieldProblem(p, "%q is not spelled as the format spells it, %q (UTC, no trailing zeros)", text, canon)
		}
		return end, nil
	}
	switch t.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if h.major != 0 {
			return wrong()
		}
		if bits := t.Bits(); bits < 64 && h.arg>>bits != 0 {
			return 0, fieldProblem(p, "%d does not fit in %d bits", h.arg, bits)
		}
		return h.end, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if h.major > 1 {
			return wrong()
		}
		if h.arg > 1<<(t.Bits()-1)-1 {
			return 0, fieldProblem(p, "%s does not fit in %d bits", h.argText(), t.Bits())
		}
		return h.end, nil
	case reflect.String:
		if h.major != 3 {
			return wrong()
		}
		return s.str(h, p)
	case reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
			if h.major != 2 {
				return wrong()
			}
			return s.str(h, p)
		}
		if h.major != 4 {
			return wrong()
		}
		if t.Kind() == reflect.Array && h.arg != uint64(t.Len()) {
			return 0, fieldProblem(p, "%d %s, want %d", h.arg, shapeUnit(t), t.Len())
		}
		n, err := s.count(h, depth+1, p)
		if err != nil {
			return 0, err
		}
		off = h.end
		for i := range n {
			if off, err = s.typed(off, depth+1, t.Elem(), p.index(i)); err != nil {
				return 0, err
			}
		}
		return off, nil
	case reflect.Map:
		if h.major != 5 {
			return wrong()
		}
		n, err := s.count(h, depth+1, p)
		if err != nil {
			return 0, err
		}
		off = h.end
		var prev []byte
		for i := range n {
			k := off
			if off, err = s.typed(off, depth+1, t.Key(), p.nthKey(i)); err != nil {
				return 0, err
			}
			if err := s.keyOrder(p, prev, s.b[k:off], t.Key(), i); err != nil {
				return 0, err
			}
			prev = s.b[k:off]
			if off, err = s.typed(off, depth+1, t.Elem(), p.value(i, prev, t.Key())); err != nil {
				return 0, err
			}
		}
		return off, nil
	case reflect.Struct:
		if h.major != 5 {
			return wrong()
		}
		return s.object(h, depth, t, p, nil)
	}
	// Only a type added to State without support here gets this far.
	return 0, fmt.Errorf("snapshot: %v: type %v has no CBOR shape in the format", p, t)
}

// object checks the map h begins, at nesting level depth, as a struct of
// type t: keys are its fields' numbers, ascending; every field is present
// except the optional (omitempty) ones, which are absent when empty. after,
// when not nil, is called with each field's encoding once it is checked.
func (s *shape) object(h cborHead, depth int, t reflect.Type, p *fieldPath, after func(*fieldInfo, []byte) error) (int, error) {
	fields, err := shapeFields(t)
	if err != nil {
		return 0, err
	}
	n, err := s.count(h, depth+1, p)
	if err != nil {
		return 0, err
	}
	seen := make([]bool, len(fields))
	off := h.end
	var prev uint64
	for i := range n {
		kh, err := s.head(off, p.nthKey(i))
		if err != nil {
			return 0, err
		}
		if kh.major != 0 {
			return 0, fieldProblem(p, "%s as a key, want a field number", kh.kind())
		}
		switch {
		case i > 0 && kh.arg == prev:
			return 0, fieldProblem(p, "key %d appears twice", kh.arg)
		case i > 0 && kh.arg < prev:
			return 0, fieldProblem(p, "key %d comes after key %d; the deterministic encoding sorts keys", kh.arg, prev)
		}
		prev = kh.arg
		j := slices.IndexFunc(fields, func(f fieldInfo) bool { return f.key == kh.arg })
		if j < 0 {
			return 0, fieldProblem(p, "unknown key %d", kh.arg)
		}
		f := &fields[j]
		fp := p.field(f.name)
		off = kh.end
		vh, err := s.head(off, fp)
		if err != nil {
			return 0, err
		}
		switch {
		case f.omitEmpty && f.typ != typeRaw && vh.ai == 0 && vh.major != 1 && vh.major <= 5:
			return 0, fieldProblem(fp, "%s that is empty; the format leaves an empty %s out", vh.kind(), f.name)
		case f.max > 0 && vh.major == 4 && vh.arg > uint64(f.max):
			return 0, fieldProblem(fp, "%d %s, at most %d", vh.arg, f.unit, f.max)
		}
		start := off
		if off, err = s.typed(off, depth+1, f.typ, fp); err != nil {
			return 0, err
		}
		seen[j] = true
		if after != nil {
			if err := after(f, s.b[start:off]); err != nil {
				return 0, err
			}
		}
	}
	for j, f := range fields {
		if !seen[j] && !f.omitEmpty {
			return 0, fieldProblem(p.field(f.name), "missing (key %d)", f.key)
		}
	}
	return off, nil
}

// fieldInfo describes one field of a struct the format encodes as a map
// keyed by small integers (cbor:"N,keyasint").
type fieldInfo struct {
	key       uint64
	name      string // as paths spell it: the JSON name, or the Go name in snake case
	typ       reflect.Type
	omitEmpty bool
	max       int    // for an array: the most elements it may have (0: maxElements)
	unit      string // what those elements are, for messages
}

// shapeFieldsCache maps a struct type to its []fieldInfo.
var shapeFieldsCache sync.Map

// shapeFields returns the fields of struct type t.
func shapeFields(t reflect.Type) ([]fieldInfo, error) {
	if v, ok := shapeFieldsCache.Load(t); ok {
		return v.([]fieldInfo), nil
	}
	var fields []fieldInfo
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("cbor")
		if !sf.IsExported() || tag == "-" {
			continue
		}
		opts := strings.Split(tag, ",")
		key, err := strconv.ParseUint(opts[0], 10, 64)
		if err != nil || !slices.Contains(opts, "keyasint") {
			return nil, fmt.Errorf("snapshot: %v.%s has no cbor:\"N,keyasint\" tag", t, sf.Name)
		}
		f := fieldInfo{key: key, name: shapeFieldName(sf), typ: sf.Type, omitEmpty: slices.Contains(opts, "omitempty")}
		switch {
		case t == reflect.TypeFor[Machine]() && sf.Name == "VCPUs":
			f.max, f.unit = MaxVCPUs, "vCPUs"
		case t == reflect.TypeFor[gic.State]() && sf.Name == "ICC":
			f.max, f.unit = MaxVCPUs, "vCPUs' registers"
		}
		fields = append(fields, f)
	}
	shapeFieldsCache.Store(t, fields)
	return fields, nil
}

// shapeFieldName spells a field in paths: its JSON name if it has one, else its
// Go name in snake case (BackendVersion: backend_version, SP_EL0: sp_el0).
func shapeFieldName(sf reflect.StructField) string {
	if name, _, _ := strings.Cut(sf.Tag.Get("json"), ","); name != "" && name != "-" {
		return name
	}
	var b strings.Builder
	for i, r := range sf.Name {
		if unicode.IsUpper(r) && i > 0 && unicode.IsLower(rune(sf.Name[i-1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
