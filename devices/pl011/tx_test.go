package pl011

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a console that keeps every Write call. A Write first sleeps
// for slow, and waits while gate is open (a stalled console) until it is
// closed.
type recorder struct {
	slow time.Duration
	gate chan struct{}

	mu     sync.Mutex
	writes [][]byte
	times  []time.Time
}

func (r *recorder) Write(p []byte) (int, error) {
	time.Sleep(r.slow)
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	r.times = append(r.times, time.Now())
	return len(p), nil
}

// calls returns how many Write calls there were.
func (r *recorder) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.writes)
}

// call returns Write call i and when it ended.
func (r *recorder) call(i int) ([]byte, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes[i], r.times[i]
}

// String returns all bytes written, in order.
func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(bytes.Join(r.writes, nil))
}

// waitCalls waits until there have been n Write calls.
func (r *recorder) waitCalls(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.calls() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d Write calls after 5s, want %d; wrote %q", r.calls(), n, r.String())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func nop(bool) {}

// transmit writes s to the data register, one byte at a time as a guest does.
func transmit(u *UART, s string) {
	for i := range len(s) {
		u.Write(regDR, 4, uint64(s[i]))
	}
}

// never is a flush delay that does not come during a test.
const never = time.Hour

func TestLineIsOneWrite(t *testing.T) {
	var r recorder
	u := newUART(&r, nop, never, never)
	defer u.Close()
	line := strings.Repeat("x", 1000) + "\n"
	transmit(u, line[:len(line)-1])
	time.Sleep(10 * time.Millisecond)
	if n := r.calls(); n != 0 {
		t.Fatalf("%d Write calls before the newline", n)
	}
	transmit(u, "\n")
	r.waitCalls(t, 1)
	u.Close()
	if n := r.calls(); n != 1 || r.String() != line {
		t.Fatalf("a %d-byte line took %d Write calls (%q)", len(line), n, r.String())
	}
}

func TestLinesCoalesce(t *testing.T) {
	var r recorder
	u := New(&r, nop)
	var want strings.Builder
	for i := range 200 {
		l := strings.Repeat(string(rune('a'+i%26)), 1+i%70) + "\n"
		want.WriteString(l)
		transmit(u, l)
	}
	u.Close()
	if r.String() != want.String() {
		t.Fatal("output differs from the lines transmitted")
	}
	if n := r.calls(); n > 200 {
		t.Fatalf("200 lines took %d Write calls", n)
	}
	t.Logf("200 lines, %d bytes: %d Write calls", want.Len(), r.calls())
}

func TestFullBufferFlushes(t *testing.T) {
	var r recorder
	u := newUART(&r, nop, never, never)
	defer u.Close()
	in := strings.Repeat("0123456789abcdef", 3*txBufSize/16) + "tail"
	transmit(u, in)
	r.waitCalls(t, 3)
	time.Sleep(10 * time.Millisecond)
	if n := r.calls(); n != 3 {
		t.Fatalf("%d Write calls for 3 full buffers and no newline", n)
	}
	for i := range 3 {
		if w, _ := r.call(i); len(w) != txBufSize {
			t.Fatalf("write %d has %d bytes, want %d", i, len(w), txBufSize)
		}
	}
	u.Close()
	if r.String() != in || r.calls() != 4 {
		t.Fatalf("after Close: %d Write calls, output intact %v", r.calls(), r.String() == in)
	}
}

func TestPromptAppearsWithinDelay(t *testing.T) {
	var r recorder
	u := New(&r, nop)
	defer u.Close()
	start := time.Now()
	transmit(u, "login: ")
	r.waitCalls(t, 1)
	_, at := r.call(0)
	took := at.Sub(start)
	if r.String() != "login: " {
		t.Fatalf("wrote %q", r.String())
	}
	// It comes after txIdle to 2*txIdle; allow for a loaded test machine.
	if took < txIdle || took > 100*time.Millisecond {
		t.Fatalf("prompt written after %v; the idle delay is %v", took, txIdle)
	}
	t.Logf("prompt written after %v (idle delay %v)", took, txIdle)
}

func TestDribbleFlushedByMaxDelay(t *testing.T) {
	var r recorder
	const idle, maxDelay = 20 * time.Millisecond, 60 * time.Millisecond
	u := newUART(&r, nop, idle, maxDelay)
	defer u.Close()
	// A byte every 2ms never leaves an idle window, yet shows within maxDelay.
	start := time.Now()
	for time.Since(start) < 10*maxDelay && r.calls() == 0 {
		transmit(u, ".")
		time.Sleep(2 * time.Millisecond)
	}
	r.waitCalls(t, 1)
	if _, at := r.call(0); at.Sub(start) > 5*maxDelay {
		t.Fatalf("first dots written after %v, want about %v", at.Sub(start), maxDelay)
	}
}

func TestFlushAndSaveWriteEverything(t *testing.T) {
	var r recorder
	u := newUART(&r, nop, never, never)
	defer u.Close()
	transmit(u, "abc")
	u.Flush()
	if r.String() != "abc" {
		t.Fatalf("after Flush: %q", r.String())
	}
	u.Flush() // nothing pending: returns at once
	transmit(u, "def")
	u.Save()
	if r.String() != "abcdef" || r.calls() != 2 {
		t.Fatalf("after Save: %q in %d Write calls", r.String(), r.calls())
	}
}

func TestCloseLosesNothing(t *testing.T) {
	r := recorder{slow: 200 * time.Microsecond}
	u := New(&r, nop)
	var in strings.Builder
	for i := range 5000 {
		in.WriteString(strings.Repeat("y", i%37))
		if i%3 == 0 {
			in.WriteByte('\n')
		}
	}
	transmit(u, in.String())
	u.Close()
	if r.String() != in.String() {
		t.Fatalf("after Close: %d bytes of %d, intact %v", len(r.String()), in.Len(), strings.HasPrefix(in.String(), r.String()))
	}
	u.Close() // again: harmless
	// After Close a byte is written at once.
	before := r.calls()
	transmit(u, "z")
	if r.calls() != before+1 || !strings.HasSuffix(r.String(), "z") {
		t.Fatal("a byte transmitted after Close was not written at once")
	}
}

// A stalled console holds up the guest only once two buffers are full: the
// memory used stays bounded, and nothing is dropped.
func TestStalledConsoleBoundsBuffering(t *testing.T) {
	r := recorder{gate: make(chan struct{})}
	u := newUART(&r, nop, never, never)
	in := strings.Repeat("z", 5*txBufSize)
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range len(in) {
			u.Write(regDR, 4, uint64(in[i]))
			sent.Add(1)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for sent.Load() < 2*txBufSize && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	time.Sleep(20 * time.Millisecond)
	// One buffer is in the stalled Write, one is full behind it.
	if n := sent.Load(); n != 2*txBufSize {
		t.Fatalf("the guest transmitted %d bytes into a stalled console, want %d", n, 2*txBufSize)
	}
	close(r.gate) // the console recovers
	<-done
	u.Close()
	if r.String() != in {
		t.Fatalf("wrote %d bytes of %d", len(r.String()), len(in))
	}
}

// Several vCPUs transmit while input arrives and the host flushes and
// saves; each vCPU's bytes come out complete and in order. Run with -race.
func TestConcurrentTransmit(t *testing.T) {
	var r recorder
	var irq sync.Mutex
	u := newUART(&r, func(bool) { irq.Lock(); irq.Unlock() }, 50*time.Microsecond, time.Millisecond)
	u.Write(regIMSC, 4, intRX|intTX)
	const writers, each = 8, 20000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				// The top three bits say who, the low five count.
				u.Write(regDR, 4, uint64(w<<5|k&31))
				if k%1000 == 0 {
					u.Read(regFR, 4)
					u.Write(regICR, 4, intTX)
				}
			}
		}()
	}
	stop := make(chan struct{})
	var host sync.WaitGroup
	host.Add(2)
	go func() { // input and a reader draining it
		defer host.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			u.Input([]byte("in"))
			for u.Read(regFR, 4)&frRXFE == 0 {
				u.Read(regDR, 4)
			}
		}
	}()
	go func() { // pauses and snapshots
		defer host.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			u.Flush()
			u.Save()
		}
	}()
	wg.Wait()
	close(stop)
	host.Wait()
	u.Close()
	out := r.String()
	if len(out) != writers*each {
		t.Fatalf("%d bytes out, want %d", len(out), writers*each)
	}
	var next [writers]int
	for i := range len(out) {
		w, k := out[i]>>5, int(out[i]&31)
		if k != next[w]&31 {
			t.Fatalf("byte %d: writer %d's byte %d where %d was due", i, w, k, next[w]&31)
		}
		next[w]++
	}
	t.Logf("%d bytes from %d writers in %d Write calls", len(out), writers, r.calls())
}

