package jbd2

import (
	"fmt"
	"math/bits"

	"github.com/indelible-worm/indelible/internal/bitnames"
)

// JournalMagic opens every jbd2 metadata block (JBD2_MAGIC_NUMBER,
// include/linux/jbd2.h). A journalled data block that happens to start with
// it is stored with those four bytes zeroed and TagFlagEscape set.
const JournalMagic uint32 = 0xC03B3998

// Block types, journal_header_t.h_blocktype (include/linux/jbd2.h).
const (
	BlockTypeDescriptor   uint32 = 1 // JBD2_DESCRIPTOR_BLOCK: tags of the blocks that follow
	BlockTypeCommit       uint32 = 2 // JBD2_COMMIT_BLOCK: ends a transaction
	BlockTypeSuperblockV1 uint32 = 3 // JBD2_SUPERBLOCK_V1: no feature fields
	BlockTypeSuperblockV2 uint32 = 4 // JBD2_SUPERBLOCK_V2
	BlockTypeRevoke       uint32 = 5 // JBD2_REVOKE_BLOCK: blocks not to replay
)

var blockTypeNames = map[uint32]string{
	BlockTypeDescriptor:   "descriptor",
	BlockTypeCommit:       "commit",
	BlockTypeSuperblockV1: "superblock-v1",
	BlockTypeSuperblockV2: "superblock-v2",
	BlockTypeRevoke:       "revoke",
}

// BlockTypeString names a journal block type for logs and errors.
func BlockTypeString(t uint32) string {
	if s, ok := blockTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("blocktype(%d)", t)
}

// Checksum algorithms, journal_superblock_t.s_checksum_type and
// commit_header.h_chksum_type (include/linux/jbd2.h).
const (
	ChecksumTypeCRC32  uint8 = 1 // JBD2_CRC32_CHKSUM (checksum v1 commit blocks)
	ChecksumTypeMD5    uint8 = 2 // JBD2_MD5_CHKSUM (never used by Linux)
	ChecksumTypeSHA1   uint8 = 3 // JBD2_SHA1_CHKSUM (never used by Linux)
	ChecksumTypeCRC32C uint8 = 4 // JBD2_CRC32C_CHKSUM (checksum v2/v3)

	// ChecksumSizeCRC32 is JBD2_CRC32_CHKSUM_SIZE, the h_chksum_size of a
	// checksum v1 commit block.
	ChecksumSizeCRC32 uint8 = 4
)

// MinJournalBlocks is JBD2_MIN_JOURNAL_BLOCKS: the kernel refuses a journal
// whose circular log is shorter.
const MinJournalBlocks = 1024

// DefaultFastCommitBlocks is JBD2_DEFAULT_FAST_COMMIT_BLOCKS, the size of the
// fast-commit area when FeatureIncompatFastCommit is set and s_num_fc_blks is 0.
const DefaultFastCommitBlocks = 256

// Header mirrors journal_header_t (include/linux/jbd2.h): the 12 bytes that
// open every journal metadata block.
type Header struct {
	Magic     uint32 // h_magic, JournalMagic
	BlockType uint32 // h_blocktype, BlockType*
	Sequence  uint32 // h_sequence, the transaction ID (tid)
}

// HeaderSize is sizeof(journal_header_t).
const HeaderSize = 12

// FeatureCompat is journal_superblock_t.s_feature_compat.
type FeatureCompat uint32

// FeatureCompatChecksum is JBD2_FEATURE_COMPAT_CHECKSUM: checksum v1, a
// big-endian CRC32 over each transaction's descriptor and data blocks kept in
// its commit block.
const FeatureCompatChecksum FeatureCompat = 0x1

var featureCompatNames = []bitnames.Name{{uint32(FeatureCompatChecksum), "checksum"}}

func (f FeatureCompat) String() string { return bitnames.Format(uint32(f), featureCompatNames) }

