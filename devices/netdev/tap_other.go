//go:build !linux

package netdev

import "errors"

// Tap is a Linux tap device; there is none here.
type Tap struct{ Backend }

// OpenTap refuses: tap devices are Linux's (on macOS, use the user-mode
// network or a unixgram peer such as gvproxy or socket_vmnet).
func OpenTap(name string) (*Tap, error) {
	return nil, errors.New("tap devices exist on Linux only: use the user-mode network or a unixgram socket")
}