// counter is a real console for the benchmark: a pipe whose other end a
// goroutine drains, counting the Write calls.
type counter struct {
	w     *os.File
	calls atomic.Int64
}

func (c *counter) Write(p []byte) (int, error) {
	c.calls.Add(1)
	return c.w.Write(p)
}

func newCounter(b *testing.B) *counter {
	pr, pw, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		buf := make([]byte, 64<<10)
		for {
			if _, err := pr.Read(buf); err != nil {
				return
			}
		}
	}()
	b.Cleanup(func() {
		pw.Close()
		<-drained
		pr.Close()
	})
	return &counter{w: pw}
}

// BenchmarkTransmit is guest console output, 80-byte lines or a flood with
// no newline, one op per byte: written straight through, a Write per byte
// (what the UART did before it buffered), and through the UART.
func BenchmarkTransmit(b *testing.B) {
	for _, text := range []struct{ name, s string }{
		{"lines", strings.Repeat("x", 79) + "\n"},
		{"flood", strings.Repeat("x", 80)},
	} {
		b.Run(text.name+"/per-byte-write", func(b *testing.B) {
			c := newCounter(b)
			var mu sync.Mutex
			b.ResetTimer()
			for i := range b.N {
				mu.Lock()
				c.Write([]byte{text.s[i%len(text.s)]})
				mu.Unlock()
			}
			report(b, c)
		})
		b.Run(text.name+"/uart", func(b *testing.B) {
			c := newCounter(b)
			u := New(c, nop)
			b.ResetTimer()
			for i := range b.N {
				u.Write(regDR, 4, uint64(text.s[i%len(text.s)]))
			}
			u.Close()
			report(b, c)
		})
	}
}

func report(b *testing.B, c *counter) {
	b.StopTimer()
	b.ReportMetric(float64(c.calls.Load())/float64(b.N), "writes/byte")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/byte")
}