// FeatureIncompat is journal_superblock_t.s_feature_incompat.
type FeatureIncompat uint32

// Incompatible features (JBD2_FEATURE_INCOMPAT_*, include/linux/jbd2.h).
const (
	FeatureIncompatRevoke      FeatureIncompat = 0x01 // revoke blocks may appear
	FeatureIncompat64Bit       FeatureIncompat = 0x02 // tags and revoke records carry 64-bit block numbers
	FeatureIncompatAsyncCommit FeatureIncompat = 0x04 // commit written without waiting for the descriptors
	FeatureIncompatCsumV2      FeatureIncompat = 0x08 // crc32c on metadata blocks, 16-bit tag checksums
	FeatureIncompatCsumV3      FeatureIncompat = 0x10 // crc32c on metadata blocks, journal_block_tag3_t
	FeatureIncompatFastCommit  FeatureIncompat = 0x20 // a fast-commit area ends the journal
)

// knownIncompat is what this package understands (JBD2_KNOWN_INCOMPAT_FEATURES).
const knownIncompat = FeatureIncompatRevoke | FeatureIncompat64Bit | FeatureIncompatAsyncCommit |
	FeatureIncompatCsumV2 | FeatureIncompatCsumV3 | FeatureIncompatFastCommit

var featureIncompatNames = []bitnames.Name{
	{uint32(FeatureIncompatRevoke), "revoke"},
	{uint32(FeatureIncompat64Bit), "64bit"},
	{uint32(FeatureIncompatAsyncCommit), "async_commit"},
	{uint32(FeatureIncompatCsumV2), "csum_v2"},
	{uint32(FeatureIncompatCsumV3), "csum_v3"},
	{uint32(FeatureIncompatFastCommit), "fast_commit"},
}

func (f FeatureIncompat) String() string { return bitnames.Format(uint32(f), featureIncompatNames) }

// DiskSuperblock mirrors journal_superblock_t (include/linux/jbd2.h), 1024
// bytes at the start of journal block 0. Fields after Errno exist only in a
// version-2 superblock.
type DiskSuperblock struct {
	Header Header // s_header: BlockTypeSuperblockV1 or V2
	// Static description of the journal.
	BlockSize uint32 // s_blocksize: journal block size, equal to the fs block size
	MaxLen    uint32 // s_maxlen: journal length in blocks
	First     uint32 // s_first: first block of the log
	// Dynamic state of the log.
	Sequence uint32 // s_sequence: first tid expected in the log
	Start    uint32 // s_start: block where the log starts; 0 = clean, nothing to replay
	Errno    int32  // s_errno: set by jbd2_journal_abort
	// Version 2 only.
	FeatureCompat   FeatureCompat   // s_feature_compat
	FeatureIncompat FeatureIncompat // s_feature_incompat
	FeatureROCompat uint32          // s_feature_ro_compat (none defined)
	UUID            [16]byte        // s_uuid, seeds every v2/v3 checksum
	NrUsers         uint32          // s_nr_users: filesystems sharing the journal (1 for an internal journal)
	DynSuper        uint32          // s_dynsuper (unused)
	MaxTransaction  uint32          // s_max_transaction (unused)
	MaxTransData    uint32          // s_max_trans_data (unused)
	ChecksumType    uint8           // s_checksum_type: ChecksumTypeCRC32C with csum v2/v3
	_               [3]byte         // s_padding2
	NumFCBlocks     uint32          // s_num_fc_blks: fast-commit area size (0 = DefaultFastCommitBlocks)
	Head            uint32          // s_head: log head, only meaningful while clean (journal_cycle_record)
	_               [40]uint32      // s_padding
	Checksum        uint32          // s_checksum: crc32c(~0, superblock with this field zeroed)
	Users           [16 * 48]byte   // s_users: UUIDs of the sharing filesystems (external journals)
}

// SuperblockSize is sizeof(journal_superblock_t).
const SuperblockSize = 1024

