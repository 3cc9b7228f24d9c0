package layout

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Crc32c is the kernel's crc32c_le(seed, p): the raw CRC without the final
// inversion that hash/crc32 applies, which is what ext4_chksum computes.
func Crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}

func le32(v uint32) []byte { return le.AppendUint32(nil, v) }

// ChecksumSeed is the filesystem-wide seed of every metadata checksum:
// s_checksum_seed with the csum_seed feature, else crc32c(~0, uuid).
func (sb *SuperBlock) ChecksumSeed() uint32 {
	if sb.FeatureIncompat&IncompatCsumSeed != 0 {
		return sb.ChecksumSeedField
	}
	return Crc32c(^uint32(0), sb.UUID[:])
}

// InodeSeed is the per-inode seed used by the inode, extent-block and
// directory-block checksums: crc32c(crc32c(fsSeed, inum), generation).
func InodeSeed(fsSeed uint32, ino uint32, generation uint32) uint32 {
	return Crc32c(Crc32c(fsSeed, le32(ino)), le32(generation))
}

// SuperBlockChecksum computes s_checksum over a raw 1024-byte superblock.
func SuperBlockChecksum(raw []byte) uint32 {
	return Crc32c(^uint32(0), raw[:sbChecksumOff])
}

// GroupDescChecksum computes bg_checksum (metadata_csum flavour) over a raw
// descriptor of descSize bytes for group g.
func GroupDescChecksum(fsSeed uint32, g uint32, raw []byte) uint16 {
	c := Crc32c(fsSeed, le32(g))
	c = Crc32c(c, raw[:gdChecksumOff])
	c = Crc32c(c, []byte{0, 0})
	c = Crc32c(c, raw[gdChecksumOff+2:])
	return uint16(c)
}

// InodeChecksum computes the 32-bit inode checksum over a raw inode record
// of the filesystem's inode size. Callers compare the low 16 bits only when
// the inode has no i_checksum_hi (extra_isize < 4).
func InodeChecksum(fsSeed uint32, ino uint32, raw []byte) uint32 {
	gen := uint32(0)
	if len(raw) >= 0x68 {
		gen = le.Uint32(raw[0x64:])
	}
	c := InodeSeed(fsSeed, ino, gen)
	zero := []byte{0, 0}
	c = Crc32c(c, raw[:inodeChecksumLoOff])
	c = Crc32c(c, zero)
	c = Crc32c(c, raw[inodeChecksumLoOff+2:InodeGoodOldSize])
	if len(raw) >= inodeChecksumHiOff+2 {
		extra := int(le.Uint16(raw[InodeGoodOldSize:]))
		c = Crc32c(c, raw[InodeGoodOldSize:inodeChecksumHiOff])
		if extra >= 4 {
			c = Crc32c(c, zero)
			c = Crc32c(c, raw[inodeChecksumHiOff+2:])
		} else {
			c = Crc32c(c, raw[inodeChecksumHiOff:])
		}
	}
	return c
}

// VerifyInodeChecksum reports whether the stored checksum of a raw inode
// record matches.
func VerifyInodeChecksum(fsSeed uint32, ino uint32, raw []byte) bool {
	if len(raw) < InodeGoodOldSize {
		return false
	}
	c := InodeChecksum(fsSeed, ino, raw)
	lo := le.Uint16(raw[inodeChecksumLoOff:])
	if len(raw) >= inodeChecksumHiOff+2 && le.Uint16(raw[InodeGoodOldSize:]) >= 4 {
		hi := le.Uint16(raw[inodeChecksumHiOff:])
		return uint32(hi)<<16|uint32(lo) == c
	}
	return lo == uint16(c)
}

// TailChecksum computes the crc32c of an extent tree block or a directory
// leaf block: crc32c(inodeSeed, block[:n]) where n is where the tail starts.
func TailChecksum(inodeSeed uint32, block []byte, n int) uint32 {
	return Crc32c(inodeSeed, block[:n])
}
