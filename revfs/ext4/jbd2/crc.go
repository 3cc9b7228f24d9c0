package jbd2

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// zeroBlock is the largest journal block's worth of zero bytes
// (dataChecksumBase runs crc32c over them).
var zeroBlock [65536]byte

// BlockSum is the part of a journalled copy's v2/v3 checksum that depends
// on its contents alone: crc32c(0, b) (see dataChecksumBase).
func BlockSum(b []byte) uint32 { return crc32c(0, b) }

// crc32c is the kernel's crc32c(seed, data): CRC-32C with neither the
// initial nor the final inversion that hash/crc32 applies, so the result can
// seed the next call the way jbd2_chksum chains them.
func crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}

// crc32BETable drives crc32Be, the kernel's crc32_be: CRC-32 polynomial
// 0x04C11DB7 processed most-significant bit first, no inversions. Only
// checksum v1 (FeatureCompatChecksum) commit blocks use it.
var crc32BETable = func() (t [256]uint32) {
	const poly = 0x04C11DB7
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ poly
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func crc32Be(crc uint32, p []byte) uint32 {
	for _, b := range p {
		crc = crc<<8 ^ crc32BETable[byte(crc>>24)^b]
	}
	return crc
}
