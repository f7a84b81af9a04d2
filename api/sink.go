package api

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// drops counts the lines a sink did not write, for the "logger" group of
// the metrics: missed counts every line lost, fails those lost to an error
// other than a full file (a FIFO's reader gone, a full disk).
type drops struct {
	missed, fails atomic.Uint64
}

// sub takes away counts a metrics line has reported.
func (d *drops) sub(missed, fails uint64) {
	d.missed.Add(-missed)
	d.fails.Add(-fails)
}

// A sink is a file PUT /logger or PUT /metrics named: a regular file, or a
// FIFO that another process may or may not be reading. Writing to it never
// waits for a reader, so a FIFO nobody reads stalls neither the requests
// that log nor the metrics flushes: each line goes out in one non-blocking
// write or is dropped and counted, as on Firecracker, whose writes fail
// once the pipe's 64 KiB lie unread. (A regular file is written as any
// file is: non-blocking I/O does not apply to disks.) A line the pipe takes
// only part of is not left cut: its rest goes out before the next line, and
// on Linux as soon as the pipe has room.
type sink struct {
	f     *os.File
	rc    syscall.RawConn
	drops *drops

	mu       sync.Mutex
	tail     []byte // the rest of a line the file took only part of
	flushing bool   // a goroutine waits to write tail
	closed   bool
}

// openSink opens path for appending without blocking, creating a regular
// file if there is none. A FIFO with no reader yet is opened for reading
// too, as Firecracker opens it: a write-only open would fail (ENXIO), and
// this way lines wait in the pipe until someone reads them or it is full.
func openSink(path string, d *drops) (*sink, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NONBLOCK, 0o644)
	if errors.Is(err, syscall.ENXIO) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND|syscall.O_NONBLOCK, 0)
	}
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &sink{f: f, rc: rc, drops: d}, nil
}

// Write writes one line, all of it or none; a line it drops is counted and
// its error returned.
func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, s.drop(os.ErrClosed)
	}
	if err := s.flushTail(); len(s.tail) > 0 {
		return 0, s.drop(err)
	}
	n, err := s.write(p)
	switch {
	case n == len(p):
		return n, nil
	case n > 0:
		s.tail = append(s.tail[:0], p[n:]...)
		s.waitToFlush()
		return len(p), nil
	}
	return 0, s.drop(err)
}

// drop counts a line lost to err; s.mu is held.
func (s *sink) drop(err error) error {
	s.drops.missed.Add(1)
	if !errors.Is(err, syscall.EAGAIN) {
		s.drops.fails.Add(1)
	}
	return err
}

// flushTail writes what is left of a cut line; s.mu is held. It returns
// EAGAIN while the file cannot take all of it; on any other error the rest
// of the line is lost, and counted.
func (s *sink) flushTail() error {
	if len(s.tail) == 0 {
		return nil
	}
	n, err := s.write(s.tail)
	s.tail = s.tail[n:]
	switch {
	case len(s.tail) == 0:
		return nil
	case err == nil || errors.Is(err, syscall.EAGAIN):
		return syscall.EAGAIN
	}
	s.tail = nil
	return s.drop(err)
}

// write makes one non-blocking attempt at writing p; s.mu is held. It uses
// Control, not RawConn.Write, so that it never queues behind the goroutine
// of waitToFlush, which waits inside RawConn.Write.
func (s *sink) write(p []byte) (n int, err error) {
	cerr := s.rc.Control(func(fd uintptr) {
		for n < len(p) {
			m, e := syscall.Write(int(fd), p[n:])
			if m > 0 {
				n += m
			}
			if e == syscall.EINTR {
				continue
			}
			if e != nil || m <= 0 {
				err = e
				break
			}
		}
	})
	if err == nil && n < len(p) {
		err = cerr
	}
	return n, err
}

// waitToFlush starts a goroutine that writes the tail once the file can
// take more, where the runtime can wait for that (a FIFO on Linux);
// elsewhere the tail goes out before the next line. s.mu is held.
func (s *sink) waitToFlush() {
	if s.flushing {
		return
	}
	s.flushing = true
	go func() {
		for {
			err := s.rc.Write(func(uintptr) bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				// false: wait until the file is writable, and call again
				return s.closed || !errors.Is(s.flushTail(), syscall.EAGAIN)
			})
			s.mu.Lock()
			// A line cut while this goroutine was finishing: wait again.
			again := err == nil && !s.closed && len(s.tail) > 0
			s.flushing = again
			s.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// Close writes what it can of a cut line and closes the file.
func (s *sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.flushTail()
	s.closed = true
	s.mu.Unlock()
	return s.f.Close()
}
