package layout

import "github.com/indelible-worm/indelible/internal/bitnames"

// CompatFeature is s_feature_compat.
type CompatFeature uint32

// IncompatFeature is s_feature_incompat.
type IncompatFeature uint32

// ROCompatFeature is s_feature_ro_compat.
type ROCompatFeature uint32

// MountOpts is s_default_mount_opts.
type MountOpts uint32

// Compatible features (EXT4_FEATURE_COMPAT_*).
const (
	CompatDirPrealloc   CompatFeature = 0x1
	CompatImagicInodes  CompatFeature = 0x2
	CompatHasJournal    CompatFeature = 0x4
	CompatExtAttr       CompatFeature = 0x8
	CompatResizeInode   CompatFeature = 0x10
	CompatDirIndex      CompatFeature = 0x20
	CompatLazyBG        CompatFeature = 0x40
	CompatExcludeBitmap CompatFeature = 0x100
	CompatSparseSuper2  CompatFeature = 0x200
	CompatFastCommit    CompatFeature = 0x400
	CompatStableInodes  CompatFeature = 0x800
	CompatOrphanFile    CompatFeature = 0x1000
)

// Incompatible features (EXT4_FEATURE_INCOMPAT_*).
const (
	IncompatCompression IncompatFeature = 0x1
	IncompatFiletype    IncompatFeature = 0x2
	IncompatRecover     IncompatFeature = 0x4
	IncompatJournalDev  IncompatFeature = 0x8
	IncompatMetaBG      IncompatFeature = 0x10
	IncompatExtents     IncompatFeature = 0x40
	Incompat64Bit       IncompatFeature = 0x80
	IncompatMMP         IncompatFeature = 0x100
	IncompatFlexBG      IncompatFeature = 0x200
	IncompatEAInode     IncompatFeature = 0x400
	IncompatDirData     IncompatFeature = 0x1000
	IncompatCsumSeed    IncompatFeature = 0x2000
	IncompatLargeDir    IncompatFeature = 0x4000
	IncompatInlineData  IncompatFeature = 0x8000
	IncompatEncrypt     IncompatFeature = 0x10000
	IncompatCasefold    IncompatFeature = 0x20000

	incompatKnown = IncompatCompression | IncompatFiletype | IncompatRecover | IncompatJournalDev |
		IncompatMetaBG | IncompatExtents | Incompat64Bit | IncompatMMP | IncompatFlexBG |
		IncompatEAInode | IncompatDirData | IncompatCsumSeed | IncompatLargeDir |
		IncompatInlineData | IncompatEncrypt | IncompatCasefold
)

// Read-only compatible features (EXT4_FEATURE_RO_COMPAT_*).
const (
	ROCompatSparseSuper   ROCompatFeature = 0x1
	ROCompatLargeFile     ROCompatFeature = 0x2
	ROCompatBtreeDir      ROCompatFeature = 0x4
	ROCompatHugeFile      ROCompatFeature = 0x8
	ROCompatGDTCsum       ROCompatFeature = 0x10
	ROCompatDirNlink      ROCompatFeature = 0x20
	ROCompatExtraIsize    ROCompatFeature = 0x40
	ROCompatHasSnapshot   ROCompatFeature = 0x80
	ROCompatQuota         ROCompatFeature = 0x100
	ROCompatBigalloc      ROCompatFeature = 0x200
	ROCompatMetadataCsum  ROCompatFeature = 0x400
	ROCompatReplica       ROCompatFeature = 0x800
	ROCompatReadonly      ROCompatFeature = 0x1000
	ROCompatProject       ROCompatFeature = 0x2000
	ROCompatSharedBlocks  ROCompatFeature = 0x4000
	ROCompatVerity        ROCompatFeature = 0x8000
	ROCompatOrphanPresent ROCompatFeature = 0x10000

	roCompatKnown = ROCompatSparseSuper | ROCompatLargeFile | ROCompatBtreeDir | ROCompatHugeFile |
		ROCompatGDTCsum | ROCompatDirNlink | ROCompatExtraIsize | ROCompatHasSnapshot |
		ROCompatQuota | ROCompatBigalloc | ROCompatMetadataCsum | ROCompatReplica |
		ROCompatReadonly | ROCompatProject | ROCompatSharedBlocks | ROCompatVerity |
		ROCompatOrphanPresent
)

// Default mount options (EXT4_DEFM_*) that matter to the engine.
const (
	DefmJModeMask      MountOpts = 0x60
	DefmJModeData      MountOpts = 0x20
	DefmJModeOrdered   MountOpts = 0x40
	DefmJModeWriteback MountOpts = 0x60
	DefmNoDelalloc     MountOpts = 0x800
)

var compatNames = []bitnames.Name{
	{0x1, "dir_prealloc"}, {0x2, "imagic_inodes"}, {0x4, "has_journal"}, {0x8, "ext_attr"},
	{0x10, "resize_inode"}, {0x20, "dir_index"}, {0x40, "lazy_bg"}, {0x100, "exclude_bitmap"},
	{0x200, "sparse_super2"}, {0x400, "fast_commit"}, {0x800, "stable_inodes"}, {0x1000, "orphan_file"},
}

var incompatNames = []bitnames.Name{
	{0x1, "compression"}, {0x2, "filetype"}, {0x4, "needs_recovery"}, {0x8, "journal_dev"},
	{0x10, "meta_bg"}, {0x40, "extent"}, {0x80, "64bit"}, {0x100, "mmp"}, {0x200, "flex_bg"},
	{0x400, "ea_inode"}, {0x1000, "dirdata"}, {0x2000, "metadata_csum_seed"}, {0x4000, "large_dir"},
	{0x8000, "inline_data"}, {0x10000, "encrypt"}, {0x20000, "casefold"},
}

var roCompatNames = []bitnames.Name{
	{0x1, "sparse_super"}, {0x2, "large_file"}, {0x4, "btree_dir"}, {0x8, "huge_file"},
	{0x10, "uninit_bg"}, {0x20, "dir_nlink"}, {0x40, "extra_isize"}, {0x80, "snapshot"},
	{0x100, "quota"}, {0x200, "bigalloc"}, {0x400, "metadata_csum"}, {0x800, "replica"},
	{0x1000, "read-only"}, {0x2000, "project"}, {0x4000, "shared_blocks"}, {0x8000, "verity"},
	{0x10000, "orphan_present"},
}

var mountOptNames = []bitnames.Name{
	{0x1, "debug"}, {0x2, "bsdgroups"}, {0x4, "user_xattr"}, {0x8, "acl"}, {0x10, "uid16"},
	{0x100, "nobarrier"}, {0x200, "block_validity"}, {0x400, "discard"}, {0x800, "nodelalloc"},
}

func (f CompatFeature) String() string   { return bitnames.Format(uint32(f), compatNames) }
func (f IncompatFeature) String() string { return bitnames.Format(uint32(f), incompatNames) }
func (f ROCompatFeature) String() string { return bitnames.Format(uint32(f), roCompatNames) }

func (m MountOpts) String() string {
	s := bitnames.Format(uint32(m&^DefmJModeMask), mountOptNames)
	j := map[MountOpts]string{DefmJModeData: "journal_data", DefmJModeOrdered: "journal_data_ordered", DefmJModeWriteback: "journal_data_writeback"}[m&DefmJModeMask]
	switch {
	case j == "":
		return s
	case s == "0":
		return j
	}
	return s + "|" + j
}
