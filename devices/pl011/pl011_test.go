package pl011

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type line struct{ levels []bool }

func (l *line) set(level bool) { l.levels = append(l.levels, level) }
func (l *line) high() bool     { return len(l.levels) > 0 && l.levels[len(l.levels)-1] }

func TestTransmit(t *testing.T) {
	var out bytes.Buffer
	var irq line
	u := New(&out, irq.set)
	for _, c := range []byte("hi\n") {
		if u.Read(regFR, 4)&frTXFE == 0 {
			t.Fatal("transmit FIFO not reported empty")
		}
		u.Write(regDR, 4, uint64(c))
	}
	u.Close()
	if out.String() != "hi\n" {
		t.Fatalf("output %q", out.String())
	}
}

func TestPrimeCellID(t *testing.T) {
	u := New(&bytes.Buffer{}, func(bool) {})
	want := []uint64{0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1}
	for i, w := range want {
		if got := u.Read(regID+uint64(4*i), 4); got != w {
			t.Errorf("ID register %#x = %#x, want %#x", regID+4*i, got, w)
		}
	}
}

func TestReceiveAndInterrupts(t *testing.T) {
	var irq line
	u := New(&bytes.Buffer{}, irq.set)
	if u.Read(regFR, 4)&frRXFE == 0 {
		t.Fatal("empty receive FIFO not flagged")
	}
	u.Write(regIMSC, 4, intRX|intRT)
	if irq.high() {
		t.Fatal("interrupt raised with no input")
	}
	u.Input([]byte("ab"))
	if !irq.high() || u.Read(regMIS, 4) != intRX|intRT {
		t.Fatalf("input did not raise RX: line %v MIS %#x", irq.levels, u.Read(regMIS, 4))
	}
	if c := u.Read(regDR, 4); c != 'a' {
		t.Fatalf("read %q", c)
	}
	if !irq.high() {
		t.Fatal("line dropped while input remains")
	}
	if c := u.Read(regDR, 4); c != 'b' {
		t.Fatalf("read %q", c)
	}
	if irq.high() || u.Read(regFR, 4)&frRXFE == 0 {
		t.Fatal("line or FR wrong after draining input")
	}
}

func TestTransmitInterrupt(t *testing.T) {
	var irq line
	u := New(&bytes.Buffer{}, irq.set)
	u.Write(regIMSC, 4, intTX)
	if !irq.high() {
		t.Fatal("TX interrupt not raised when unmasked with an empty FIFO")
	}
	u.Write(regICR, 4, intTX)
	if irq.high() {
		t.Fatal("TX interrupt stayed after ICR")
	}
	u.Write(regDR, 4, 'x')
	if !irq.high() {
		t.Fatal("TX interrupt not raised again after a write")
	}
	u.Write(regIMSC, 4, 0)
	if irq.high() {
		t.Fatal("masking did not lower the line")
	}
}

func TestInputBlocksWhenFullAndLosesNothing(t *testing.T) {
	u := New(&bytes.Buffer{}, func(bool) {})
	in := strings.Repeat("0123456789", fifoMax/5) // twice the FIFO
	done := make(chan error, 1)
	go func() { done <- u.Feed(strings.NewReader(in)) }()
	select {
	case <-done:
		t.Fatal("Feed returned although the FIFO was full")
	case <-time.After(50 * time.Millisecond):
	}
	var got []byte
	for len(got) < len(in) {
		if u.Read(regFR, 4)&frRXFE != 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		got = append(got, byte(u.Read(regDR, 4)))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got) != in {
		t.Fatal("received bytes differ from the input")
	}
}

func TestSaveRestore(t *testing.T) {
	var irq line
	u := New(&bytes.Buffer{}, irq.set)
	u.Write(regIBRD, 4, 13)
	u.Write(regLCRH, 4, 0x70)
	u.Write(regIMSC, 4, intRX)
	u.Input([]byte("xy"))
	s := u.Save()

	var irq2 line
	v := New(&bytes.Buffer{}, irq2.set)
	v.Restore(s)
	if !irq2.high() {
		t.Fatal("restored UART with pending input did not raise its line")
	}
	if v.Read(regIBRD, 4) != 13 || v.Read(regLCRH, 4) != 0x70 || v.Read(regIMSC, 4) != intRX {
		t.Fatal("registers not restored")
	}
	if c := v.Read(regDR, 4); c != 'x' {
		t.Fatalf("first restored input byte %q", c)
	}
	if c := v.Read(regDR, 4); c != 'y' || irq2.high() {
		t.Fatalf("second byte %q, line %v", c, irq2.levels)
	}
	// The saved state is a copy: the original keeps its input.
	if c := u.Read(regDR, 4); c != 'x' {
		t.Fatalf("original lost its input: %q", c)
	}
}
