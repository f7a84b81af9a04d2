package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBlockSize is the block size used when none is given: 16 KiB, or the
// host page size if that is larger. A VMM whose guest uses larger pages
// passes the guest page size instead.
func DefaultBlockSize() int { return max(16<<10, os.Getpagesize()) }

// MemoryOptions says what WriteMemory writes.
type MemoryOptions struct {
	Snapshot  string // ID of the snapshot the memory belongs to (Header.ID)
	BlockSize int    // 0 means DefaultBlockSize
	// Dirty, when not nil, makes a diff memory file that holds only the
	// blocks Dirty marks; Parent then names the snapshot the diff applies to.
	Dirty  Bitmap
	Parent string
}

// footer returns the footer of a memory file written with o for size bytes
// of RAM, before its blocks are known.
func (o *MemoryOptions) footer(size uint64) (*footer, error) {
	bs := o.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize()
	}
	if err := checkBlockSize(uint64(bs), size); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	ft := &footer{FileID: NewID(), Snapshot: o.Snapshot, Type: Full, Size: size, BlockSize: uint32(bs)}
	if o.Dirty != nil {
		ft.Type, ft.Parent = Diff, o.Parent
		if len(o.Dirty) != len(NewBitmap(ft.blocks())) {
			return nil, fmt.Errorf("snapshot: dirty bitmap of %d bytes for %d blocks", len(o.Dirty), ft.blocks())
		}
	}
	if !validID(ft.Snapshot) || ft.Type == Diff && (!validID(ft.Parent) || ft.Parent == ft.Snapshot) || ft.Type == Full && o.Parent != "" {
		return nil, fmt.Errorf("snapshot: memory of %v snapshot %q with parent %q", ft.Type, ft.Snapshot, o.Parent)
	}
	return ft, nil
}

// WriteMemory writes ram, the guest RAM of snapshot o.Snapshot, as a memory
// file at path, atomically (see Create), and returns the reference the
// snapshot's state file records. Blocks that are all zero become holes.
func WriteMemory(path string, ram []byte, o MemoryOptions) (MemoryRef, error) {
	ft, err := o.footer(uint64(len(ram)))
	if err != nil {
		return MemoryRef{}, err
	}
	s, err := stageMemory(path, ft, o.Dirty, nil, func(w *blockWriter) error { return w.writeRAM(ram) })
	if err != nil {
		return MemoryRef{}, err
	}
	return ft.ref(), publish(s)
}

func (f *footer) ref() MemoryRef {
	return MemoryRef{FileID: f.FileID, Size: f.Size, BlockSize: f.BlockSize}
}

// stageMemory writes a memory file described by ft under a temporary name:
// fill hands it the contents through a blockWriter, then the footer is
// completed and appended. The file is sized first, so skipped blocks are
// holes. stats, when not nil, receives the time spent.
func stageMemory(path string, ft *footer, dirty Bitmap, stats *CreateStats, fill func(*blockWriter) error) (*staged, error) {
	if stats == nil {
		stats = new(CreateStats)
	}
	return stage(path, &stats.Sync, func(f *os.File) error {
		if err := f.Truncate(int64(ft.Size)); err != nil {
			return err
		}
		w := &blockWriter{f: f, bs: int(ft.BlockSize), dirty: dirty, stats: stats,
			zero: make([]byte, ft.BlockSize), blocks: NewBitmap(ft.blocks())}
		if err := fill(w); err != nil {
			return err
		}
		ft.Blocks, ft.Sums = w.blocks, w.sums
		tail, err := appendTail(nil, ft)
		if err != nil {
			return err
		}
		t := time.Now()
		_, err = f.WriteAt(tail, int64(ft.Size))
		stats.Write += time.Since(t)
		return err
	})
}

// segSize is the unit of work of one goroutine, and the largest single write.
const segSize = 4 << 20

// blockWriter writes the RAM image of a memory file, leaving holes, and
// records the carried blocks and their checksums for the footer.
type blockWriter struct {
	f      *os.File
	bs     int
	dirty  Bitmap // nil for a full file
	zero   []byte // one block of zeros
	blocks Bitmap
	sums   []byte
	probe  pageProbe // nil: read every block
	stats  *CreateStats
	mu     sync.Mutex // guards stats while segments are written
}

