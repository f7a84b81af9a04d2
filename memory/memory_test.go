package memory

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRAMBounds(t *testing.T) {
	page := uint64(unix.Getpagesize())
	r, err := New(0x4000_0000, 4*page)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	end := r.Base() + r.Size()
	cases := []struct {
		gpa, n uint64
		ok     bool
	}{
		{r.Base(), 1, true},
		{r.Base(), r.Size(), true},
		{end - 8, 8, true},
		{end, 0, true},
		{end - 8, 9, false},
		{end, 1, false},
		{r.Base() - 1, 1, false},
		{0, 1, false},
		{r.Base(), r.Size() + 1, false},
		{^uint64(0) - 2, 8, false},
		{r.Base() + 8, ^uint64(0), false},
	}
	for _, c := range cases {
		if got := r.Contains(c.gpa, c.n); got != c.ok {
			t.Errorf("Contains(%#x, %#x) = %v, want %v", c.gpa, c.n, got, c.ok)
		}
		if _, err := r.Slice(c.gpa, c.n); (err == nil) != c.ok {
			t.Errorf("Slice(%#x, %#x) error = %v, want ok=%v", c.gpa, c.n, err, c.ok)
		}
	}
}

func TestRAMWriteIsVisibleAndZeroed(t *testing.T) {
	page := uint64(unix.Getpagesize())
	r, err := New(0x8000_0000, 2*page)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !bytes.Equal(r.Bytes(), make([]byte, 2*page)) {
		t.Fatal("new RAM is not zeroed")
	}
	if err := r.Write(r.Base()+page-2, []byte{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	got, _ := r.Slice(r.Base()+page-2, 4)
	if !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Fatalf("read back %v", got)
	}
	if err := r.Write(r.Base()+2*page-1, []byte{1, 2}); err == nil {
		t.Fatal("write across the end of RAM succeeded")
	}
}

func TestNewRejectsBadSizes(t *testing.T) {
	for _, size := range []uint64{0, 100} {
		if r, err := New(0, size); err == nil {
			r.Close()
			t.Errorf("New(0, %d) succeeded", size)
		}
	}
}
