package vsock

// ring is a fixed-size byte FIFO, allocated on first use. Its holder
// locks it; the goroutine moving bytes between it and a socket may use
// the run data or space returned without the lock, since nothing else
// touches those bytes until it calls discard or commit.
type ring struct {
	size    int
	buf     []byte
	head, n int // the first byte held, and how many
}

func (r *ring) free() int { return r.size - r.n }

// data is the first contiguous run of bytes held.
func (r *ring) data() []byte {
	if r.n == 0 {
		return nil
	}
	return r.buf[r.head:min(r.head+r.n, r.size)]
}

// space is the first contiguous run of free bytes.
func (r *ring) space() []byte {
	if r.buf == nil {
		r.buf = make([]byte, r.size)
	}
	if r.n == r.size {
		return nil
	}
	tail := (r.head + r.n) % r.size
	if tail < r.head {
		return r.buf[tail:r.head]
	}
	return r.buf[tail:]
}

// commit adds the k bytes just written into space.
func (r *ring) commit(k int) { r.n += k }

// discard drops the first k bytes held. The free run after them stays
// where it was: a goroutine may be filling it.
func (r *ring) discard(k int) {
	r.head, r.n = (r.head+k)%r.size, r.n-k
}
