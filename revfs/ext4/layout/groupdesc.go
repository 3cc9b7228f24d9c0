package layout

// Group descriptor sizes and flags.
const (
	GroupDescSize32 = 32 // without the 64bit feature
	GroupDescSize64 = 64
	gdChecksumOff   = 0x1E

	GroupInodeUninit = 0x1 // EXT4_BG_INODE_UNINIT: inode table and bitmap not initialised
	GroupBlockUninit = 0x2 // EXT4_BG_BLOCK_UNINIT: block bitmap not initialised
	GroupInodeZeroed = 0x4 // EXT4_BG_INODE_ZEROED: inode table zeroed
)

// GroupDesc mirrors struct ext4_group_desc (fs/ext4/ext4.h) in its 64-byte
// form; a 32-byte descriptor decodes with the _hi half left zero.
type GroupDesc struct {
	BlockBitmapLo     uint32
	InodeBitmapLo     uint32
	InodeTableLo      uint32
	FreeBlocksLo      uint16
	FreeInodesLo      uint16
	UsedDirsLo        uint16
	Flags             uint16
	ExcludeBitmapLo   uint32
	BlockBitmapCsumLo uint16
	InodeBitmapCsumLo uint16
	ItableUnusedLo    uint16
	Checksum          uint16
	BlockBitmapHi     uint32
	InodeBitmapHi     uint32
	InodeTableHi      uint32
	FreeBlocksHi      uint16
	FreeInodesHi      uint16
	UsedDirsHi        uint16
	ItableUnusedHi    uint16
	ExcludeBitmapHi   uint32
	BlockBitmapCsumHi uint16
	InodeBitmapCsumHi uint16
	_                 uint32
}

// ParseGroupDesc decodes one descriptor of descSize bytes (32, or
// s_desc_size >= 64 with the 64bit feature; bytes past 64 are reserved).
func ParseGroupDesc(b []byte, descSize int) (*GroupDesc, error) {
	if descSize != GroupDescSize32 && descSize < GroupDescSize64 {
		return nil, formatErr(0, "group descriptor", ErrCorrupt, "descriptor size %d", descSize)
	}
	if len(b) < descSize {
		return nil, formatErr(0, "group descriptor", ErrShort, "need %d bytes, have %d", descSize, len(b))
	}
	var buf [GroupDescSize64]byte
	copy(buf[:], b[:min(descSize, GroupDescSize64)])
	gd := new(GroupDesc)
	gd.decode(&buf)
	return gd, nil
}

// decode fills gd field by field. Descriptors are decoded on every journal
// commit that carries a descriptor block (a block holds up to 128 of them):
// encoding/binary's reflection made that a visible share of the engine's
// time.
func (gd *GroupDesc) decode(b *[GroupDescSize64]byte) {
	*gd = GroupDesc{
		BlockBitmapLo:     le.Uint32(b[0x00:]),
		InodeBitmapLo:     le.Uint32(b[0x04:]),
		InodeTableLo:      le.Uint32(b[0x08:]),
		FreeBlocksLo:      le.Uint16(b[0x0C:]),
		FreeInodesLo:      le.Uint16(b[0x0E:]),
		UsedDirsLo:        le.Uint16(b[0x10:]),
		Flags:             le.Uint16(b[0x12:]),
		ExcludeBitmapLo:   le.Uint32(b[0x14:]),
		BlockBitmapCsumLo: le.Uint16(b[0x18:]),
		InodeBitmapCsumLo: le.Uint16(b[0x1A:]),
		ItableUnusedLo:    le.Uint16(b[0x1C:]),
		Checksum:          le.Uint16(b[0x1E:]),
		BlockBitmapHi:     le.Uint32(b[0x20:]),
		InodeBitmapHi:     le.Uint32(b[0x24:]),
		InodeTableHi:      le.Uint32(b[0x28:]),
		FreeBlocksHi:      le.Uint16(b[0x2C:]),
		FreeInodesHi:      le.Uint16(b[0x2E:]),
		UsedDirsHi:        le.Uint16(b[0x30:]),
		ItableUnusedHi:    le.Uint16(b[0x32:]),
		ExcludeBitmapHi:   le.Uint32(b[0x34:]),
		BlockBitmapCsumHi: le.Uint16(b[0x38:]),
		InodeBitmapCsumHi: le.Uint16(b[0x3A:]),
	}
}

// BlockBitmap joins bg_block_bitmap_lo/hi.
func (gd *GroupDesc) BlockBitmap() uint64 {
	return uint64(gd.BlockBitmapHi)<<32 | uint64(gd.BlockBitmapLo)
}

// InodeBitmap joins bg_inode_bitmap_lo/hi.
func (gd *GroupDesc) InodeBitmap() uint64 {
	return uint64(gd.InodeBitmapHi)<<32 | uint64(gd.InodeBitmapLo)
}

// InodeTable joins bg_inode_table_lo/hi.
func (gd *GroupDesc) InodeTable() uint64 {
	return uint64(gd.InodeTableHi)<<32 | uint64(gd.InodeTableLo)
}

// ItableUnused joins bg_itable_unused_lo/hi.
func (gd *GroupDesc) ItableUnused() uint32 {
	return uint32(gd.ItableUnusedHi)<<16 | uint32(gd.ItableUnusedLo)
}

// FreeBlocks joins bg_free_blocks_count_lo/hi.
func (gd *GroupDesc) FreeBlocks() uint32 {
	return uint32(gd.FreeBlocksHi)<<16 | uint32(gd.FreeBlocksLo)
}
