package snapshot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Files names the two files of one snapshot.
type Files struct {
	State  string `json:"state"`
	Memory string `json:"memory"`
}

// CreateOptions says how Create writes the memory file.
type CreateOptions struct {
	BlockSize int // 0 means DefaultBlockSize
	// Dirty, when not nil, makes a diff snapshot whose memory file holds only
	// the blocks Dirty marks: those written since the snapshot named by
	// st.Header.Parent. The state file is always complete.
	Dirty Bitmap
	// Stats, when not nil, receives where Create's time went.
	Stats *CreateStats
}

// CreateStats says where the time of one Create went. Guest RAM is scanned
// (for zero blocks, and checksummed) and written by several goroutines at
// once: Scan and Write are summed over them, so together they may exceed
// the time Create took.
type CreateStats struct {
	Scan    time.Duration // reading guest RAM for zero blocks and checksums
	Write   time.Duration // writing RAM blocks and the footer
	Sync    time.Duration // syncing both files, renaming them, syncing their directories
	Written int64         // bytes of RAM written (the rest are holes)
}

// Create writes a snapshot of st and ram, the guest RAM: the memory file,
// then the state file bound to it. Each is written under a temporary name in
// its directory and synced; only once both are complete are they renamed to
// their names and the directories synced. A failure before that, a full disk
// included, leaves any earlier snapshot at those paths untouched and no file
// under either name. (A crash between the two renames leaves a new memory file
// beside the old state file, which Load refuses as a mismatch.)
//
// The caller fills st except for these Header fields, which Create sets: ID
// (when empty), Arch, Type, Created, Memory, and HostPageSize (when 0).
func Create(f Files, st *State, ram []byte, o CreateOptions) error {
	h := &st.Header
	if h.ID == "" {
		h.ID = NewID()
	}
	if h.HostPageSize == 0 {
		h.HostPageSize = uint32(os.Getpagesize())
	}
	h.Arch, h.Type, h.Created = Arch, Full, time.Now().UTC()
	if o.Dirty != nil {
		h.Type = Diff
	}
	mo := MemoryOptions{Snapshot: h.ID, BlockSize: o.BlockSize, Dirty: o.Dirty, Parent: h.Parent}
	ft, err := mo.footer(uint64(len(ram)))
	if err != nil {
		return err
	}
	h.Memory = ft.ref()
	state, err := EncodeState(st) // validates st before gigabytes are written
	if err != nil {
		return err
	}
	for _, p := range []string{f.Memory, f.State} {
		if err := checkOutput(p); err != nil {
			return err
		}
	}
	stats := o.Stats
	if stats == nil {
		stats = new(CreateStats)
	}
	mem, err := stageMemory(f.Memory, ft, o.Dirty, stats, func(w *blockWriter) error { return w.writeRAM(ram) })
	if err != nil {
		return err
	}
	sf, err := stage(f.State, &stats.Sync, func(f *os.File) error { _, err := f.Write(state); return err })
	if err != nil {
		discard(mem)
		return err
	}
	t := time.Now()
	err = publish(mem, sf)
	stats.Sync += time.Since(t)
	return err
}

// ReadState reads and checks a state file as DecodeState does.
func ReadState(path string) (*State, error) {
	s, _, _, err := readState(path)
	return s, err
}

// readState is ReadState, also returning the format version and file size.
// The file must be a regular file (see openInput), of at most MaxStateSize
// bytes, which is checked before it is read.
func readState(path string) (*State, Version, int64, error) {
	f, fi, err := openInput(path)
	if errors.As(err, new(*FormatError)) {
		return nil, Version{}, 0, err
	} else if err != nil {
		return nil, Version{}, 0, fmt.Errorf("snapshot: opening state file: %w", err)
	}
	defer f.Close()
	if fi.Size() > MaxStateSize {
		return nil, Version{}, fi.Size(), inFile(problem(ErrTooLarge, "%d bytes, the limit is %d", fi.Size(), MaxStateSize), path)
	}
	// Read what the file held when opened (a file that has shrunk since
	// reads as truncated), never more.
	b := make([]byte, fi.Size())
	n, err := io.ReadFull(f, b)
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, Version{}, 0, fmt.Errorf("snapshot: reading state file: %w", err)
	}
	b = b[:n]
	s, v, err := decodeState(b)
	return s, v, int64(len(b)), inFile(err, path)
}

// Load reads and checks a snapshot for a restore on the host want describes:
// its state file completely, and its memory file's footer and binding (not
// its contents: a restore maps them lazily). chain is one full snapshot, or a
// full snapshot followed by diffs, each taken after the one before. Load
// returns the newest state. Then the VMM maps the first memory file with
// MapMemory (or copies it with LoadMemory) and applies each diff's memory
// file in order with LoadMemory.
func Load(want Expect, chain ...Files) (*State, error) {
	states, err := checkChain(chain)
	if err != nil {
		return nil, err
	}
	for i, s := range states {
		if err := want.Check(&s.Header); err != nil {
			return nil, inFile(err, chain[i].State)
		}
	}
	return states[len(states)-1], nil
}

