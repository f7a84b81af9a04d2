package lab

import (
	"fmt"
	"hash/fnv"
)

// GuestSeed is the seed of the pattern the lab's guest programs send
// (lab/prog/vsock.c, lab/prog/netbench.c).
const GuestSeed = 2463534242

// Pattern returns n bytes of the lab's stream pattern: xorshift32 from
// seed, the low byte of each step.
func Pattern(seed uint32, n int) []byte {
	b := make([]byte, n)
	x := seed
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// Sum is the 64-bit FNV-1a of b as the lab's programs print it: 16 hex
// digits.
func Sum(b []byte) string {
	h := fnv.New64a()
	h.Write(b)
	return fmt.Sprintf("%016x", h.Sum64())
}