// superblockChecksumOff is the offset of s_checksum.
const superblockChecksumOff = 0xFC

// DiskTag3 mirrors journal_block_tag3_t (include/linux/jbd2.h), the 16-byte
// descriptor tag used with FeatureIncompatCsumV3.
type DiskTag3 struct {
	BlockNr     uint32  // t_blocknr: home block, low 32 bits
	Flags       TagFlag // t_flags
	BlockNrHigh uint32  // t_blocknr_high: high 32 bits, only with FeatureIncompat64Bit
	Checksum    uint32  // t_checksum: crc32c(uuid seed, be32 tid, journalled block)
}

// DiskTag mirrors journal_block_tag_t (include/linux/jbd2.h), the tag used
// without csum v3. Only its first journal_tag_bytes() bytes are on disk: 8
// without 64bit, 12 with, plus 2 (an unused checksum copy) with csum v2.
type DiskTag struct {
	BlockNr     uint32 // t_blocknr
	Checksum    uint16 // t_checksum: low 16 bits of the csum v2 block checksum
	Flags       uint16 // t_flags
	BlockNrHigh uint32 // t_blocknr_high, only with FeatureIncompat64Bit
}

// BlockTail mirrors struct jbd2_journal_block_tail (include/linux/jbd2.h):
// the last 4 bytes of a descriptor or revoke block with csum v2/v3.
type BlockTail struct {
	Checksum uint32 // t_checksum: crc32c(uuid seed, block with this field zeroed)
}

// BlockTailSize is sizeof(struct jbd2_journal_block_tail).
const BlockTailSize = 4

// RevokeHeader mirrors jbd2_journal_revoke_header_t (include/linux/jbd2.h).
type RevokeHeader struct {
	Header Header // r_header, BlockTypeRevoke
	Count  uint32 // r_count: bytes used in the block, header included
}

// RevokeHeaderSize is sizeof(jbd2_journal_revoke_header_t).
const RevokeHeaderSize = 16

// CommitHeader mirrors struct commit_header (include/linux/jbd2.h).
type CommitHeader struct {
	Header       Header    // h_magic, h_blocktype (BlockTypeCommit), h_sequence
	ChecksumType uint8     // h_chksum_type: ChecksumTypeCRC32 with checksum v1, else 0
	ChecksumSize uint8     // h_chksum_size
	_            [2]byte   // h_padding
	Checksum     [8]uint32 // h_chksum[JBD2_CHECKSUM_BYTES]: [0] holds the v1 or v2/v3 checksum
	CommitSec    uint64    // h_commit_sec
	CommitNsec   uint32    // h_commit_nsec
}

// CommitHeaderSize is sizeof(struct commit_header) without trailing padding.
const CommitHeaderSize = 60

// commitChecksumOff is the offset of h_chksum[0].
const commitChecksumOff = 0x10

// TagFlag is the flags word of a descriptor tag (JBD2_FLAG_*).
type TagFlag uint32

// Tag flags (include/linux/jbd2.h).
const (
	TagFlagEscape   TagFlag = 1 // journalled copy had JournalMagic in its first 4 bytes, stored zeroed
	TagFlagSameUUID TagFlag = 2 // no 16-byte UUID follows this tag
	TagFlagDeleted  TagFlag = 4 // block deleted by this transaction (unused by Linux)
	TagFlagLastTag  TagFlag = 8 // last tag of this descriptor block
)

var tagFlagNames = []bitnames.Name{
	{uint32(TagFlagEscape), "escape"},
	{uint32(TagFlagSameUUID), "same_uuid"},
	{uint32(TagFlagDeleted), "deleted"},
	{uint32(TagFlagLastTag), "last_tag"},
}

func (f TagFlag) String() string { return bitnames.Format(uint32(f), tagFlagNames) }

// isPow2 reports whether v is a power of two.
func isPow2(v uint32) bool { return v != 0 && bits.OnesCount32(v) == 1 }
