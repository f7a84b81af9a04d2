package snapshot

import (
	"os"
	"reflect"
)

// Writing a full memory file means finding the all-zero blocks of guest RAM,
// and most of a guest's RAM is usually memory it never touched. Reading such
// a page to find it zero makes the host allocate it (a page fault per page:
// cheap natively, very costly under emulation), so the writer first asks the
// host which pages it never backed, through a pageProbe, and does not read
// blocks made only of those.
//
// A page is skipped only when the host says it reads as zero: the process
// has no copy of its own (it never wrote it, or it was discarded) and no
// file backs it with data. Everything else is read, and so is
// everything when the probe cannot tell (no probe for this host, or a query
// that fails), so a page the guest wrote is never skipped. See pages_linux.go
// and pages_darwin.go.

// A pageProbe tells which host pages of a stretch of guest RAM may hold
// data. The scanning goroutines call mayHold concurrently.
type pageProbe interface {
	// mayHold reports, for each host page overlapping data from the one
	// holding data[0] on, whether it may hold data: false only for a page
	// that surely reads as zero. It returns nil when it cannot tell.
	mayHold(data []byte) []bool
	Close() error
}

// openProbe returns a probe for ram (RAM as a whole, so it may look up its
// mappings once), or nil when this host cannot tell. Benchmarks replace it.
var openProbe = newProbe

var pageSize = os.Getpagesize()

// addrOf returns the address of b[0].
func addrOf(b []byte) uintptr { return reflect.ValueOf(b).Pointer() }

// zeroBlocks returns the blocks of data (bs bytes each) that p says read as
// zero, or nil when p is nil or cannot tell.
func zeroBlocks(p pageProbe, data []byte, bs int) Bitmap {
	if p == nil || len(data) == 0 {
		return nil
	}
	off := int(addrOf(data) % uintptr(pageSize))
	hold := p.mayHold(data)
	if len(hold) != (off+len(data)+pageSize-1)/pageSize {
		return nil
	}
	skip := NewBitmap(len(data) / bs)
	for j := range len(data) / bs {
		first, last := (off+j*bs)/pageSize, (off+(j+1)*bs-1)/pageSize
		zero := true
		for pg := first; pg <= last && zero; pg++ {
			zero = !hold[pg]
		}
		if zero {
			skip.Set(j)
		}
	}
	return skip
}
