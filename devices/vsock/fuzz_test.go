package vsock

import (
	"fmt"
	"strings"
	"testing"

	"github.com/squibvm/squib/memory"
	"github.com/squibvm/squib/virtio"
)

// FuzzPacket: whatever a transmitted chain's buffers and bytes say,
// parsePacket returns a header or an error; an accepted packet's payload
// is exactly len bytes, at most 64 KiB, in guest RAM, and taken from the
// chain's buffers after the header.
func FuzzPacket(f *testing.F) {
	hdr := func(h header) []byte { return h.encode() }
	rw := header{srcCID: 3, dstCID: HostCID, srcPort: 1024, dstPort: 5000, len: 5, typ: typeStream, op: opRW, bufAlloc: 1 << 18}
	f.Add(append(hdr(rw), "hello"...), uint8(1), uint32(44), uint32(5))
	f.Add(append(hdr(rw), "hello"...), uint8(0), uint32(49), uint32(0))
	f.Add(hdr(header{srcCID: 3, dstCID: HostCID, typ: typeStream, op: opRequest}), uint8(0), uint32(44), uint32(0))
	f.Add(hdr(header{srcCID: 3, dstCID: HostCID, len: maxPayload + 1, typ: typeStream, op: opRW}), uint8(3), uint32(20), uint32(1<<20))
	f.Add(hdr(header{srcCID: 4, dstCID: 7, len: 1 << 31, typ: 2, op: 99}), uint8(2), uint32(10), uint32(7))
	f.Add([]byte{1, 2, 3}, uint8(1), uint32(3), uint32(0))
	// The buffers do not overlap, so each payload buffer has one place in
	// the chain's bytes.
	const base, stride, size = 0x1000, 0x4000, 6 * 0x4000
	f.Fuzz(func(t *testing.T, data []byte, extra uint8, first, rest uint32) {
		mem := make([]byte, size)
		copy(mem, data)
		ram := memory.Adopt(base, mem, func([]byte) error { return nil })
		c := &virtio.Chain{Readable: []virtio.Buffer{{Addr: base, Len: first % stride}}}
		for i := range uint64(extra % 5) {
			c.Readable = append(c.Readable, virtio.Buffer{Addr: base + (i+1)*stride, Len: rest % stride})
		}
		h, payload, err := parsePacket(c, ram)
		if err != nil {
			return
		}
		var n uint64
		next := uint64(hdrSize) // where in the chain's bytes the payload goes on
		for _, b := range payload {
			if !ram.Contains(b.Addr, uint64(b.Len)) {
				t.Fatalf("payload buffer %+v outside RAM", b)
			}
			at, off := -1, uint64(0)
			for i, r := range c.Readable {
				if b.Addr >= r.Addr && b.Addr+uint64(b.Len) <= r.Addr+uint64(r.Len) && b.Len > 0 {
					at = i
					off += b.Addr - r.Addr
					break
				}
				off += uint64(r.Len)
			}
			if at < 0 || off != next {
				t.Fatalf("payload buffer %+v at chain offset %d, want %d, in %+v", b, off, next, c.Readable)
			}
			next += uint64(b.Len)
			n += uint64(b.Len)
		}
		if n != uint64(h.len) || h.len > maxPayload {
			t.Fatalf("payload of %d bytes for a header of len %d", n, h.len)
		}
		if err := checkAddress(h, 3); err == nil && (h.srcCID != 3 || h.dstCID != HostCID) {
			t.Fatalf("address of %+v accepted", h)
		}
	})
}

// FuzzConnect: a host program's line either names a port, given in
// decimal after CONNECT in any case, or is refused.
func FuzzConnect(f *testing.F) {
	for _, s := range []string{"CONNECT 52", "connect 0", "Connect  4294967295 extra", "CONNECT", "HELLO 5", "CONNECT -1", "CONNECT 4294967296", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		port, err := readConnect(strings.NewReader(line + "\n"))
		if err != nil {
			return
		}
		line, _, _ = strings.Cut(line, "\n") // what the device reads
		fields := strings.Fields(line)
		if len(line) >= maxConnectLine || len(fields) < 2 || !strings.EqualFold(fields[0], "connect") || strings.TrimLeft(fields[1], "0") != strings.TrimLeft(fmt.Sprint(port), "0") {
			t.Fatalf("%q accepted as port %d", line, port)
		}
	})
}
