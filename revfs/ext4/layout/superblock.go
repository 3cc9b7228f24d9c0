package layout

import (
	"fmt"
	"strings"
)

// Superblock location and identity.
const (
	SuperBlockOffset = 1024 // byte offset of the primary superblock
	SuperBlockSize   = 1024
	SuperBlockMagic  = 0xEF53
	sbChecksumOff    = 0x3FC

	// MinLogBlockSize and MaxLogBlockSize bound s_log_block_size: ext4
	// supports blocks of 1 KiB to 64 KiB.
	MaxLogBlockSize = 6
)

// SuperBlock mirrors struct ext4_super_block (fs/ext4/ext4.h), 1024 bytes.
type SuperBlock struct {
	InodesCount       uint32
	BlocksCountLo     uint32
	RBlocksCountLo    uint32
	FreeBlocksCountLo uint32
	FreeInodesCount   uint32
	FirstDataBlock    uint32
	LogBlockSize      uint32
	LogClusterSize    uint32
	BlocksPerGroup    uint32
	ClustersPerGroup  uint32
	InodesPerGroup    uint32
	Mtime             uint32
	Wtime             uint32
	MntCount          uint16
	MaxMntCount       uint16
	Magic             uint16
	State             uint16
	Errors            uint16
	MinorRevLevel     uint16
	LastCheck         uint32
	CheckInterval     uint32
	CreatorOS         uint32
	RevLevel          uint32
	DefResUID         uint16
	DefResGID         uint16
	FirstIno          uint32
	InodeSize         uint16
	BlockGroupNr      uint16
	FeatureCompat     CompatFeature
	FeatureIncompat   IncompatFeature
	FeatureROCompat   ROCompatFeature
	UUID              [16]byte
	VolumeName        [16]byte
	LastMounted       [64]byte
	AlgorithmUsage    uint32
	PreallocBlocks    uint8
	PreallocDirBlocks uint8
	ReservedGDTBlocks uint16
	JournalUUID       [16]byte
	JournalInum       uint32
	JournalDev        uint32
	LastOrphan        uint32
	HashSeed          [4]uint32
	DefHashVersion    uint8
	JnlBackupType     uint8
	DescSize          uint16
	DefaultMountOpts  MountOpts
	FirstMetaBG       uint32
	MkfsTime          uint32
	JnlBlocks         [17]uint32
	BlocksCountHi     uint32
	RBlocksCountHi    uint32
	FreeBlocksCountHi uint32
	MinExtraIsize     uint16
	WantExtraIsize    uint16
	Flags             uint32
	RaidStride        uint16
	MMPInterval       uint16
	MMPBlock          uint64
	RaidStripeWidth   uint32
	LogGroupsPerFlex  uint8
	ChecksumType      uint8
	EncryptionLevel   uint8
	_                 uint8
	KBytesWritten     uint64
	SnapshotInum      uint32
	SnapshotID        uint32
	SnapshotRBlocks   uint64
	SnapshotList      uint32
	ErrorCount        uint32
	FirstErrorTime    uint32
	FirstErrorIno     uint32
	FirstErrorBlock   uint64
	FirstErrorFunc    [32]byte
	FirstErrorLine    uint32
	LastErrorTime     uint32
	LastErrorIno      uint32
	LastErrorLine     uint32
	LastErrorBlock    uint64
	LastErrorFunc     [32]byte
	MountOpts         [64]byte
	UsrQuotaInum      uint32
	GrpQuotaInum      uint32
	OverheadClusters  uint32
	BackupBGs         [2]uint32
	EncryptAlgos      [4]uint8
	EncryptPwSalt     [16]byte
	LpfIno            uint32
	PrjQuotaInum      uint32
	ChecksumSeedField uint32 // s_checksum_seed
	TimeHi            [6]uint8
	FirstErrorErrcode uint8
	LastErrorErrcode  uint8
	Encoding          uint16
	EncodingFlags     uint16
	OrphanFileInum    uint32
	_                 [94]uint32
	Checksum          uint32
}

