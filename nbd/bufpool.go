package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come from power-of-two size classes between 4 KiB and
// HardMaxPayload, each with its own sync.Pool, so steady traffic reuses
// buffers instead of allocating one per request.
const (
	minBufShift = 12
	maxBufShift = 25 // HardMaxPayload
	numClasses  = maxBufShift - minBufShift + 1
)

type buffer struct {
	b     []byte
	class uint8
}

var bufPools [numClasses]sync.Pool

func classFor(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuffer returns a buffer of length n (n ≤ HardMaxPayload).
func getBuffer(n int) *buffer {
	c := classFor(n)
	if v := bufPools[c].Get(); v != nil {
		b := v.(*buffer)
		b.b = b.b[:n]
		return b
	}
	return &buffer{b: make([]byte, n, 1<<(c+minBufShift)), class: uint8(c)}
}

func putBuffer(b *buffer) {
	if b != nil {
		bufPools[b.class].Put(b)
	}
}
