package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/squibvm/squib/lab"
)

// hostConnect opens a stream to the guest's port through squibd's vsock
// socket uds, as Firecracker's hybrid vsock has it, and returns it with
// the host port of the OK line.
func hostConnect(uds, port string) (*net.UnixConn, string, error) {
	s, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: uds, Net: "unix"})
	if err != nil {
		return nil, "", err
	}
	fmt.Fprintf(s, "CONNECT %s\n", port)
	s.SetReadDeadline(time.Now().Add(30 * time.Second)) // a restored guest takes its reset event first
	line, err := bufio.NewReaderSize(oneByte{s}, 16).ReadString('\n')
	s.SetReadDeadline(time.Time{})
	if err != nil || !strings.HasPrefix(line, "OK ") {
		s.Close()
		return nil, "", fmt.Errorf("CONNECT %s: answer %q, %v", port, line, err)
	}
	return s, strings.TrimSpace(line[3:]), nil
}

// oneByte reads one byte at a time, so that a line reader takes nothing
// past the line.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }

// echo sends want on s while reading its echo, within timeout.
func echo(s *net.UnixConn, want []byte, timeout time.Duration) error {
	s.SetDeadline(time.Now().Add(timeout))
	werr := make(chan error, 1)
	go func() {
		_, err := s.Write(want)
		if err == nil {
			err = s.CloseWrite()
		}
		werr <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(s, got); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	if !bytes.Equal(got, want) {
		return errors.New("the echo differs from what was sent")
	}
	return nil
}

// vsockEcho is labtool vsock-echo UDS PORT STREAMS BYTES.
func vsockEcho(uds, port, streams, size string) error {
	n, err := strconv.Atoi(streams)
	if err != nil {
		return err
	}
	bytesEach, err := strconv.Atoi(size)
	if err != nil {
		return err
	}
	start := time.Now()
	var ok atomic.Int64
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, _, err := hostConnect(uds, port)
			if err == nil {
				err = echo(s, lab.Pattern(uint32(i+1), bytesEach), 10*time.Minute)
				s.Close()
			}
			if err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	close(errs)
	fmt.Printf("VSOCK streams=%d ok=%d bytes=%d ms=%d\n", n, ok.Load(), int64(n)*int64(bytesEach), time.Since(start).Milliseconds())
	return <-errs // the first, if any
}

// vsockListen is labtool vsock-listen PATH.
func vsockListen(path string) error {
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	defer l.Close()
	s, err := l.Accept()
	if err != nil {
		return err
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(5 * time.Minute))
	b, err := io.ReadAll(s)
	if err != nil {
		return err
	}
	same := "no"
	if bytes.Equal(b, lab.Pattern(lab.GuestSeed, len(b))) {
		same = "yes"
	}
	fmt.Printf("VSOCK-LISTEN bytes=%d sum=%s pattern=%s\n", len(b), lab.Sum(b), same)
	return nil
}

// vsockStall is labtool vsock-stall UDS PORT.
func vsockStall(uds, port string) error {
	const total = 8 << 20
	stalled, _, err := hostConnect(uds, port)
	if err != nil {
		return err
	}
	defer stalled.Close()
	want := lab.Pattern(7, total)
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		for off := 0; off < total; off += 64 << 10 {
			if _, err := stalled.Write(want[off : off+64<<10]); err != nil {
				done <- err
				return
			}
			sent.Add(64 << 10)
		}
		done <- stalled.CloseWrite()
	}()
	time.Sleep(3 * time.Second) // the pipeline fills: the writes stop
	stuck := sent.Load()
	other := "ok"
	if s, _, err := hostConnect(uds, port); err != nil {
		other = err.Error()
	} else {
		if err := echo(s, lab.Pattern(8, 1<<20), 5*time.Minute); err != nil {
			other = err.Error()
		}
		s.Close()
	}
	back := "ok"
	stalled.SetReadDeadline(time.Now().Add(5 * time.Minute))
	got := make([]byte, total)
	if _, err := io.ReadFull(stalled, got); err != nil {
		back = err.Error()
	} else if err := <-done; err != nil {
		back = err.Error()
	} else if !bytes.Equal(got, want) {
		back = "the echo differs from what was sent"
	}
	fmt.Printf("VSOCK-STALL stalled_sent=%d total=%d other=%s stalled=%s\n", stuck, total, other, back)
	if stuck >= total || other != "ok" || back != "ok" {
		return errors.New("a stalled stream held up another, or did not stall, or lost bytes")
	}
	return nil
}

// vsockHold is labtool vsock-hold UDS PORT.
func vsockHold(uds, port string) error {
	s, hostPort, err := hostConnect(uds, port)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Write([]byte("ping")); err != nil {
		return err
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "ping" {
		return fmt.Errorf("ping: %q, %v", b, err)
	}
	fmt.Printf("VSOCK-HOLD open host_port=%s\n", hostPort)
	_, err = io.Copy(io.Discard, s)
	fmt.Printf("VSOCK-HOLD end err=%v\n", err)
	return nil
}
