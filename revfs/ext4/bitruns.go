package ext4

import (
	"encoding/binary"
	"math/bits"
)

// bitRuns calls fn(lo, hi) for every run [lo, hi) of set bits among bits
// [0, limit) of a bit string read 64 bits at a time by word: bit i is bit
// i%64 of word(i/64), as in an ext4 bitmap read little-endian. The block
// bitmaps are scanned this way both when the host frees blocks
// (applyBitmap) and when the engine opens (forgetFreeBlocks): a whole word
// of equal bits costs one step.
func bitRuns(limit uint64, word func(w uint64) uint64, fn func(lo, hi uint64)) {
	run := limit // start of the current run, limit when there is none
	for base := uint64(0); base < limit; base += 64 {
		x := word(base / 64)
		if n := limit - base; n < 64 {
			x &= 1<<n - 1
		}
		for b := uint64(0); b < 64; {
			if x>>b&1 == 1 {
				if run == limit {
					run = base + b
				}
				b += uint64(bits.TrailingZeros64(^(x >> b))) // the ones from b on
				continue
			}
			if run < limit {
				fn(run, base+b)
				run = limit
			}
			if x>>b == 0 {
				break // no set bit left in this word
			}
			b += uint64(bits.TrailingZeros64(x >> b)) // the zeroes from b on
		}
	}
	if run < limit {
		fn(run, limit)
	}
}

// word64 returns the w-th little-endian 64-bit word of b, zeroes past its end.
func word64(b []byte, w uint64) uint64 {
	at := w * 8
	if at+8 <= uint64(len(b)) {
		return binary.LittleEndian.Uint64(b[at:])
	}
	var tail [8]byte
	if at < uint64(len(b)) {
		copy(tail[:], b[at:])
	}
	return binary.LittleEndian.Uint64(tail[:])
}
