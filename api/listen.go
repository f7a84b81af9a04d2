package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"
)

// ErrInUse reports that a live server already listens on the socket path.
var ErrInUse = errors.New("another process is listening on the API socket")

// Listen creates the API socket at path, readable and writable by its owner
// only (mode 0600). A socket file nobody listens on any more, left by a
// process that died, is replaced; a live one is an ErrInUse, and a path that
// holds anything other than a socket is refused. Closing the listener
// removes the socket file. Listen sets the process umask for the moment of
// the bind: call it before other goroutines create files.
func Listen(path string) (*net.UnixListener, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", path, ErrInUse)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("checking %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale socket: %w", err)
		}
	}
	// The umask makes bind create the file as 0600 from the start, so no
	// other user can connect in a window before a chmod.
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	return l, nil
}
