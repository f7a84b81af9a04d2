package snapshot

import (
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// On macOS the probe asks mincore(2), through libSystem (purego, as package
// hvf calls the system), about each page. XNU looks the page up along the
// mapping's chain of VM objects and reports it in core (MINCORE_INCORE) or
// compressed or swapped (MINCORE_PAGED_OUT) if any object there holds it,
// and anonymous (MINCORE_ANONYMOUS) if the last object of the chain is
// anonymous memory rather than a file. A page with none of the first two and
// the third is one no object holds, which a read would fill with zeros: in
// guest RAM, a page never touched or discarded. Pages of a file mapping
// (restored RAM) that no object holds are read, for the file backs them.
// The per-page answers need no knowledge of the mapping, so nothing is
// looked up beforehand. (A process that has turned on footprint accounting,
// task_self_region_footprint_set, gets other answers; squib never does.)
//
// This is the only file of the package that uses unsafe: a Go pointer for
// the call, converted in purego.SyscallN's argument list, which keeps it
// alive and in place for the call (//go:uintptrescapes).

const (
	mincoreInCore    = 0x01
	mincorePagedOut  = 0x20
	mincoreAnonymous = 0x80
)

var mincoreFn = sync.OnceValue(func() uintptr {
	lib, err := purego.Dlopen("/usr/lib/libSystem.B.dylib", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return 0
	}
	fn, err := purego.Dlsym(lib, "mincore")
	if err != nil {
		return 0
	}
	return fn
})

type mincoreProbe struct{ fn uintptr }

func newProbe([]byte) pageProbe {
	if fn := mincoreFn(); fn != 0 {
		return mincoreProbe{fn}
	}
	return nil
}

func (p mincoreProbe) mayHold(data []byte) []bool {
	n := (int(addrOf(data)%uintptr(pageSize)) + len(data) + pageSize - 1) / pageSize
	// mincore answers one byte per page of the task's page size, which is
	// os.Getpagesize() (hw.pagesize). The vector has room for 4 KiB pages
	// all the same, so that a mistaken page size cannot make the kernel
	// write past it.
	vec := make([]byte, n*max(1, pageSize/4096))
	r, _, _ := purego.SyscallN(p.fn, uintptr(unsafe.Pointer(unsafe.SliceData(data))), uintptr(len(data)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if int32(r) != 0 {
		return nil
	}
	hold := make([]bool, n)
	for i, v := range vec[:n] {
		hold[i] = v&(mincoreInCore|mincorePagedOut) != 0 || v&mincoreAnonymous == 0
	}
	return hold
}

func (mincoreProbe) Close() error { return nil }