// Check checks a snapshot as Load does, but not against a host: on any host,
// it tells whether the files are sound and belong together.
func Check(chain ...Files) error {
	_, err := checkChain(chain)
	return err
}

func checkChain(chain []Files) ([]*State, error) {
	states, mems, err := openChain(chain)
	closeAll(mems)
	return states, err
}

// Merge folds diffs into base, a full snapshot, and writes the result as a
// full snapshot to out, atomically (see Create). diffs must each apply to the
// snapshot before it. The result keeps the newest diff's ID, so a later diff
// of that one applies to it, and holds the same RAM as a full snapshot taken
// at the newest diff's moment. It never modifies its inputs; out may name
// them, and VMs that map a replaced file keep its old contents.
func Merge(base Files, diffs []Files, out Files) (*State, error) {
	if len(diffs) == 0 {
		return nil, errors.New("snapshot: merge: no diffs to fold in")
	}
	for _, p := range []string{out.Memory, out.State} {
		if err := checkOutput(p); err != nil {
			return nil, err
		}
	}
	states, mems, err := openChain(append([]Files{base}, diffs...))
	defer closeAll(mems)
	if err != nil {
		return nil, err
	}
	for _, m := range mems {
		if err := m.readTable(); err != nil {
			return nil, err
		}
	}
	merged := *states[len(states)-1]
	merged.Header.Type, merged.Header.Parent = Full, ""
	ft := &footer{FileID: NewID(), Snapshot: merged.Header.ID, Type: Full,
		Size: merged.Header.RAMSize, BlockSize: merged.Header.Memory.BlockSize}
	merged.Header.Memory = ft.ref()
	state, err := EncodeState(&merged)
	if err != nil {
		return nil, err
	}
	mem, err := stageMemory(out.Memory, ft, nil, nil, func(w *blockWriter) error { return mergeInto(w, mems) })
	if err != nil {
		return nil, err
	}
	sf, err := stage(out.State, nil, func(f *os.File) error { _, err := f.Write(state); return err })
	if err != nil {
		discard(mem)
		return nil, err
	}
	return &merged, publish(mem, sf)
}

// openChain reads the state files of a chain and opens their memory files,
// checking each binding and link. It returns the states, of which all but
// the newest hold only their headers, and the memory files. On error the
// files it opened are returned too, for the caller to close.
func openChain(chain []Files) ([]*State, []*memFile, error) {
	if len(chain) == 0 {
		return nil, nil, errors.New("snapshot: no snapshot given")
	}
	var states []*State
	var mems []*memFile
	for i, f := range chain {
		s, err := ReadState(f.State)
		if err != nil {
			return nil, mems, err
		}
		m, err := openMemory(f.Memory, false)
		if err != nil {
			return nil, mems, err
		}
		mems = append(mems, m)
		if err := checkBinding(s, m); err != nil {
			return nil, mems, err
		}
		if err := checkLink(states, s); err != nil {
			return nil, mems, inFile(err, chain[i].State)
		}
		if i > 0 {
			// Only the newest state is used whole; the others' headers
			// suffice, so a long chain holds one machine state at a time.
			states[i-1].Machine = Machine{}
		}
		states = append(states, s)
	}
	return states, mems, nil
}

// checkLink returns an ErrParent error unless s can follow prev in a chain.
func checkLink(prev []*State, s *State) error {
	h := &s.Header
	if len(prev) == 0 {
		if h.Type != Full {
			return problem(ErrParent, "a diff of snapshot %s, which it applies to: merge the two into a full snapshot (squibd snapshot merge)", h.Parent)
		}
		return nil
	}
	p := &prev[len(prev)-1].Header
	switch {
	case h.Type != Diff:
		return problem(ErrParent, "a full snapshot cannot follow snapshot %s in a chain", p.ID)
	case h.Parent != p.ID:
		return problem(ErrParent, "diff of snapshot %s, but follows snapshot %s", h.Parent, p.ID)
	case h.Backend != p.Backend || h.RAMBase != p.RAMBase || h.RAMSize != p.RAMSize ||
		h.Memory.BlockSize != p.Memory.BlockSize || h.HostPageSize != p.HostPageSize:
		return problem(ErrParent, "RAM layout, block size, page size or backend differs from snapshot %s", p.ID)
	}
	return nil
}

func closeAll(mems []*memFile) {
	for _, m := range mems {
		m.Close()
	}
}
