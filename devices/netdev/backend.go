package netdev

// HeaderSize is the length of struct virtio_net_hdr under VERSION_1
// (virtio 1.2 §5.1.6): flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset, num_buffers.
const HeaderSize = 12

// MaxFrame bounds a frame with its header both ways: a 64 KiB segmentation
// offload frame, its Ethernet header and a VLAN tag, as Firecracker's
// 65562-byte buffers.
const MaxFrame = 65562

// Backend carries the device's Ethernet frames to and from the host side.
// Every frame crosses it as one buffer that begins with a HeaderSize-byte
// virtio_net_hdr: a backend that cannot pass offloads (Offloads false)
// ignores the header of the frames it sends and zeroes it in the frames it
// receives; a tap with IFF_VNET_HDR hands it to the kernel, which completes
// checksums and segments.
//
// ReadFrame is called from one goroutine, WriteFrame from another; Close
// may be called from any, once, and makes both return.
type Backend interface {
	// Offloads reports whether the backend passes the header's checksum
	// and segmentation requests on (so the device may offer CSUM,
	// GUEST_CSUM and the TSO/UFO bits).
	Offloads() bool
	// MTU is the IP MTU the device tells the guest (VIRTIO_NET_F_MTU),
	// or 0 to leave the guest at Ethernet's 1500.
	MTU() int
	// ReadFrame reads the next frame, header first, into b (MaxFrame
	// bytes), blocking until one comes; it returns the frame's length
	// with its header. A frame too long for b may be dropped or
	// truncated, never split.
	ReadFrame(b []byte) (int, error)
	// WriteFrame sends one frame, header first. It may block while the
	// host side is full; it must not keep b.
	WriteFrame(b []byte) error
	// Close releases the backend; ReadFrame and WriteFrame then return
	// an error.
	Close() error
}
