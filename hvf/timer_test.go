package hvf

import (
	"math"
	"testing"
	"time"
)

// Apple silicon's mach_timebase_info: a 24 MHz counter, 125/3 ns per tick.
var appleTB = timebase{numer: 125, denom: 3}

func TestTimebaseDuration(t *testing.T) {
	for _, c := range []struct {
		tb    timebase
		ticks uint64
		want  time.Duration
	}{
		{appleTB, 24_000_000, time.Second},
		{appleTB, 24, time.Microsecond},
		{appleTB, 1, 41},
		{timebase{1, 1}, 5, 5},
		{appleTB, math.MaxUint64, math.MaxInt64},
		{timebase{1, 1}, math.MaxUint64, math.MaxInt64},
		{timebase{1, 0}, 1, math.MaxInt64},
	} {
		if got := c.tb.duration(c.ticks); got != c.want {
			t.Errorf("%+v.duration(%d) = %v, want %v", c.tb, c.ticks, got, c.want)
		}
	}
}

// The guest counter continues across a snapshot: saved at one host time,
// restored at a later one (or after a host reboot, at an earlier one).
func TestCounterContinuity(t *testing.T) {
	for _, c := range []struct{ offset, saveAt, restoreAt uint64 }{
		{1000, 5000, 9000},
		{1000, 5000, 100}, // the host rebooted: mach_absolute_time restarted
		{0, 1 << 63, 1<<64 - 1},
	} {
		saved := guestCounter(c.saveAt, c.offset)
		off := offsetFor(c.restoreAt, saved)
		if got := guestCounter(c.restoreAt, off); got != saved {
			t.Errorf("%+v: counter %d after restore, want %d", c, got, saved)
		}
		if got := guestCounter(c.restoreAt+24, off); got != saved+24 {
			t.Errorf("%+v: counter does not run on after restore", c)
		}
	}
	if guestCounter(12345, 12345) != 0 {
		t.Error("the counter of a VM whose offset is its start time does not start at 0")
	}
}

func TestVTimerAsserted(t *testing.T) {
	for ctl := range uint64(8) {
		want := ctl == cntvCtlEnable|cntvCtlIStatus
		if got := vtimerAsserted(ctl | 0xf0); got != want {
			t.Errorf("CNTV_CTL %#x: asserted %v, want %v", ctl, got, want)
		}
	}
}

func TestWFISleep(t *testing.T) {
	const now = 1_000_000
	for _, c := range []struct {
		name      string
		ctl, cval uint64
		want      time.Duration
	}{
		{"timer off", 0, now + 24, wfiMaxSleep},
		{"timer masked", cntvCtlEnable | cntvCtlIMask, now + 24, wfiMaxSleep},
		{"due in 1us", cntvCtlEnable, now + 24, time.Microsecond},
		{"due in 1ms", cntvCtlEnable, now + 24_000, time.Millisecond},
		{"due in 1s: capped", cntvCtlEnable, now + 24_000_000, wfiMaxSleep},
		{"due now", cntvCtlEnable, now, 0},
		{"overdue", cntvCtlEnable | cntvCtlIStatus, now - 1, 0},
	} {
		if got := wfiSleep(c.ctl, c.cval, now, appleTB); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
