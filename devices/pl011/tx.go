package pl011

import (
	"io"
	"sync"
	"time"
)

// Transmit buffering. The guest's bytes go into a host-side buffer behind
// the (still instant, always empty) transmit FIFO, and a flusher goroutine
// writes them to the console: at a newline, when txBufSize bytes wait, once
// no byte has come for txIdle (so a prompt shows within txIdle..2*txIdle),
// and at the latest txMaxDelay after the batch began. The vCPU thread only
// appends under a mutex; it waits solely when a full buffer is pending
// behind a write still in flight, that is for the rest of one console
// write, where it used to wait for a whole write per byte. Memory is two
// buffers of txBufSize, however fast the guest writes.
const (
	txBufSize  = 4096
	txIdle     = 2 * time.Millisecond
	txMaxDelay = 10 * time.Millisecond
)

// txq is the transmit buffer and its flusher.
type txq struct {
	w               io.Writer
	idle, maxDelay  time.Duration
	kick            chan struct{} // capacity 1: wakes the flusher
	exited          chan struct{} // closed when the flusher has returned
	mu              sync.Mutex
	drained         *sync.Cond // broadcast when buf is handed off or a write ends
	buf             []byte     // bytes not yet handed to w
	spare           []byte     // the other buffer; nil while a write of it is in flight
	queued, written uint64     // bytes ever put; bytes ever written (or dropped by a failing w)
	urgent          bool       // write buf out now: newline, full, Flush or Close
	closed          bool       // Close was called: drain and stop
	gone            bool       // the flusher has stopped: put writes straight through
}

func newTxq(w io.Writer, idle, maxDelay time.Duration) *txq {
	t := &txq{w: w, idle: idle, maxDelay: maxDelay, kick: make(chan struct{}, 1), exited: make(chan struct{}),
		buf: make([]byte, 0, txBufSize), spare: make([]byte, 0, txBufSize)}
	t.drained = sync.NewCond(&t.mu)
	go t.run()
	return t
}

// wake tells the flusher to look again; called with mu held.
func (t *txq) wake() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// put queues one byte. It waits only while buf is full and the other
// buffer is still being written.
func (t *txq) put(c byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.buf) == txBufSize && !t.gone {
		t.drained.Wait()
	}
	t.queued++
	if t.gone {
		// After Close: nothing buffers any more, so write at once (in
		// order, since buf is empty and mu is held).
		t.w.Write([]byte{c})
		t.written++
		return
	}
	t.buf = append(t.buf, c)
	switch {
	case c == '\n' || len(t.buf) == txBufSize:
		t.urgent = true
		t.wake()
	case len(t.buf) == 1:
		t.wake()
	}
}

// flush returns once every byte put before the call has been written.
func (t *txq) flush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	target := t.queued
	if t.written >= target {
		return
	}
	t.urgent = true
	t.wake()
	for t.written < target {
		t.drained.Wait()
	}
}

// close writes out every pending byte and stops the flusher. Bytes put
// afterwards are written synchronously. It may be called more than once.
func (t *txq) close() {
	t.mu.Lock()
	t.closed = true
	t.wake()
	t.mu.Unlock()
	<-t.exited
}

// run is the flusher: it waits for bytes, lets them collect until one of
// the flush conditions holds, and writes them with mu released, so the
// vCPUs keep filling the other buffer meanwhile.
func (t *txq) run() {
	defer close(t.exited)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false      // timer runs for the current batch
	var seen uint64     // queued when the timer was armed
	var first time.Time // when the batch began
	t.mu.Lock()
	for {
		if len(t.buf) == 0 {
			if t.closed {
				break
			}
			t.mu.Unlock()
			<-t.kick
			t.mu.Lock()
			continue
		}
		if !t.urgent && !t.closed {
			if !armed {
				seen, first, armed = t.queued, time.Now(), true
				timer.Reset(t.idle)
			}
			t.mu.Unlock()
			fired := false
			select {
			case <-t.kick:
			case <-timer.C:
				fired = true
			}
			t.mu.Lock()
			if !fired {
				continue // new bytes, urgency or Close: look again
			}
			if age := time.Since(first); t.queued != seen && age < t.maxDelay {
				// Bytes came during the window: the guest is still
				// writing this line; give it another window.
				seen = t.queued
				timer.Reset(min(t.idle, t.maxDelay-age))
				continue
			}
		}
		if armed {
			timer.Stop()
			armed = false
		}
		b := t.buf
		t.buf, t.spare = t.spare[:0], nil
		t.urgent = false
		t.drained.Broadcast() // room for put
		t.mu.Unlock()
		t.w.Write(b) // as before, a failing console loses what it refused
		t.mu.Lock()
		t.spare = b[:0]
		t.written += uint64(len(b))
		t.drained.Broadcast() // progress for flush, room for put
	}
	t.gone = true
	t.drained.Broadcast()
	t.mu.Unlock()
}
