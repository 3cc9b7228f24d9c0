package sha256x16

import (
	"encoding/binary"
	"math/bits"
)

// blocksGeneric is blocks in plain Go, one lane after another (FIPS 180-4
// §6.2.2): the reference the kernel is tested against, and what runs where
// there is no kernel. Lane i reads segs[i] (at least 64 bytes, or 64·n
// when strides[i] is 64).
func blocksGeneric(state *[8][Lanes]uint32, segs *[Lanes][]byte, strides *[Lanes]uintptr, n int) {
	for lane := range Lanes {
		p := segs[lane]
		for range n {
			var w [64]uint32
			for t := range 16 {
				w[t] = binary.BigEndian.Uint32(p[4*t:])
			}
			for t := 16; t < 64; t++ {
				s0 := bits.RotateLeft32(w[t-15], -7) ^ bits.RotateLeft32(w[t-15], -18) ^ w[t-15]>>3
				s1 := bits.RotateLeft32(w[t-2], -17) ^ bits.RotateLeft32(w[t-2], -19) ^ w[t-2]>>10
				w[t] = s1 + w[t-7] + s0 + w[t-16]
			}
			a, b, c, d := state[0][lane], state[1][lane], state[2][lane], state[3][lane]
			e, f, g, h := state[4][lane], state[5][lane], state[6][lane], state[7][lane]
			for t := range 64 {
				t1 := h + (bits.RotateLeft32(e, -6) ^ bits.RotateLeft32(e, -11) ^ bits.RotateLeft32(e, -25)) + (e&f ^ ^e&g) + k[t] + w[t]
				t2 := (bits.RotateLeft32(a, -2) ^ bits.RotateLeft32(a, -13) ^ bits.RotateLeft32(a, -22)) + (a&b ^ a&c ^ b&c)
				h, g, f, e, d, c, b, a = g, f, e, d+t1, c, b, a, t1+t2
			}
			state[0][lane] += a
			state[1][lane] += b
			state[2][lane] += c
			state[3][lane] += d
			state[4][lane] += e
			state[5][lane] += f
			state[6][lane] += g
			state[7][lane] += h
			p = p[strides[lane]:]
		}
	}
}
