package hvf

import (
	"math"
	"math/bits"
	"time"
)

// The guest's virtual counter is the host's mach_absolute_time() minus the
// vCPU's vtimer offset (hv_vcpu_set_vtimer_offset, hv_vcpu.h), so it ticks at
// the host counter's rate. squib keeps one offset for all vCPUs of a VM.

// guestCounter is the guest's CNTVCT_EL0 at host time now.
func guestCounter(now, offset uint64) uint64 { return now - offset }

// offsetFor is the vtimer offset that makes the guest's counter read counter
// at host time now: how a restored VM continues where its snapshot stopped.
func offsetFor(now, counter uint64) uint64 { return now - counter }

// timebase is struct mach_timebase_info: nanoseconds = ticks * numer / denom.
type timebase struct {
	numer, denom uint32
}

// duration converts mach_absolute_time ticks to a duration, saturating.
func (tb timebase) duration(ticks uint64) time.Duration {
	hi, lo := bits.Mul64(ticks, uint64(tb.numer))
	if tb.denom == 0 || hi >= uint64(tb.denom) {
		return math.MaxInt64
	}
	ns, _ := bits.Div64(hi, lo, uint64(tb.denom))
	if ns > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(ns)
}

// CNTV_CTL_EL0 bits (Arm ARM D19.11).
const (
	cntvCtlEnable  = 1 << 0
	cntvCtlIMask   = 1 << 1
	cntvCtlIStatus = 1 << 2
)

// vtimerAsserted reports whether a CNTV_CTL_EL0 value drives the timer's
// interrupt: enabled, condition met, not masked.
func vtimerAsserted(ctl uint64) bool {
	return ctl&(cntvCtlEnable|cntvCtlIMask|cntvCtlIStatus) == cntvCtlEnable|cntvCtlIStatus
}

// wfiMaxSleep bounds a WFI sleep in the VMM. squib's interrupts live in the
// framework's GIC, and an SGI from another vCPU or a PPI never reaches the
// VMM, so nothing would end an open-ended sleep for one. 10 ms is a Linux
// tick at HZ=100. With the GIC the framework is expected to park WFI itself
// and never report it (hvf.md §4.4); this bound only keeps a WFI exit, should
// one come, from turning into a hang.
const wfiMaxSleep = 10 * time.Millisecond

// wfiSleep returns how long a vCPU that executed WFI may sleep, given its
// CNTV_CTL_EL0 and CNTV_CVAL_EL0 and its virtual counter now: until its
// virtual timer is due, at most wfiMaxSleep. Zero means the timer condition
// already holds: run the guest again at once.
func wfiSleep(ctl, cval, counter uint64, tb timebase) time.Duration {
	if ctl&cntvCtlEnable == 0 || ctl&cntvCtlIMask != 0 {
		return wfiMaxSleep
	}
	if cval <= counter {
		return 0
	}
	return min(tb.duration(cval-counter), wfiMaxSleep)
}
