package snapshot

import (
	"os"
	"path/filepath"
	"testing"
)

// TestExtents: extents finds the runs of data and holes of a file, and a
// file system that cannot tell makes everything data.
func TestExtents(t *testing.T) {
	dir := t.TempDir()
	if !holesFound(t, dir) {
		t.Skip(dir, " cannot tell where holes are")
	}
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 4 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = 1
	}
	for _, off := range []int64{0, 1 << 20} { // data: [0, 64K), [1M, 1M+64K)
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	e := &extents{f: f, size: size}
	for _, c := range []struct {
		off, end int64
		data     bool
	}{
		{0, 64 << 10, true}, {4096, 64 << 10, true}, {64 << 10, 1 << 20, false}, {512 << 10, 1 << 20, false},
		{1 << 20, 1<<20 + 64<<10, true}, {1<<20 + 64<<10, size, false}, {size - 1, size, false}, {0, 64 << 10, true},
	} {
		// File systems may report data in larger units than written.
		if data, end := e.at(c.off); data != c.data || c.data && end < c.end || !c.data && end > c.end {
			t.Errorf("at(%#x) = %v, %#x; want %v, %#x", c.off, data, end, c.data, c.end)
		}
	}
	unknown := &extents{f: f, size: size, unknown: true}
	if data, end := unknown.at(512 << 10); !data || end != size {
		t.Errorf("with holes unknown, at() = %v, %#x; want data to the end", data, end)
	}
}
