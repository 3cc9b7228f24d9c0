package layout

import "github.com/indelible-worm/indelible/internal/bitnames"

// Inode sizes and offsets.
const (
	InodeGoodOldSize   = 128 // EXT4_GOOD_OLD_INODE_SIZE: the base record
	InodeStructSize    = 160 // base record + the extra fields this package decodes
	inodeChecksumLoOff = 0x7C
	inodeChecksumHiOff = 0x82
	InodeBlockOff      = 0x28 // i_block: 60 bytes, the extent tree root
	InodeBlockLen      = 60

	RootIno = 2 // EXT4_ROOT_INO
)

// Inode mode file types (S_IFMT).
const (
	ModeTypeMask = 0xF000
	ModeFIFO     = 0x1000
	ModeChar     = 0x2000
	ModeDir      = 0x4000
	ModeBlock    = 0x6000
	ModeRegular  = 0x8000
	ModeSymlink  = 0xA000
	ModeSocket   = 0xC000
)

// InodeFlags is i_flags (EXT4_*_FL).
type InodeFlags uint32

// Inode flags.
const (
	InodeFlagSecRm       InodeFlags = 0x1
	InodeFlagUnRm        InodeFlags = 0x2
	InodeFlagCompr       InodeFlags = 0x4
	InodeFlagSync        InodeFlags = 0x8
	InodeFlagImmutable   InodeFlags = 0x10
	InodeFlagAppend      InodeFlags = 0x20
	InodeFlagNoDump      InodeFlags = 0x40
	InodeFlagNoAtime     InodeFlags = 0x80
	InodeFlagDirty       InodeFlags = 0x100
	InodeFlagComprBlk    InodeFlags = 0x200
	InodeFlagNoCompr     InodeFlags = 0x400
	InodeFlagEncrypt     InodeFlags = 0x800
	InodeFlagIndex       InodeFlags = 0x1000
	InodeFlagIMagic      InodeFlags = 0x2000
	InodeFlagJournalData InodeFlags = 0x4000
	InodeFlagNoTail      InodeFlags = 0x8000
	InodeFlagDirSync     InodeFlags = 0x10000
	InodeFlagTopDir      InodeFlags = 0x20000
	InodeFlagHugeFile    InodeFlags = 0x40000
	InodeFlagExtents     InodeFlags = 0x80000
	InodeFlagVerity      InodeFlags = 0x100000
	InodeFlagEAInode     InodeFlags = 0x200000
	InodeFlagEOFBlocks   InodeFlags = 0x400000 // no longer used by the kernel
	InodeFlagDAX         InodeFlags = 0x2000000
	InodeFlagInlineData  InodeFlags = 0x10000000
	InodeFlagProjInherit InodeFlags = 0x20000000
	InodeFlagCasefold    InodeFlags = 0x40000000
	InodeFlagReserved    InodeFlags = 0x80000000
)

var inodeFlagNames = []bitnames.Name{
	{0x1, "secrm"}, {0x2, "unrm"}, {0x4, "compr"}, {0x8, "sync"}, {0x10, "immutable"}, {0x20, "append"},
	{0x40, "nodump"}, {0x80, "noatime"}, {0x100, "dirty"}, {0x200, "comprblk"}, {0x400, "nocompr"},
	{0x800, "encrypt"}, {0x1000, "index"}, {0x2000, "imagic"}, {0x4000, "journal_data"},
	{0x8000, "notail"}, {0x10000, "dirsync"}, {0x20000, "topdir"}, {0x40000, "huge_file"},
	{0x80000, "extents"}, {0x100000, "verity"}, {0x200000, "ea_inode"}, {0x400000, "eofblocks"},
	{0x2000000, "dax"}, {0x10000000, "inline_data"}, {0x20000000, "projinherit"},
	{0x40000000, "casefold"}, {0x80000000, "reserved"},
}

func (f InodeFlags) String() string { return bitnames.Format(uint32(f), inodeFlagNames) }

// Inode mirrors struct ext4_inode (fs/ext4/ext4.h): the 128-byte base and
// the extra fields up to i_projid. The Linux osd1/osd2 unions are spelled out.
type Inode struct {
	Mode        uint16
	UID         uint16
	SizeLo      uint32
	Atime       uint32
	Ctime       uint32
	Mtime       uint32
	Dtime       uint32
	GID         uint16
	LinksCount  uint16
	BlocksLo    uint32
	Flags       InodeFlags
	Version     uint32
	Block       [InodeBlockLen]byte
	Generation  uint32
	FileACLLo   uint32
	SizeHigh    uint32
	ObsoFaddr   uint32
	BlocksHigh  uint16
	FileACLHigh uint16
	UIDHigh     uint16
	GIDHigh     uint16
	ChecksumLo  uint16
	_           uint16
	ExtraIsize  uint16
	ChecksumHi  uint16
	CtimeExtra  uint32
	MtimeExtra  uint32
	AtimeExtra  uint32
	Crtime      uint32
	CrtimeExtra uint32
	VersionHi   uint32
	ProjID      uint32
}

