package pl031

import (
	"testing"
	"time"
)

func TestClockFollowsHostAndLoad(t *testing.T) {
	host := time.Unix(1_700_000_000, 0)
	r := New(func() time.Time { return host })
	if got := r.Read(regDR, 4); got != 1_700_000_000 {
		t.Fatalf("DR = %d, want the host time", got)
	}
	r.Write(regLR, 4, 1000)
	if got := r.Read(regDR, 4); got != 1000 {
		t.Fatalf("DR after load = %d", got)
	}
	host = host.Add(5 * time.Second)
	if got := r.Read(regDR, 4); got != 1005 {
		t.Fatalf("DR 5 s later = %d", got)
	}
	if r.Read(regLR, 4) != 1000 || r.Read(regCR, 4) != 1 {
		t.Fatal("LR or CR wrong")
	}
}

func TestPrimeCellID(t *testing.T) {
	r := New(nil)
	want := []uint64{0x31, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1}
	for i, w := range want {
		if got := r.Read(regID+uint64(4*i), 4); got != w {
			t.Errorf("ID %d = %#x, want %#x", i, got, w)
		}
	}
}

func TestSaveRestore(t *testing.T) {
	host := time.Unix(1_700_000_000, 0)
	now := func() time.Time { return host }
	r := New(now)
	r.Write(regLR, 4, 1000)
	r.Write(regMR, 4, 77)
	s := r.Save()
	host = host.Add(time.Hour) // the snapshot sat on disk for an hour
	q := New(now)
	q.Restore(s)
	if got := q.Read(regDR, 4); got != 1000+3600 {
		t.Fatalf("restored clock reads %d, want it to have followed the host (4600)", got)
	}
	if q.Read(regMR, 4) != 77 || q.Read(regLR, 4) != 1000 {
		t.Fatal("MR/LR not restored")
	}
}
