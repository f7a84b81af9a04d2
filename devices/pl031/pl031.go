// Package pl031 emulates the Arm PrimeCell PL031 real-time clock (DDI 0224):
// a seconds counter that follows the host's wall clock from the value the
// guest last loaded. The match (alarm) interrupt is not generated; the guest
// reads the time and sets it, which is what Linux's rtc-pl031 needs at boot.
package pl031

import (
	"sync"
	"time"
)

// Size is the length of the register window.
const Size = 0x1000

// Register offsets (DDI 0224, table 3-1).
const (
	regDR   = 0x000 // data: current time in seconds
	regMR   = 0x004 // match
	regLR   = 0x008 // load
	regCR   = 0x00c // control (bit 0: start)
	regIMSC = 0x010
	regRIS  = 0x014
	regMIS  = 0x018
	regICR  = 0x01c
	regID   = 0xfe0
)

var ids = [8]byte{0x31, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1}

// RTC is one PL031. It is safe for concurrent use.
type RTC struct {
	now func() time.Time

	mu     sync.Mutex
	offset int64 // guest seconds minus host seconds
	mr, lr uint32
	imsc   uint32
}

// New returns an RTC that reads the host clock through now (time.Now if nil).
func New(now func() time.Time) *RTC {
	if now == nil {
		now = time.Now
	}
	return &RTC{now: now}
}

func (r *RTC) seconds() uint32 { return uint32(r.now().Unix() + r.offset) }

// Read returns the value of the register at off.
func (r *RTC) Read(off uint64, size int) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case off == regDR:
		return uint64(r.seconds())
	case off == regMR:
		return uint64(r.mr)
	case off == regLR:
		return uint64(r.lr)
	case off == regCR:
		return 1 // always started
	case off == regIMSC:
		return uint64(r.imsc)
	case off >= regID && off < Size && off%4 == 0:
		return uint64(ids[(off-regID)/4])
	}
	return 0 // RIS/MIS: no alarm is ever raised
}

// Write stores v into the register at off.
func (r *RTC) Write(off uint64, size int, v uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch off {
	case regMR:
		r.mr = uint32(v)
	case regLR:
		r.lr = uint32(v)
		r.offset = int64(uint32(v)) - r.now().Unix()
	case regIMSC:
		r.imsc = uint32(v) & 1
	}
}

// State is the RTC's saved state. The clock keeps following the host's
// wall clock across a restore: Offset is kept, not the seconds value.
type State struct {
	Offset int64  `cbor:",omitempty"`
	MR, LR uint32 `cbor:",omitempty"`
	IMSC   uint32 `cbor:",omitempty"`
}

// Save returns the RTC's state.
func (r *RTC) Save() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return State{r.offset, r.mr, r.lr, r.imsc}
}

// Restore sets the RTC's state.
func (r *RTC) Restore(s State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.offset, r.mr, r.lr, r.imsc = s.Offset, s.MR, s.LR, s.IMSC
}
