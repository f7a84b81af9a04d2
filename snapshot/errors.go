package snapshot

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Sentinel errors, one per class of problem, for callers to branch on with
// errors.Is. Every error this package returns for a bad file is a
// *FormatError wrapping one of them.
var (
	ErrNotSnapshot = errors.New("not a squib snapshot file")       // wrong magic: another kind of file
	ErrTooLarge    = errors.New("file too large")                  // over MaxStateSize
	ErrTruncated   = errors.New("file truncated")                  // shorter than its header says
	ErrChecksum    = errors.New("checksum mismatch")               // bit rot, or an edited file
	ErrVersion     = errors.New("unsupported format version")      // other major, or a newer minor
	ErrCorrupt     = errors.New("malformed snapshot")              // decodes badly or contradicts itself
	ErrArch        = errors.New("wrong architecture")              // not Arch
	ErrBackend     = errors.New("wrong backend")                   // saved by another hypervisor backend
	ErrPageSize    = errors.New("wrong host page size")            // saved on a host with another page size
	ErrNoMemory    = errors.New("memory file missing")             // the memory file cannot be opened
	ErrMismatch    = errors.New("memory file does not match")      // a memory file of another snapshot
	ErrParent      = errors.New("diff does not apply to its base") // broken diff chain
	ErrHost        = errors.New("saved on an incompatible host")   // the ID-register rule, or registers this hypervisor lacks
)

// FormatError reports a problem with one snapshot file.
type FormatError struct {
	Path    string // the file; empty when decoding bytes
	Err     error  // one of the sentinel errors
	Problem string // what exactly is wrong
}

func (e *FormatError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("snapshot: %v: %s", e.Err, e.Problem)
	}
	return fmt.Sprintf("snapshot: %s: %v: %s", e.Path, e.Err, e.Problem)
}

func (e *FormatError) Unwrap() error { return e.Err }

// problem returns a *FormatError without a path; callers that know the file
// add it with inFile.
func problem(err error, format string, args ...any) *FormatError {
	return &FormatError{Err: err, Problem: fmt.Sprintf(format, args...)}
}

// inFile sets the path of a *FormatError in err, if it has none yet.
func inFile(err error, path string) error {
	var fe *FormatError
	if errors.As(err, &fe) && fe.Path == "" {
		fe.Path = path
	}
	return err
}

// fieldPath names a place in a state file's body for error messages, in the
// spelling of docs/snapshot-format.md's fields: header.memory.block_size,
// machine.vcpus[1].x, machine.devices["pl011"]. The nil path is the body
// itself. Segments are formatted only when an error is reported.
type fieldPath struct {
	parent *fieldPath
	kind   byte         // '.': a field; '[': an index; 'k': the value of a map key; '#': a map's n-th key
	name   string       // the field's name
	n      int          // the index
	key    []byte       // the map key's encoding
	keyTyp reflect.Type // the map's key type, nil in opaque values
}

func (p *fieldPath) field(name string) *fieldPath {
	return &fieldPath{parent: p, kind: '.', name: name}
}
func (p *fieldPath) index(i int) *fieldPath  { return &fieldPath{parent: p, kind: '[', n: i} }
func (p *fieldPath) nthKey(i int) *fieldPath { return &fieldPath{parent: p, kind: '#', n: i} }

// value is the path of the value of a map's i-th key, whose (checked)
// encoding is key; t is the map's key type, nil in opaque values.
func (p *fieldPath) value(i int, key []byte, t reflect.Type) *fieldPath {
	return &fieldPath{parent: p, kind: 'k', n: i, key: key, keyTyp: t}
}

func (p *fieldPath) String() string {
	if p == nil {
		return "body"
	}
	var segs []*fieldPath
	for q := p; q != nil; q = q.parent {
		segs = append(segs, q)
	}
	var b strings.Builder
	for i := len(segs) - 1; i >= 0; i-- {
		switch q := segs[i]; q.kind {
		case '.':
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(q.name)
		case '[':
			fmt.Fprintf(&b, "[%d]", q.n)
		case 'k':
			fmt.Fprintf(&b, "[%s]", cborKeyName(q.key, q.keyTyp, q.n))
		case '#':
			fmt.Fprintf(&b, " (key index %d)", q.n)
		}
	}
	if b.Len() == 0 {
		return "body"
	}
	return b.String()
}

// fieldProblem returns an ErrCorrupt *FormatError naming the field at p.
func fieldProblem(p *fieldPath, format string, args ...any) *FormatError {
	return problem(ErrCorrupt, "%v: %s", p, fmt.Sprintf(format, args...))
}
