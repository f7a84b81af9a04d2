package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squibvm/squib/hv"
	"github.com/squibvm/squib/vmm"
)

// bound is how long a request that must not wait may take: far more than
// it needs, far less than forever.
const bound = 3 * time.Second

// serve serves ctl's API on a real Unix socket and returns a client of it.
func serve(t *testing.T, ctl *Controller) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ctl)
	go srv.Serve(l)
	c := NewClient(sock)
	t.Cleanup(func() {
		c.Close()
		srv.Close()
		l.Close()
	})
	return c
}

// within sends a request that must be answered within bound, and returns
// the answer's error: nil for 204 and 200, a *Fault for 400.
func within(c *Client, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	err := c.Do(ctx, method, path, in, out)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s was not answered within %v", method, path, bound)
	}
	return err
}

// newController returns a controller, closed when the test ends, after
// the clean-ups registered later (which free a request stuck on a FIFO).
func newController(t *testing.T) *Controller {
	ctl := NewController(Options{Log: io.Discard,
		OpenHypervisor: func() (hv.Hypervisor, error) { return nil, hv.ErrNoHypervisor }})
	t.Cleanup(ctl.Close)
	return ctl
}

// mkfifo makes a FIFO. When the test ends, before the controller is
// closed, the FIFO is opened read-write once (a reader and a writer), so
// that a request stuck opening it (as before the fix) comes free and the
// test fails instead of hanging.
func mkfifo(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK, 0); err == nil {
			time.Sleep(10 * time.Millisecond)
			unix.Close(fd)
		}
	})
	return path
}

