package sha256x16

import (
	"encoding/binary"
	"math/bits"
)

var k = [64]uint32{
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

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
