package netdev

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// TUNSETOFFLOAD flags (linux/if_tun.h).
const (
	tunCsum = 0x01
	tunTSO4 = 0x02
	tunTSO6 = 0x04
	tunUFO  = 0x10
)

// Tap is a Linux tap device opened with IFF_VNET_HDR: each read and
// write is one frame after a 12-byte virtio_net_hdr, which the kernel
// completes offloads from. The device must exist (made by ip tuntap, owned
// by squibd's user) or squibd must be allowed to make it (CAP_NET_ADMIN),
// as for Firecracker.
type Tap struct{ f *os.File }

// OpenTap attaches to the tap device name.
func OpenTap(name string) (*Tap, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			err = fmt.Errorf("TUNSETIFF: %w (does the tap exist, and may squibd's user open it?)", err)
		}
	}
	if err == nil {
		if err = unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, HeaderSize); err != nil {
			err = fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	// Non-blocking, so the runtime's poller waits for it and Close wakes
	// a blocked read.
	return &Tap{os.NewFile(uintptr(fd), "tap "+name)}, nil
}

func (*Tap) Offloads() bool { return true }

// MTU leaves the guest at 1500: the tap's own MTU is its owner's to set,
// and TSO carries large segments anyway.
func (*Tap) MTU() int { return 0 }

func (t *Tap) ReadFrame(b []byte) (int, error) { return t.f.Read(b) }

func (t *Tap) WriteFrame(b []byte) error {
	_, err := t.f.Write(b)
	return err
}

func (t *Tap) Close() error { return t.f.Close() }

// SetOffloads has the kernel deliver the offloads the guest takes
// (Firecracker's mapping of GUEST_CSUM and the GUEST_TSO and UFO bits):
// with none, it delivers whole, checksummed frames.
func (t *Tap) SetOffloads(features uint64) error {
	var flags int
	for _, m := range []struct {
		feat uint64
		flag int
	}{{featGuestCSUM, tunCsum}, {featGuestTSO4, tunTSO4}, {featGuestTSO6, tunTSO6}, {featGuestUFO, tunUFO}} {
		if features&m.feat != 0 {
			flags |= m.flag
		}
	}
	c, err := t.f.SyscallConn()
	if err != nil {
		return err
	}
	if cerr := c.Control(func(fd uintptr) { err = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, flags) }); cerr != nil {
		return cerr
	}
	return err
}