// ParseSuperBlock decodes the 1024 bytes of a superblock (the bytes at
// image offset 1024) and checks what every later computation relies on:
// the magic, a sane block size and group geometry. It does not check
// features; see (*SuperBlock).Supported.
func ParseSuperBlock(b []byte) (*SuperBlock, error) {
	sb := new(SuperBlock)
	if err := decode(b, sb, 0, "superblock"); err != nil {
		return nil, err
	}
	if sb.Magic != SuperBlockMagic {
		return nil, formatErr(0x38, "superblock", ErrBadMagic, "magic %#04x, want %#04x", sb.Magic, SuperBlockMagic)
	}
	if sb.LogBlockSize > MaxLogBlockSize {
		return nil, formatErr(0x18, "superblock", ErrCorrupt, "s_log_block_size %d (blocks over 64 KiB)", sb.LogBlockSize)
	}
	bs := sb.BlockSize()
	// A group's block bitmap is one block of bits; with bigalloc each bit
	// is a cluster of 2^(log_cluster-log_block) blocks.
	perGroupMax := uint64(8*bs) << min(sb.LogClusterSize-min(sb.LogClusterSize, sb.LogBlockSize), 16)
	if sb.BlocksPerGroup == 0 || uint64(sb.BlocksPerGroup) > perGroupMax {
		return nil, formatErr(0x20, "superblock", ErrCorrupt, "s_blocks_per_group %d (block size %d)", sb.BlocksPerGroup, bs)
	}
	if sb.InodesPerGroup == 0 || sb.InodesPerGroup > uint32(8*bs) {
		return nil, formatErr(0x28, "superblock", ErrCorrupt, "s_inodes_per_group %d", sb.InodesPerGroup)
	}
	is := sb.InodeSizeBytes()
	if is < InodeGoodOldSize || is > bs || is&(is-1) != 0 {
		return nil, formatErr(0x58, "superblock", ErrCorrupt, "s_inode_size %d", is)
	}
	ds := sb.DescSizeBytes()
	if ds < GroupDescSize32 || ds > 1024 || ds&(ds-1) != 0 {
		return nil, formatErr(0xFE, "superblock", ErrCorrupt, "s_desc_size %d", ds)
	}
	if sb.BlocksCount() == 0 || uint64(sb.FirstDataBlock) >= sb.BlocksCount() {
		return nil, formatErr(0x4, "superblock", ErrCorrupt, "blocks count %d, first data block %d", sb.BlocksCount(), sb.FirstDataBlock)
	}
	// Extents address 48-bit block numbers; past that, and near 2^64, the
	// group arithmetic below would wrap.
	if sb.BlocksCount() > MaxBlocks {
		return nil, formatErr(0x4, "superblock", ErrCorrupt, "blocks count %d (over 2^48)", sb.BlocksCount())
	}
	// The superblock lives in block 1 with 1 KiB blocks and in block 0
	// otherwise, and the kernel looks for the descriptor table right after
	// it whatever s_first_data_block says. mke2fs sets 1 with 1 KiB blocks
	// (0 only with bigalloc, which the kernel requires) and 0 otherwise; any
	// other value would put the table where the engine does not look.
	switch {
	case sb.FirstDataBlock > 1,
		bs > 1024 && sb.FirstDataBlock != 0,
		bs == 1024 && sb.FirstDataBlock == 0 && sb.LogClusterSize <= sb.LogBlockSize:
		return nil, formatErr(0x14, "superblock", ErrCorrupt, "s_first_data_block %d with %d-byte blocks", sb.FirstDataBlock, bs)
	}
	// s_inodes_count is per-group times groups; a mismatch means a corrupt
	// or hand-made superblock whose inode numbers cannot be located.
	if uint64(sb.InodesCount) != uint64(sb.InodesPerGroup)*sb.GroupCount() {
		return nil, formatErr(0x0, "superblock", ErrCorrupt, "s_inodes_count %d != %d groups x %d", sb.InodesCount, sb.GroupCount(), sb.InodesPerGroup)
	}
	return sb, nil
}

// MaxBlocks is the most blocks a filesystem may count: extents address
// 48-bit block numbers.
const MaxBlocks = 1 << 48

// BlockSize is the filesystem block size in bytes.
func (sb *SuperBlock) BlockSize() int { return 1024 << sb.LogBlockSize }

// BlocksCount joins s_blocks_count_lo/hi (hi only with the 64bit feature).
func (sb *SuperBlock) BlocksCount() uint64 {
	n := uint64(sb.BlocksCountLo)
	if sb.FeatureIncompat&Incompat64Bit != 0 {
		n |= uint64(sb.BlocksCountHi) << 32
	}
	return n
}

// FreeBlocksCount joins s_free_blocks_count_lo/hi.
func (sb *SuperBlock) FreeBlocksCount() uint64 {
	n := uint64(sb.FreeBlocksCountLo)
	if sb.FeatureIncompat&Incompat64Bit != 0 {
		n |= uint64(sb.FreeBlocksCountHi) << 32
	}
	return n
}

// GroupCount is the number of block groups.
func (sb *SuperBlock) GroupCount() uint64 {
	data := sb.BlocksCount() - uint64(sb.FirstDataBlock)
	return (data + uint64(sb.BlocksPerGroup) - 1) / uint64(sb.BlocksPerGroup)
}

// InodeSizeBytes is the on-disk inode record size (128 on revision 0).
func (sb *SuperBlock) InodeSizeBytes() int {
	if sb.RevLevel == 0 {
		return InodeGoodOldSize
	}
	return int(sb.InodeSize)
}

// DescSizeBytes is the group descriptor size: s_desc_size with 64bit, else 32.
func (sb *SuperBlock) DescSizeBytes() int {
	if sb.FeatureIncompat&Incompat64Bit != 0 && sb.DescSize != 0 {
		return int(sb.DescSize)
	}
	return GroupDescSize32
}

// GroupDescBlock is the first block of the group descriptor table.
func (sb *SuperBlock) GroupDescBlock() uint64 { return uint64(sb.FirstDataBlock) + 1 }

// GroupDescBlocks is the number of blocks of the group descriptor table.
func (sb *SuperBlock) GroupDescBlocks() uint64 {
	per := uint64(sb.BlockSize() / sb.DescSizeBytes())
	return (sb.GroupCount() + per - 1) / per
}

