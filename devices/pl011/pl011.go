// Package pl011 emulates the Arm PrimeCell PL011 UART (DDI 0183) as far as
// Linux's amba-pl011 driver uses it: transmit to a writer through a bounded
// host-side buffer (see tx.go), a receive FIFO fed from the host, and the
// interrupt status and mask registers. There is no baud-rate timing: to the
// guest, transmission completes at once and the transmit FIFO is always empty.
package pl011

import (
	"io"
	"sync"
	"time"
)

// Size is the length of the register window.
const Size = 0x1000

// Register offsets (DDI 0183, table 3-1).
const (
	regDR    = 0x000
	regRSR   = 0x004
	regFR    = 0x018
	regIBRD  = 0x024
	regFBRD  = 0x028
	regLCRH  = 0x02c
	regCR    = 0x030
	regIFLS  = 0x034
	regIMSC  = 0x038
	regRIS   = 0x03c
	regMIS   = 0x040
	regICR   = 0x044
	regDMACR = 0x048
	regID    = 0xfe0 // PeriphID0..3, PCellID0..3 at 0xfe0..0xffc
)

// Flag register bits.
const (
	frRXFE = 1 << 4
	frTXFE = 1 << 7
)

// Interrupt bits (RIS, MIS, IMSC, ICR).
const (
	intRX = 1 << 4
	intTX = 1 << 5
	intRT = 1 << 6
)

// fifoMax bounds buffered input; Input blocks while the FIFO is this full.
const fifoMax = 4096

var ids = [8]byte{0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1}

// UART is one PL011. It is safe for concurrent use: vCPU threads access the
// registers while a host goroutine feeds input.
type UART struct {
	tx  *txq
	irq func(level bool)

	mu    sync.Mutex
	space *sync.Cond // signalled when the receive FIFO drains
	rx    []byte
	level bool

	ibrd, fbrd, lcrh, cr, ifls, imsc, dmacr uint32
	txIntCleared                            bool
}

// New returns a UART that writes transmitted bytes to out, from a goroutine
// of its own, and drives its interrupt line through irq. Close it when the
// machine ends, to write out the last bytes and stop that goroutine.
func New(out io.Writer, irq func(level bool)) *UART {
	return newUART(out, irq, txIdle, txMaxDelay)
}

func newUART(out io.Writer, irq func(level bool), idle, maxDelay time.Duration) *UART {
	if out == nil {
		out = io.Discard
	}
	u := &UART{tx: newTxq(out, idle, maxDelay), irq: irq, cr: 0x300, ifls: 0x12}
	u.space = sync.NewCond(&u.mu)
	return u
}

// Flush returns once every byte the guest has transmitted so far has been
// written to the console (or refused by it).
func (u *UART) Flush() { u.tx.flush() }

// Close writes out every byte the guest has transmitted and stops the
// UART's writer goroutine; bytes transmitted later are written at once.
// It may be called more than once.
func (u *UART) Close() { u.tx.close() }

// ris is the raw interrupt status: receive and receive-timeout while input
// waits, transmit whenever the (instant) transmit FIFO is below its trigger
// level, unless the guest cleared it and has not written since.
func (u *UART) ris() uint32 {
	var r uint32
	if len(u.rx) > 0 {
		r |= intRX | intRT
	}
	if !u.txIntCleared {
		r |= intTX
	}
	return r
}

// update recomputes the interrupt line; called with mu held.
func (u *UART) update() {
	level := u.ris()&u.imsc != 0
	if level != u.level {
		u.level = level
		u.irq(level)
	}
}

// Read returns the value of the register at off.
func (u *UART) Read(off uint64, size int) uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case off == regDR:
		if len(u.rx) == 0 {
			return 0
		}
		c := u.rx[0]
		u.rx = u.rx[1:]
		u.space.Signal()
		u.update()
		return uint64(c)
	case off == regFR:
		fr := uint32(frTXFE)
		if len(u.rx) == 0 {
			fr |= frRXFE
		}
		return uint64(fr)
	case off == regIBRD:
		return uint64(u.ibrd)
	case off == regFBRD:
		return uint64(u.fbrd)
	case off == regLCRH:
		return uint64(u.lcrh)
	case off == regCR:
		return uint64(u.cr)
	case off == regIFLS:
		return uint64(u.ifls)
	case off == regIMSC:
		return uint64(u.imsc)
	case off == regRIS:
		return uint64(u.ris())
	case off == regMIS:
		return uint64(u.ris() & u.imsc)
	case off == regDMACR:
		return uint64(u.dmacr)
	case off >= regID && off < Size && off%4 == 0:
		return uint64(ids[(off-regID)/4])
	}
	return 0 // RSR and reserved registers read as zero
}

// Write stores v into the register at off.
func (u *UART) Write(off uint64, size int, v uint64) {
	if off == regDR {
		// Outside mu: put may wait for room, and must not hold up input
		// or the other registers meanwhile.
		u.tx.put(byte(v))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	w := uint32(v)
	switch off {
	case regDR:
		u.txIntCleared = false
	case regIBRD:
		u.ibrd = w & 0xffff
	case regFBRD:
		u.fbrd = w & 0x3f
	case regLCRH:
		u.lcrh = w & 0xff
	case regCR:
		u.cr = w & 0xff87
	case regIFLS:
		u.ifls = w & 0x3f
	case regIMSC:
		u.imsc = w & 0x7ff
	case regICR:
		if w&intTX != 0 {
			u.txIntCleared = true
		}
		// RX and RT are level conditions: they stay while input waits.
	case regDMACR:
		u.dmacr = w & 0x7
	}
	u.update()
}

// Input queues bytes for the guest to receive. It blocks while the receive
// buffer is full, so no input is lost.
func (u *UART) Input(b []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for len(b) > 0 {
		for len(u.rx) >= fifoMax {
			u.space.Wait()
		}
		n := min(len(b), fifoMax-len(u.rx))
		u.rx = append(u.rx, b[:n]...)
		b = b[n:]
		u.update()
	}
}

// Feed copies r into the UART's input until r ends or fails.
func (u *UART) Feed(r io.Reader) error {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		u.Input(buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// State is the UART's saved state.
type State struct {
	IBRD, FBRD, LCRH, CR, IFLS, IMSC, DMACR uint32 `cbor:",omitempty"`
	TXIntCleared                            bool   `cbor:",omitempty"`
	RX                                      []byte `cbor:",omitempty"` // input the guest has not read yet
}

// Save returns the UART's state. The state has no transmit bytes, so Save
// first writes out those still buffered.
func (u *UART) Save() State {
	u.Flush()
	u.mu.Lock()
	defer u.mu.Unlock()
	return State{u.ibrd, u.fbrd, u.lcrh, u.cr, u.ifls, u.imsc, u.dmacr, u.txIntCleared, append([]byte(nil), u.rx...)}
}

// Restore sets the UART's state and drives its interrupt line to match.
func (u *UART) Restore(s State) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ibrd, u.fbrd, u.lcrh, u.cr, u.ifls, u.imsc, u.dmacr = s.IBRD, s.FBRD, s.LCRH, s.CR, s.IFLS, s.IMSC, s.DMACR
	u.txIntCleared = s.TXIntCleared
	u.rx = append(u.rx[:0], s.RX...)
	u.level = u.ris()&u.imsc != 0
	u.irq(u.level)
}
