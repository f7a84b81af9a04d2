package vsock

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	connectTimeout = 2 * time.Second // for a host program's CONNECT line
	maxConnectLine = 32              // Firecracker's buffer: "CONNECT 4294967295\n" and room to spare
	dialTimeout    = 2 * time.Second // for a guest-initiated stream's Unix socket
)

// ErrInUse reports that a live process accepts connections on a vsock
// socket path.
var ErrInUse = errors.New("another process accepts connections on it")

// CheckPath checks that path can be the device's socket: nothing there, or
// a stale socket (a connect is refused: nobody accepts on it), which the
// device replaces. It does not bind.
func CheckPath(path string) error {
	_, err := stale(path)
	return err
}

// stale reports whether path holds a stale socket, or an error when it
// holds something else or a live socket.
func stale(path string) (bool, error) {
	if path == "" {
		return false, errors.New("no socket path")
	}
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if st.Mode().Type() != fs.ModeSocket {
		return false, fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return false, fmt.Errorf("%s: %w", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false, fmt.Errorf("checking %s: %w", path, err)
	}
	return true, nil
}

// listen binds path, replacing a stale socket. Closing the listener
// removes the file.
func listen(path string) (*net.UnixListener, error) {
	old, err := stale(path)
	if err != nil {
		return nil, fmt.Errorf("vsock: %w", err)
	}
	if old {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("vsock: removing the stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vsock: %w", err)
	}
	return l, nil
}

// accept takes host programs' connections, each to its handshake.
func (d *Device) accept() {
	defer d.wg.Done()
	for {
		s, err := d.l.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of descriptors, say: wait a little
			d.log.Warn("accept", "vsock: accepting a host connection", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			s.Close()
			return
		}
		d.handshakes[s] = true
		d.wg.Add(1)
		d.mu.Unlock()
		go d.handshake(s)
	}
}

// handshake reads a host program's CONNECT line and opens its connection,
// whose REQUEST then goes to the guest.
func (d *Device) handshake(s *net.UnixConn) {
	defer d.wg.Done()
	s.SetReadDeadline(time.Now().Add(connectTimeout))
	port, err := readConnect(s)
	s.SetReadDeadline(time.Time{})
	d.mu.Lock()
	delete(d.handshakes, s)
	var c *conn
	switch {
	case d.closed:
	case err != nil:
		d.log.Log.Info("vsock: host connection closed: no CONNECT line", "err", err)
	case len(d.conns) >= maxConns:
		d.log.Warn("host limit", "vsock: connection limit reached: host connection closed", "limit", maxConns)
	default:
		c = d.add(key{local: d.allocPort(), peer: port}, s, stRequest)
	}
	d.mu.Unlock()
	if c == nil {
		s.Close()
		return
	}
	d.wake(c)
}

// readConnect reads "CONNECT <port>\n" (the keyword in any case) one byte
// at a time, so that nothing after the line is taken from the stream.
func readConnect(r io.Reader) (uint32, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < maxConnectLine {
		if _, err := io.ReadFull(r, b); err != nil {
			return 0, err
		}
		if b[0] == '\n' {
			return parseConnect(string(line))
		}
		line = append(line, b[0])
	}
	return 0, fmt.Errorf("no newline in the first %d bytes", maxConnectLine)
}

func parseConnect(line string) (uint32, error) {
	f := strings.Fields(line)
	if len(f) < 2 || !strings.EqualFold(f[0], "connect") { // later words ignored, as by Firecracker
		return 0, fmt.Errorf("%q is not CONNECT <port>", line)
	}
	p, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q: bad port", line)
	}
	return uint32(p), nil
}

// dial connects a guest-initiated connection to UDSPath_PORT.
func (d *Device) dial(c *conn) {
	defer d.wg.Done()
	path := fmt.Sprintf("%s_%d", d.cfg.UDSPath, c.local)
	dialer := net.Dialer{Timeout: dialTimeout}
	s, err := dialer.DialContext(d.ctx, "unix", path)
	if err != nil {
		d.log.Log.Debug("vsock: guest connection refused: nothing accepts on its socket", "path", path, "err", err)
	}
	c.mu.Lock()
	c.dialed = true
	if err == nil && !c.closed {
		c.sock, s = s.(*net.UnixConn), nil
	}
	c.mu.Unlock()
	if s != nil {
		s.Close()
	}
	d.wake(c)
}