// ParseInode decodes an inode record of the filesystem's inode size (at
// least 128 bytes). Extra fields beyond i_extra_isize read as zero.
func ParseInode(b []byte) (*Inode, error) {
	if len(b) < InodeGoodOldSize {
		return nil, formatErr(0, "inode", ErrShort, "need %d bytes, have %d", InodeGoodOldSize, len(b))
	}
	var buf [InodeStructSize]byte
	copy(buf[:], b)
	if len(b) >= InodeGoodOldSize+2 {
		extra := int(le.Uint16(b[InodeGoodOldSize:]))
		if InodeGoodOldSize+extra > len(b) {
			return nil, formatErr(InodeGoodOldSize, "inode", ErrCorrupt, "i_extra_isize %d exceeds the %d-byte record", extra, len(b))
		}
		clear(buf[min(InodeGoodOldSize+extra, InodeStructSize):])
	} else {
		clear(buf[InodeGoodOldSize:])
	}
	in := new(Inode)
	in.decode(&buf)
	return in, nil
}

// decode fills in from a whole record, field by field: the engine parses
// an inode for every journalled inode-table block, and the reflection of
// encoding/binary cost more than the rest of the parse (TestInodeDecode
// holds it to binary.Decode's answer).
func (in *Inode) decode(b *[InodeStructSize]byte) {
	in.Mode = le.Uint16(b[0:])
	in.UID = le.Uint16(b[2:])
	in.SizeLo = le.Uint32(b[4:])
	in.Atime = le.Uint32(b[8:])
	in.Ctime = le.Uint32(b[12:])
	in.Mtime = le.Uint32(b[16:])
	in.Dtime = le.Uint32(b[20:])
	in.GID = le.Uint16(b[24:])
	in.LinksCount = le.Uint16(b[26:])
	in.BlocksLo = le.Uint32(b[28:])
	in.Flags = InodeFlags(le.Uint32(b[32:]))
	in.Version = le.Uint32(b[36:])
	copy(in.Block[:], b[40:40+InodeBlockLen])
	in.Generation = le.Uint32(b[100:])
	in.FileACLLo = le.Uint32(b[104:])
	in.SizeHigh = le.Uint32(b[108:])
	in.ObsoFaddr = le.Uint32(b[112:])
	in.BlocksHigh = le.Uint16(b[116:])
	in.FileACLHigh = le.Uint16(b[118:])
	in.UIDHigh = le.Uint16(b[120:])
	in.GIDHigh = le.Uint16(b[122:])
	in.ChecksumLo = le.Uint16(b[124:])
	// b[126:128] is l_i_reserved, not kept.
	in.ExtraIsize = le.Uint16(b[128:])
	in.ChecksumHi = le.Uint16(b[130:])
	in.CtimeExtra = le.Uint32(b[132:])
	in.MtimeExtra = le.Uint32(b[136:])
	in.AtimeExtra = le.Uint32(b[140:])
	in.Crtime = le.Uint32(b[144:])
	in.CrtimeExtra = le.Uint32(b[148:])
	in.VersionHi = le.Uint32(b[152:])
	in.ProjID = le.Uint32(b[156:])
}

// Size joins i_size_lo/i_size_high.
func (in *Inode) Size() uint64 { return uint64(in.SizeHigh)<<32 | uint64(in.SizeLo) }

// Type is the S_IFMT part of the mode.
func (in *Inode) Type() uint16 { return in.Mode & ModeTypeMask }

// IsRegular reports a regular file.
func (in *Inode) IsRegular() bool { return in.Type() == ModeRegular }

// IsDir reports a directory.
func (in *Inode) IsDir() bool { return in.Type() == ModeDir }

// Blocks joins i_blocks_lo/high (in 512-byte units unless huge_file).
func (in *Inode) Blocks() uint64 { return uint64(in.BlocksHigh)<<32 | uint64(in.BlocksLo) }

// FileACL joins i_file_acl_lo/high.
func (in *Inode) FileACL() uint64 { return uint64(in.FileACLHigh)<<32 | uint64(in.FileACLLo) }

// InodeLocation gives where inode ino lives: its group and the byte offset
// of its record inside that group's inode table.
func (sb *SuperBlock) InodeLocation(ino uint64) (group uint64, offset uint64, ok bool) {
	if ino == 0 || ino > uint64(sb.InodesCount) {
		return 0, 0, false
	}
	group = (ino - 1) / uint64(sb.InodesPerGroup)
	offset = (ino - 1) % uint64(sb.InodesPerGroup) * uint64(sb.InodeSizeBytes())
	return group, offset, true
}