// HasMetadataCsum reports whether crc32c metadata checksums are on.
func (sb *SuperBlock) HasMetadataCsum() bool {
	return sb.FeatureROCompat&ROCompatMetadataCsum != 0
}

// VerifyChecksum reports whether s_checksum matches raw (the superblock's
// 1024 bytes); it is true when metadata_csum is off.
func (sb *SuperBlock) VerifyChecksum(raw []byte) bool {
	if !sb.HasMetadataCsum() {
		return true
	}
	return len(raw) >= SuperBlockSize && SuperBlockChecksum(raw) == le.Uint32(raw[sbChecksumOff:])
}

// Supported returns nil when the engine can follow every change the kernel
// makes to this filesystem, or an error wrapping ErrUnsupported that names
// the feature and why it is refused.
func (sb *SuperBlock) Supported() error {
	type reason struct {
		bit uint32
		why string
	}
	incompat := []reason{
		{uint32(IncompatCompression), "compressed files cannot be followed block by block"},
		{uint32(IncompatJournalDev), "this is an external journal device, not a filesystem"},
		{uint32(IncompatMetaBG), "meta_bg scatters group descriptors over the disk; the engine only watches the contiguous table"},
		{uint32(IncompatDirData), "dirdata entries carry extra data the directory parser does not understand"},
		{uint32(IncompatInlineData), "inline_data keeps small files inside the inode, outside any data block"},
		{uint32(IncompatEncrypt), "encrypted files cannot be sealed as plain logs"},
		{uint32(IncompatCasefold), "casefolded directories find names whatever their case, by a hash of the folded name; the engine follows names byte for byte"},
	}
	for _, r := range incompat {
		if uint32(sb.FeatureIncompat)&r.bit != 0 {
			return fmt.Errorf("%w: %s: %s", ErrUnsupported, IncompatFeature(r.bit), r.why)
		}
	}
	if unknown := sb.FeatureIncompat &^ incompatKnown; unknown != 0 {
		return fmt.Errorf("%w: unknown incompatible feature bits %#x", ErrUnsupported, uint32(unknown))
	}
	if sb.FeatureIncompat&IncompatExtents == 0 {
		return fmt.Errorf("%w: extents is off: block-mapped files (ext2/ext3 style) are not followed", ErrUnsupported)
	}
	ro := []reason{
		{uint32(ROCompatBigalloc), "bigalloc allocates clusters, not blocks, so block bitmaps and extents differ in unit"},
		{uint32(ROCompatHasSnapshot), "snapshots share blocks between inodes"},
		{uint32(ROCompatSharedBlocks), "shared (deduplicated) blocks may belong to several files"},
		{uint32(ROCompatReplica), "replicas are not understood"},
	}
	for _, r := range ro {
		if uint32(sb.FeatureROCompat)&r.bit != 0 {
			return fmt.Errorf("%w: %s: %s", ErrUnsupported, ROCompatFeature(r.bit), r.why)
		}
	}
	if unknown := sb.FeatureROCompat &^ roCompatKnown; unknown != 0 {
		return fmt.Errorf("%w: unknown read-only-compatible feature bits %#x", ErrUnsupported, uint32(unknown))
	}
	if sb.FeatureCompat&CompatHasJournal != 0 && sb.JournalInum == 0 {
		return fmt.Errorf("%w: external journal (s_journal_inum 0): its blocks never reach this device", ErrUnsupported)
	}
	if sb.LogClusterSize != sb.LogBlockSize {
		return fmt.Errorf("%w: cluster size differs from block size", ErrUnsupported)
	}
	// The engine keeps each group's block bitmap in memory: with mke2fs's
	// groups (one bitmap block of bits, 8 x block size blocks) that is an
	// eighth of a block per block; smaller groups (mke2fs -g) would make it
	// up to a whole block per block of the device.
	if groups := sb.GroupCount(); groups > 1 && uint64(sb.BlocksPerGroup) != uint64(8*sb.BlockSize()) {
		return fmt.Errorf("%w: %d blocks per group (mke2fs -g): the engine follows only the default of 8 x block size (%d)", ErrUnsupported, sb.BlocksPerGroup, 8*sb.BlockSize())
	}
	return nil
}

// Features lists every feature set in the superblock by name.
func (sb *SuperBlock) Features() []string {
	var out []string
	for _, s := range []string{sb.FeatureCompat.String(), sb.FeatureIncompat.String(), sb.FeatureROCompat.String()} {
		if s != "" && s != "0" {
			out = append(out, strings.Split(s, "|")...)
		}
	}
	return out
}

// JournalMode is the data journalling mode named by the default mount
// options (EXT4_DEFM_JMODE); "" when none is set (the kernel then uses
// ordered). The mount command line can still override it.
func (sb *SuperBlock) JournalMode() string {
	switch sb.DefaultMountOpts & DefmJModeMask {
	case DefmJModeData:
		return "journal"
	case DefmJModeOrdered:
		return "ordered"
	case DefmJModeWriteback:
		return "writeback"
	}
	return ""
}
