package ext4

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// bitRuns finds the same runs as a bit-by-bit walk, on random bit strings
// (sparse, dense, and in long runs) cut at every kind of limit.
func TestBitRunsAgreesWithModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 3000; trial++ {
		b := make([]byte, 8*(1+rng.IntN(6)))
		switch trial % 3 {
		case 0:
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
		case 1: // long runs: whole words of ones or zeroes
			for i := 0; i < len(b); i += 8 {
				if rng.IntN(2) == 0 {
					for j := i; j < i+8; j++ {
						b[j] = 0xff
					}
				}
			}
		default: // a few bits
			for range 3 {
				i := rng.IntN(len(b) * 8)
				b[i/8] |= 1 << (i % 8)
			}
		}
		limit := uint64(rng.IntN(len(b)*8 + 1))
		var want [][2]uint64
		lo := limit
		for i := uint64(0); i < limit; i++ {
			set := b[i/8]&(1<<(i%8)) != 0
			if set && lo == limit {
				lo = i
			}
			if !set && lo < limit {
				want = append(want, [2]uint64{lo, i})
				lo = limit
			}
		}
		if lo < limit {
			want = append(want, [2]uint64{lo, limit})
		}
		var got [][2]uint64
		bitRuns(limit, func(w uint64) uint64 { return word64(b, w) }, func(lo, hi uint64) { got = append(got, [2]uint64{lo, hi}) })
		if !slices.Equal(got, want) {
			t.Fatalf("bits %x, limit %d: runs %v, want %v", b, limit, got, want)
		}
	}
}
