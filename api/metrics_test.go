package api

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/squibvm/squib/vmm"
)

// TestMetricsPeriodic runs the loop that writes a running microVM's
// metrics with a short period: a line at once and then one per period, each
// with the vCPU exits since the line before, until the microVM ends.
func TestMetricsPeriodic(t *testing.T) {
	ctl := NewController(Options{Log: io.Discard})
	defer ctl.Close()
	path := filepath.Join(t.TempDir(), "metrics")
	if err := ctl.setMetrics(Metrics{MetricsPath: &path}); err != nil {
		t.Fatal(err)
	}
	var n uint64
	exits := func() vmm.ExitCounts { // 5 more MMIO reads at each line
		n++
		return vmm.ExitCounts{MMIORead: 5 * n}
	}
	ended, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		ctl.writeMetricsUntil(ended, 10*time.Millisecond, exits)
		close(stopped)
	}()
	read := func() []string {
		b, _ := os.ReadFile(path)
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	for deadline := time.Now().Add(10 * time.Second); len(read()) < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d metrics lines after 10 s with a 10 ms period", len(read()))
		}
	}
	close(ended)
	<-stopped
	lines := read()
	var prev int64
	for i, l := range lines {
		var line struct {
			Time int64             `json:"utc_timestamp_ms"`
			VCPU map[string]uint64 `json:"vcpu"`
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil || line.Time < prev || line.VCPU["exit_mmio_read"] != 5 {
			t.Errorf("line %d: %s (%v); want 5 MMIO reads, a time not before %d", i, l, err, prev)
		}
		prev = line.Time
	}
	time.Sleep(30 * time.Millisecond)
	if after := read(); len(after) != len(lines) {
		t.Errorf("%d lines written after the microVM ended", len(after)-len(lines))
	}
}

// TestLoggerLevelAttr: an attribute a caller names "level" (the
// user-mode network's library did) is logged as it is, with or without
// the record's level shown, and TRACE still spells the Trace level.
func TestLoggerLevelAttr(t *testing.T) {
	for _, show := range []bool{true, false} {
		var b strings.Builder
		log := logFormat{out: &b, level: levelTrace, showLevel: show}.logger()
		log.Debug("m", "level", "x")
		log.Log(context.Background(), levelTrace, "t")
		got := b.String()
		if !strings.Contains(got, "level=x") || show != strings.Contains(got, "level=TRACE") {
			t.Errorf("showLevel %v: logged %q", show, got)
		}
	}
}
