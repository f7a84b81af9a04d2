package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestVerifyReport(t *testing.T) {
	dir := t.TempDir()
	base, d1, _, _, _, _ := chain(t, dir)
	r, err := Verify(base.State, base.Memory)
	if err != nil {
		t.Fatal(err)
	}
	m := r.Memory
	if r.Format != (Version{1, 1}) || len(r.VCPUs) != 2 || len(r.Devices) != 2 || r.Devices[0].Name != "pl011" ||
		m == nil || m.Type != Full || m.Size != 1<<20 || m.BlockSize != uint32(chainBS) || m.FileBytes <= 1<<20 {
		t.Errorf("report %+v, memory %+v", r, m)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"snapshot " + r.Header.ID + ": Full, format 1.1", fmt.Sprintf("host        arm64, kvm 6.8.0, %d-byte pages", os.Getpagesize()),
		"RAM         1.0 MiB at 0x40000000", "  0   MPIDR 0x80000000  On ", "pl031", "blocks hold data"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"type":"Full"`, `"power":"Off"`, `"backend":"kvm"`, `"format":{"major":1,"minor":1}`} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("JSON report lacks %s: %s", want, js)
		}
	}
	if d, err := Describe(d1.State); err != nil || d.Header.Type != Diff || d.Memory != nil {
		t.Errorf("Describe(diff) = %+v, %v", d, err)
	}
}

// TestVerifyMemory: Verify reads every block, so it finds damage Load does
// not look for.
func TestVerifyMemory(t *testing.T) {
	dir := t.TempDir()
	base, _, _, _, ram, _ := chain(t, dir)
	blocks, _ := nonZero(ram, chainBS)
	data, hole := -1, -1
	for i := range len(ram) / chainBS {
		if blocks.Has(i) && data < 0 {
			data = i
		} else if !blocks.Has(i) && hole < 0 {
			hole = i
		}
	}
	if data < 0 || hole < 0 {
		t.Fatal("the RAM needs data blocks and holes")
	}
	poke := func(off int) {
		f, err := os.OpenFile(base.Memory, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x10
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	poke(hole*chainBS + 100)
	if _, err := Load(kvm, base); err != nil {
		t.Errorf("Load looks at memory contents: %v", err)
	}
	if _, err := Verify(base.State, base.Memory); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "holds data the footer does not list") {
		t.Errorf("Verify with data in a hole = %v; want ErrCorrupt", err)
	}
	poke(hole*chainBS + 100)
	poke(data*chainBS + chainBS - 1)
	if r, err := Verify(base.State, base.Memory); !errors.Is(err, ErrChecksum) || r.Memory == nil {
		t.Errorf("Verify with a flipped data bit = %v; want ErrChecksum and a report", err)
	}
}
