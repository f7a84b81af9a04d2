package netdev

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// Unixgram is a peer's Unix datagram socket, one bare Ethernet frame per
// datagram: vfkit's protocol, which gvproxy (-listen-vfkit) and
// socket_vmnet-style helpers serve. squibd binds a socket of its own next
// to the peer's, named squibd-<random>.sock (the peer learns the address
// from the first datagram), connects it to the peer, and sends vfkit's
// "VFKT" datagram first if asked to. The send buffer is 1 MiB and the
// receive buffer 4 MiB, as vfkit sets them: macOS caps a datagram at the
// send buffer. If the peer goes away the device's frames are dropped; a
// new peer is reached by restoring the VM (or a new one) onto its socket.
type Unixgram struct {
	c     *net.UnixConn
	local string
}

// DialUnixgram connects to the peer at path.
func DialUnixgram(path string, vfkitMagic bool) (*Unixgram, error) {
	var r [6]byte
	rand.Read(r[:])
	local := filepath.Join(filepath.Dir(path), "squibd-"+hex.EncodeToString(r[:])+".sock")
	c, err := net.DialUnix("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"}, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("unixgram peer %s: %w", path, err)
	}
	u := &Unixgram{c: c, local: local}
	err = errors.Join(c.SetWriteBuffer(1<<20), c.SetReadBuffer(4<<20))
	if err == nil && vfkitMagic {
		_, err = c.Write([]byte("VFKT"))
	}
	if err != nil {
		u.Close()
		return nil, fmt.Errorf("unixgram peer %s: %w", path, err)
	}
	return u, nil
}

func (*Unixgram) Offloads() bool { return false }

// MTU leaves the guest at 1500, the peer's default (gvproxy's -mtu).
func (*Unixgram) MTU() int { return 0 }

// ReadFrame reads one datagram after a zeroed header; a datagram too long
// for b is dropped.
func (u *Unixgram) ReadFrame(b []byte) (int, error) {
	for {
		n, _, flags, _, err := u.c.ReadMsgUnix(b[HeaderSize:], nil)
		if err != nil {
			return 0, err
		}
		if flags&syscall.MSG_TRUNC == 0 {
			clear(b[:HeaderSize])
			return HeaderSize + n, nil
		}
	}
}

// WriteFrame sends the frame after its header as one datagram.
func (u *Unixgram) WriteFrame(b []byte) error {
	if len(b) < HeaderSize {
		return errors.New("frame shorter than its header")
	}
	_, err := u.c.Write(b[HeaderSize:])
	return err
}

// Close closes the socket and removes squibd's socket file.
func (u *Unixgram) Close() error {
	err := u.c.Close()
	os.Remove(u.local)
	return err
}