// segment is a stretch of blocks, scanned and written by one goroutine.
type segment struct {
	first int    // block number of data[0]
	data  []byte // at most segSize bytes
	carry Bitmap // block first+j is carried
	zero  Bitmap // block first+j is carried and all zero
	sums  []uint32
}

// writeRAM writes ram, the whole of guest RAM, skipping the pages the host
// says were never touched (see pages.go).
func (w *blockWriter) writeRAM(ram []byte) error {
	if w.probe = openProbe(ram); w.probe != nil {
		defer w.probe.Close()
	}
	return w.write(0, ram)
}

// write adds data, the contents of the consecutive blocks from block first
// on, to the file. A full file carries every block that is not all zero; a
// diff carries the dirty blocks, whatever they hold. Carried blocks are
// written unless all zero, which the hole already reads as.
//
// Up to one goroutine per CPU takes segments in turn and scans each (reads
// every byte of it but the pages w.probe says were never touched, and
// checksums the carried blocks) then writes its data at its offset, so no
// goroutine waits for another; the carried blocks and checksums are
// recorded in block order once all are done.
func (w *blockWriter) write(first int, data []byte) error {
	if len(data)%w.bs != 0 {
		return errors.New("snapshot: data is not a whole number of blocks")
	}
	segs := make([]*segment, (len(data)+segSize-1)/segSize)
	var next atomic.Int64
	var failed atomic.Bool
	errs := make([]error, len(segs))
	var wg sync.WaitGroup
	for range max(1, min(runtime.GOMAXPROCS(0), 4, len(segs))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := int(next.Add(1) - 1); k < len(segs) && !failed.Load(); k = int(next.Add(1) - 1) {
				off := k * segSize
				n := min(segSize, len(data)-off) / w.bs
				s := &segment{first: first + off/w.bs, data: data[off : off+n*w.bs], carry: NewBitmap(n), zero: NewBitmap(n)}
				w.scan(s)
				if errs[k] = w.writeSegment(s); errs[k] != nil {
					failed.Store(true)
				}
				segs[k] = s
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, s := range segs {
		for j := range len(s.data) / w.bs {
			if s.carry.Has(j) {
				w.blocks.Set(s.first + j)
			}
		}
		for _, sum := range s.sums {
			w.sums = binary.LittleEndian.AppendUint32(w.sums, sum)
		}
	}
	return nil
}

// scan finds the carried blocks of s and their checksums.
func (w *blockWriter) scan(s *segment) {
	t := time.Now()
	defer w.count(&w.stats.Scan, t, 0)
	untouched := zeroBlocks(w.probe, s.data, w.bs)
	for j := range len(s.data) / w.bs {
		if w.dirty != nil && !w.dirty.Has(s.first+j) {
			continue
		}
		b := s.data[j*w.bs : (j+1)*w.bs]
		if untouched != nil && untouched.Has(j) {
			b = w.zero // what it reads as, without faulting it in
		}
		zero := bytes.Equal(b, w.zero)
		if zero && w.dirty == nil {
			continue
		}
		s.carry.Set(j)
		if zero {
			s.zero.Set(j)
		}
		s.sums = append(s.sums, crc32.Checksum(b, castagnoli))
	}
}

// writeSegment writes the data blocks of a scanned segment, each run of
// adjacent ones in one write.
func (w *blockWriter) writeSegment(s *segment) error {
	run := -1 // first block of the pending run
	flush := func(end int) error {
		if run < 0 {
			return nil
		}
		t := time.Now()
		n, err := w.f.WriteAt(s.data[run*w.bs:end*w.bs], int64(s.first+run)*int64(w.bs))
		w.count(&w.stats.Write, t, n)
		run = -1
		return err
	}
	for j := range len(s.data) / w.bs {
		if !s.carry.Has(j) || s.zero.Has(j) {
			if err := flush(j); err != nil {
				return err
			}
		} else if run < 0 {
			run = j
		}
	}
	return flush(len(s.data) / w.bs)
}

// count adds the time since t to d, and written bytes to the stats.
func (w *blockWriter) count(d *time.Duration, t time.Time, written int) {
	w.mu.Lock()
	*d += time.Since(t)
	w.stats.Written += int64(written)
	w.mu.Unlock()
}