// openReader opens a FIFO's read end without waiting for a writer.
func openReader(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// drain reads what a FIFO holds now, without waiting for more.
func drain(t *testing.T, f *os.File) string {
	t.Helper()
	var b bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		f.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := f.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// loggerMetrics writes a metrics line to the regular file at path, as the
// running microVM's periodic writer does, and returns its "logger" group.
func loggerMetrics(t *testing.T, ctl *Controller, path string) map[string]uint64 {
	t.Helper()
	if err := ctl.metrics.write(vmm.ExitCounts{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var line map[string]json.RawMessage
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &line); err != nil {
		t.Fatal(err)
	}
	var logger map[string]uint64
	if err := json.Unmarshal(line["logger"], &logger); err != nil {
		t.Fatalf("the metrics line has no logger group: %s", lines[len(lines)-1])
	}
	return logger
}

// checkLines checks that what a log FIFO held is whole lines of the text
// logger, and returns how many.
func checkLines(t *testing.T, got string) int {
	t.Helper()
	if got != "" && !strings.HasSuffix(got, "\n") {
		t.Errorf("the FIFO ends in a cut line: %q", got[max(0, len(got)-100):])
	}
	n := 0
	for sc := bufio.NewScanner(strings.NewReader(got)); sc.Scan(); n++ {
		if !strings.HasPrefix(sc.Text(), "time=") || !strings.Contains(sc.Text(), "msg=") {
			t.Fatalf("line %d is not a whole log line: %q", n, sc.Text())
		}
	}
	return n
}

// TestLoggerFIFO sets the log to a FIFO nobody reads and checks that the
// API goes on answering: PUT /logger at once (Firecracker opens the FIFO
// read-write and non-blocking, so the open succeeds), GET / meanwhile from
// another client, and every request after the pipe is full. The lines the
// full pipe refused are counted in the metrics (logger.missed_log_count);
// those it took are whole, and logging resumes once the pipe is read.
func TestLoggerFIFO(t *testing.T) {
	for _, reader := range []bool{false, true} {
		name := map[bool]string{false: "no reader", true: "reader stopped"}[reader]
		t.Run(name, func(t *testing.T) {
			ctl := newController(t)
			metricsPath := filepath.Join(t.TempDir(), "metrics")
			if err := ctl.setMetrics(Metrics{MetricsPath: &metricsPath}); err != nil {
				t.Fatal(err)
			}
			c, other := serve(t, ctl), serve(t, ctl)
			fifo := mkfifo(t, "log.fifo")
			var r *os.File
			if reader {
				r = openReader(t, fifo) // attached, reading nothing until the end
			}
			level := "Debug"
			put := make(chan error, 1)
			go func() { put <- within(c, "PUT", "/logger", Logger{LogPath: &fifo, Level: &level}, nil) }()
			var info InstanceInfo
			if err := within(other, "GET", "/", nil, &info); err != nil || info.State != StateNotStarted {
				t.Fatalf("GET / beside PUT /logger: %+v %v", info, err)
			}
			if err := <-put; err != nil {
				t.Fatalf("PUT /logger of a FIFO with no reader: %v", err)
			}
			// Each request logs a line of about 100 bytes: 2000 fill the
			// 64 KiB pipe three times over.
			start := time.Now()
			for i := range 2000 {
				if err := within(c, "GET", "/version", nil, new(Version)); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			t.Logf("2000 requests logging to a full FIFO took %v", time.Since(start))
			missed := loggerMetrics(t, ctl, metricsPath)["missed_log_count"]
			if missed == 0 {
				t.Errorf("no missed_log_count after 2000 lines to a FIFO nobody reads")
			}
			if r == nil {
				r = openReader(t, fifo)
			}
			got := checkLines(t, drain(t, r))
			if got == 0 || uint64(got)+missed < 2000 {
				t.Errorf("the FIFO held %d lines and %d were missed, of at least 2000", got, missed)
			}
			// With room in the pipe, lines arrive again, and the count
			// of missed lines starts again from 0.
			within(c, "GET", "/version", nil, new(Version))
			if after := drain(t, r); !strings.Contains(after, `msg="API request" method=GET path=/version`) {
				t.Errorf("nothing logged once the pipe was read: %q", after)
			}
			if m := loggerMetrics(t, ctl, metricsPath)["missed_log_count"]; m != 0 {
				t.Errorf("missed_log_count %d in the next line, want 0", m)
			}
		})
	}
}

// TestMetricsFIFO sets the metrics to a FIFO nobody reads: PUT /metrics
// is answered at once with GET / answered meanwhile, and each metrics line
// the full pipe refuses (the periodic ones, FlushMetrics) returns at once
// with the error, is counted in logger.missed_metrics_count of the next line
// that gets through, and leaves the lines in the pipe whole.
func TestMetricsFIFO(t *testing.T) {
	ctl := newController(t)
	c, other := serve(t, ctl), serve(t, ctl)
	fifo := mkfifo(t, "metrics.fifo")
	put := make(chan error, 1)
	go func() { put <- within(c, "PUT", "/metrics", Metrics{MetricsPath: &fifo}, nil) }()
	if err := within(other, "GET", "/", nil, new(InstanceInfo)); err != nil {
		t.Fatal(err)
	}
	if err := <-put; err != nil {
		t.Fatalf("PUT /metrics of a FIFO with no reader: %v", err)
	}
	refused := 0
	for i := range 200 { // lines of about 2 KiB: 200 overfill the pipe
		start := time.Now()
		err := ctl.metrics.write(vmm.ExitCounts{})
		if took := time.Since(start); took > bound {
			t.Fatalf("metrics line %d took %v", i, took)
		}
		if err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("metrics line %d: %v, want EAGAIN", i, err)
			}
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("200 metrics lines fit in a FIFO nobody reads")
	}
	// The periodic writer is not held up by the full pipe either.
	ended, done := make(chan struct{}), make(chan struct{})
	go func() {
		ctl.writeMetricsUntil(ended, time.Millisecond, func() vmm.ExitCounts { return vmm.ExitCounts{} })
		close(done)
	}()
	time.Sleep(20 * time.Millisecond)
	if err := within(other, "GET", "/", nil, new(InstanceInfo)); err != nil {
		t.Fatal(err)
	}
	close(ended)
	select {
	case <-done:
	case <-time.After(bound):
		t.Fatal("the periodic metrics writer is stuck on the full FIFO")
	}
	r := openReader(t, fifo)
	held := drain(t, r)
	for i, l := range strings.SplitAfter(held, "\n") {
		if l != "" && !json.Valid([]byte(l)) {
			t.Fatalf("line %d in the FIFO is not whole JSON: %.100q", i, l)
		}
	}
	if err := ctl.metrics.write(vmm.ExitCounts{}); err != nil {
		t.Fatalf("a metrics line once the pipe was read: %v", err)
	}
	var line struct{ Logger map[string]uint64 }
	if err := json.Unmarshal([]byte(drain(t, r)), &line); err != nil {
		t.Fatal(err)
	}
	if m := line.Logger["missed_metrics_count"]; m < uint64(refused) {
		t.Errorf("missed_metrics_count %d, want at least the %d lines refused here", m, refused)
	}
}

// TestSnapshotLoadFIFO loads a snapshot whose files are FIFOs with no
// writer: the load is refused at once, and GET / from another client is
// answered meanwhile.
func TestSnapshotLoadFIFO(t *testing.T) {
	for _, which := range []string{"state", "memory"} {
		t.Run(which, func(t *testing.T) {
			ctl := newController(t)
			c, other := serve(t, ctl), serve(t, ctl)
			state, mem := mkfifo(t, "state"), mkfifo(t, "mem")
			if which == "memory" { // a sound state file, so that the memory file is opened
				state = writeSnapshot(t, t.TempDir()).State
			}
			file := "File"
			load := make(chan error, 1)
			go func() {
				load <- within(c, "PUT", "/snapshot/load", SnapshotLoad{SnapshotPath: &state,
					MemBackend: &MemBackend{BackendType: &file, BackendPath: &mem}}, nil)
			}()
			if err := within(other, "GET", "/", nil, new(InstanceInfo)); err != nil {
				t.Fatal(err)
			}
			err := <-load
			want := "Load snapshot error: snapshot: " + map[string]string{"state": state, "memory": mem}[which] + ": "
			if f, ok := err.(*Fault); !ok || !strings.HasPrefix(f.Message, want) {
				t.Fatalf("load of a FIFO %s file: %v", which, err)
			}
		})
	}
}

// TestSinkCutLine writes lines longer than the room left in a pipe: the
// part that fits goes out, the rest follows before the next line, and the
// reader sees every line whole.
func TestSinkCutLine(t *testing.T) {
	fifo := mkfifo(t, "fifo")
	r := openReader(t, fifo)
	var d drops
	s, err := openSink(fifo, &d)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	line := []byte(strings.Repeat("x", 10000) + "\n")
	written := 0
	for range 20 { // 200 KB into a 64 KiB pipe
		if n, _ := s.Write(line); n == len(line) {
			written++
		}
	}
	if d.missed.Load() == 0 || d.fails.Load() != 0 || written+int(d.missed.Load()) != 20 {
		t.Fatalf("%d lines written, %d missed, %d failed, of 20", written, d.missed.Load(), d.fails.Load())
	}
	var got bytes.Buffer
	deadline := time.Now().Add(bound)
	for got.Len() < written*len(line) && time.Now().Before(deadline) {
		// On Linux a goroutine sends the cut line's rest as room appears;
		// where the runtime cannot wait on a FIFO, the next write does.
		got.WriteString(drain(t, r))
		if runtime.GOOS != "linux" {
			s.Write(nil)
		}
	}
	if got.Len() != written*len(line) || !bytes.Equal(got.Bytes(), bytes.Repeat(line, written)) {
		t.Fatalf("the reader got %d bytes, want %d lines of %d", got.Len(), written, len(line))
	}
	if n, err := s.Write(line); n != len(line) || err != nil {
		t.Fatalf("a line once the pipe was read: %d, %v", n, err)
	}
}

// TestGetsNeverWait: while a request holds the controller (as a snapshot
// written to a slow disk does), GET /, GET /machine-config and GET
// /vm/config still answer, with what the last finished request left.
func TestGetsNeverWait(t *testing.T) {
	ctl := newController(t)
	c := serve(t, ctl)
	if err := within(c, "PUT", "/machine-config", map[string]any{"vcpu_count": 2, "mem_size_mib": 256}, nil); err != nil {
		t.Fatal(err)
	}
	ctl.mu.Lock() // a long request
	defer ctl.mu.Unlock()
	var info InstanceInfo
	if err := within(c, "GET", "/", nil, &info); err != nil || info.State != StateNotStarted {
		t.Errorf("GET / = %+v, %v", info, err)
	}
	var mc MachineConfig
	if err := within(c, "GET", "/machine-config", nil, &mc); err != nil || mc.VCPUCount == nil || *mc.VCPUCount != 2 {
		t.Errorf("GET /machine-config = %+v, %v", mc, err)
	}
	var full FullConfig
	if err := within(c, "GET", "/vm/config", nil, &full); err != nil || full.MachineConfig == nil || *full.MachineConfig.MemSizeMiB != 256 {
		t.Errorf("GET /vm/config = %+v, %v", full, err)
	}
}
