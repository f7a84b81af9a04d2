package vsock

import (
	"encoding/binary"
	"errors"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// Packet header fields (virtio 1.2 §5.10.6).
const (
	hdrSize    = 44
	maxPayload = 64 << 10 // Firecracker's and Linux's largest packet payload

	typeStream = 1

	opRequest       = 1
	opResponse      = 2
	opRst           = 3
	opShutdown      = 4
	opRW            = 5
	opCreditUpdate  = 6
	opCreditRequest = 7

	shutRcv  = 1 // the sender will receive no more
	shutSend = 2 // the sender will send no more
)

// header is a packet header, little-endian and packed in the rings.
type header struct {
	srcCID, dstCID   uint64
	srcPort, dstPort uint32
	len              uint32
	typ, op          uint16
	flags            uint32
	bufAlloc, fwdCnt uint32
}

func decodeHeader(b []byte) header {
	le := binary.LittleEndian
	return header{
		srcCID: le.Uint64(b), dstCID: le.Uint64(b[8:]),
		srcPort: le.Uint32(b[16:]), dstPort: le.Uint32(b[20:]),
		len: le.Uint32(b[24:]), typ: le.Uint16(b[28:]), op: le.Uint16(b[30:]),
		flags: le.Uint32(b[32:]), bufAlloc: le.Uint32(b[36:]), fwdCnt: le.Uint32(b[40:]),
	}
}

func (h header) encode() []byte {
	le := binary.LittleEndian
	b := make([]byte, hdrSize)
	le.PutUint64(b, h.srcCID)
	le.PutUint64(b[8:], h.dstCID)
	le.PutUint32(b[16:], h.srcPort)
	le.PutUint32(b[20:], h.dstPort)
	le.PutUint32(b[24:], h.len)
	le.PutUint16(b[28:], h.typ)
	le.PutUint16(b[30:], h.op)
	le.PutUint32(b[32:], h.flags)
	le.PutUint32(b[36:], h.bufAlloc)
	le.PutUint32(b[40:], h.fwdCnt)
	return b
}

// Why a transmitted packet is dropped: its chain does not hold what its
// header says (the chain is given back unused, as Firecracker does), or
// it is not addressed from the guest to the host.
var (
	errShortHeader = errors.New("packet shorter than its 44-byte header")
	errLongPayload = errors.New("packet payload over 64 KiB")
	errShortChain  = errors.New("packet payload longer than its chain")
	errSrcCID      = errors.New("packet from a CID other than the guest's")
	errDstCID      = errors.New("packet for a CID other than the host's")
)

// parsePacket reads the header of a transmitted chain (the driver may
// split it over several buffers) and returns it with the buffers of its
// payload: exactly len bytes after the header, which the chain must hold,
// at most 64 KiB. Bytes past the payload are ignored.
func parsePacket(c *virtio.Chain, ram *memory.RAM) (header, []virtio.Buffer, error) {
	var hb [hdrSize]byte
	got := 0
	var rest []virtio.Buffer // after the header
	for i, b := range c.Readable {
		if got == hdrSize {
			rest = c.Readable[i:]
			break
		}
		n := min(uint64(b.Len), uint64(hdrSize-got))
		src, err := ram.Slice(b.Addr, n)
		if err != nil {
			return header{}, nil, err // not reached: Pop checked that the buffers lie in RAM
		}
		got += copy(hb[got:], src)
		if n < uint64(b.Len) {
			rest = append([]virtio.Buffer{{Addr: b.Addr + n, Len: b.Len - uint32(n)}}, c.Readable[i+1:]...)
			break
		}
	}
	if got < hdrSize {
		return header{}, nil, errShortHeader
	}
	h := decodeHeader(hb[:])
	if h.len > maxPayload {
		return h, nil, errLongPayload
	}
	var payload []virtio.Buffer
	for need := h.len; need > 0; rest = rest[1:] {
		if len(rest) == 0 {
			return h, nil, errShortChain
		}
		b := rest[0]
		b.Len = min(b.Len, need)
		if b.Len > 0 {
			payload = append(payload, b)
		}
		need -= b.Len
	}
	return h, payload, nil
}

// checkAddress checks that a packet goes from the guest, whose CID is
// cid, to the host.
func checkAddress(h header, cid uint64) error {
	switch {
	case h.srcCID != cid:
		return errSrcCID
	case h.dstCID != HostCID:
		return errDstCID
	}
	return nil
}

// writer writes a packet into a receive chain's writable buffers, in
// order, through RAM's Mutable (the write log sees it).
type writer struct {
	ram  *memory.RAM
	bufs []virtio.Buffer
	off  uint32 // into bufs[0]
	n    uint32 // bytes written
}

// room is the bytes the writable buffers of c hold, up to what a packet
// can use.
func room(c *virtio.Chain) uint32 {
	return uint32(min(total(c.Writable), hdrSize+maxPayload))
}

// write copies p into the buffers after what was written before; the
// caller keeps within room.
func (w *writer) write(p []byte) {
	for len(p) > 0 && len(w.bufs) > 0 {
		b := w.bufs[0]
		k := min(uint32(len(p)), b.Len-w.off)
		dst, err := w.ram.Mutable(b.Addr+uint64(w.off), uint64(k))
		if err != nil {
			return // not reached: Pop checked that the buffers lie in RAM
		}
		copy(dst, p)
		p, w.off, w.n = p[k:], w.off+k, w.n+k
		if w.off == b.Len {
			w.bufs, w.off = w.bufs[1:], 0
		}
	}
}
