package jbd2

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Superblock is a validated journal superblock. Disk holds the raw fields;
// the methods answer in the terms the kernel uses (journal_t), e.g. feature
// tests that ignore feature words in a version-1 superblock.
type Superblock struct {
	Disk     DiskSuperblock
	compat   FeatureCompat
	incompat FeatureIncompat
	seed     uint32 // j_csum_seed: crc32c(~0, s_uuid), seeds every v2/v3 block checksum
}

// ParseSuperblock decodes and validates the journal superblock at the start
// of b, the first journal block (at least SuperblockSize bytes). It applies
// the checks of the kernel's journal_check_superblock and refuses journals
// shared by several filesystems (external journal devices), which the
// engine does not support.
func ParseSuperblock(b []byte) (*Superblock, error) {
	const st = "journal_superblock_t"
	if len(b) < SuperblockSize {
		return nil, formatErr(ErrCorrupt, 0, st, "block is %d bytes, want at least %d", len(b), SuperblockSize)
	}
	sb := &Superblock{}
	if err := binary.Read(bytes.NewReader(b[:SuperblockSize]), binary.BigEndian, &sb.Disk); err != nil {
		return nil, formatErr(ErrCorrupt, 0, st, "decode: %v", err)
	}
	d := &sb.Disk
	if d.Header.Magic != JournalMagic {
		return nil, formatErr(ErrBadMagic, 0, st, "magic %#08x, want %#08x", d.Header.Magic, JournalMagic)
	}
	switch d.Header.BlockType {
	case BlockTypeSuperblockV1:
		// A version-1 superblock has no feature words: the kernel ignores
		// whatever bytes lie there (JBD2_HAS_*_FEATURE test j_format_version).
	case BlockTypeSuperblockV2:
		sb.compat, sb.incompat = d.FeatureCompat, d.FeatureIncompat
	default:
		return nil, formatErr(ErrBadMagic, 4, st, "block type %s, want a superblock", BlockTypeString(d.Header.BlockType))
	}
	if !isPow2(d.BlockSize) || d.BlockSize < 1024 || d.BlockSize > 65536 {
		return nil, formatErr(ErrCorrupt, 0xC, st, "block size %d is not a power of two in [1024, 65536]", d.BlockSize)
	}
	if unknown := sb.incompat &^ knownIncompat; unknown != 0 {
		return nil, formatErr(ErrUnsupported, 0x28, st, "unknown incompatible features %s", unknown)
	}
	if sb.HasCsumV2V3() && sb.compat&FeatureCompatChecksum != 0 {
		return nil, formatErr(ErrCorrupt, 0x24, st, "checksum v1 and v2/v3 both set")
	}
	if sb.incompat&FeatureIncompatCsumV2 != 0 && sb.incompat&FeatureIncompatCsumV3 != 0 {
		return nil, formatErr(ErrCorrupt, 0x28, st, "checksum v2 and v3 both set")
	}
	if sb.HasCsumV2V3() {
		if d.ChecksumType != ChecksumTypeCRC32C {
			return nil, formatErr(ErrUnsupported, 0x50, st, "checksum type %d, want crc32c (%d)", d.ChecksumType, ChecksumTypeCRC32C)
		}
		var zero [4]byte
		c := crc32c(^uint32(0), b[:superblockChecksumOff])
		c = crc32c(c, zero[:])
		c = crc32c(c, b[superblockChecksumOff+4:SuperblockSize])
		if c != d.Checksum {
			return nil, formatErr(ErrBadChecksum, superblockChecksumOff, st, "checksum %#08x, computed %#08x", d.Checksum, c)
		}
		sb.seed = crc32c(^uint32(0), d.UUID[:])
	}
	// The kernel's bound: the circular log must keep MinJournalBlocks
	// besides the fast-commit area. Written to avoid overflow.
	nfc := sb.NumFCBlocks()
	if d.MaxLen < MinJournalBlocks || d.MaxLen-MinJournalBlocks < nfc {
		return nil, formatErr(ErrCorrupt, 0x10, st, "journal of %d blocks (%d for fast commits) is below the minimum of %d", d.MaxLen, nfc, MinJournalBlocks)
	}
	if d.First == 0 || d.First >= sb.LogEnd() {
		return nil, formatErr(ErrCorrupt, 0x14, st, "first log block %d outside [1, %d)", d.First, sb.LogEnd())
	}
	if d.Start != 0 && (d.Start < d.First || d.Start >= sb.LogEnd()) {
		return nil, formatErr(ErrCorrupt, 0x1C, st, "log start %d outside [%d, %d)", d.Start, d.First, sb.LogEnd())
	}
	if d.Header.BlockType == BlockTypeSuperblockV2 && d.NrUsers > 1 {
		return nil, formatErr(ErrUnsupported, 0x40, st, "journal shared by %d filesystems: external journal devices are not supported", d.NrUsers)
	}
	return sb, nil
}

// BlockSize is the journal block size in bytes (s_blocksize).
func (sb *Superblock) BlockSize() int { return int(sb.Disk.BlockSize) }

// First is the first block of the circular log (s_first).
func (sb *Superblock) First() uint32 { return sb.Disk.First }

// MaxLen is the journal length in blocks, fast-commit area included (s_maxlen).
func (sb *Superblock) MaxLen() uint32 { return sb.Disk.MaxLen }

// Start is the block where the log to replay starts (s_start); 0 means the
// journal is clean.
func (sb *Superblock) Start() uint32 { return sb.Disk.Start }

// Sequence is s_sequence: the tid expected at Start while the journal is
// dirty; once clean, the tid after the last one the journal ever used.
func (sb *Superblock) Sequence() uint32 { return sb.Disk.Sequence }

// ScanFrom returns where the log starts and the tid expected there. While
// the journal is dirty that is (Start, Sequence), the log recovery replays.
// Once clean, it is where the kernel puts the first transaction of the next
// mount: s_head (ext4 sets JBD2_CYCLE_RECORD since Linux 6.4), or s_first
// when s_head is 0 or outside the log (older kernels always use s_first),
// with tid Sequence+1. The kernel confirms the choice by rewriting the
// superblock (Start, Sequence and its feature set) before that
// transaction's first block; parse that write when it comes.
func (sb *Superblock) ScanFrom() (start, seq uint32) {
	if sb.Disk.Start != 0 {
		return sb.Disk.Start, sb.Disk.Sequence
	}
	start = sb.Disk.Head
	if start < sb.Disk.First || start >= sb.LogEnd() {
		start = sb.Disk.First
	}
	return start, sb.Disk.Sequence + 1
}

// Clean reports whether the journal needs no replay (s_start == 0).
func (sb *Superblock) Clean() bool { return sb.Disk.Start == 0 }

// Head is s_head, where the kernel restarts the log after a clean unmount
// when mounted with journal_cycle_record; 0 in older superblocks.
func (sb *Superblock) Head() uint32 { return sb.Disk.Head }

// Compat is the compatible feature set in force (0 for a v1 superblock).
func (sb *Superblock) Compat() FeatureCompat { return sb.compat }

// Incompat is the incompatible feature set in force (0 for a v1 superblock).
func (sb *Superblock) Incompat() FeatureIncompat { return sb.incompat }

// HasCsumV2V3 reports crc32c checksums on every journal block
// (jbd2_journal_has_csum_v2or3).
func (sb *Superblock) HasCsumV2V3() bool {
	return sb.incompat&(FeatureIncompatCsumV2|FeatureIncompatCsumV3) != 0
}

// HasChecksumV1 reports a per-transaction crc32_be in commit blocks.
func (sb *Superblock) HasChecksumV1() bool { return sb.compat&FeatureCompatChecksum != 0 }

// Has64Bit reports 64-bit home block numbers in tags and revoke records.
func (sb *Superblock) Has64Bit() bool { return sb.incompat&FeatureIncompat64Bit != 0 }

// HasFastCommit reports a fast-commit area at the end of the journal.
func (sb *Superblock) HasFastCommit() bool { return sb.incompat&FeatureIncompatFastCommit != 0 }

// NumFCBlocks is the size of the fast-commit area: 0 without the feature,
// else s_num_fc_blks or DefaultFastCommitBlocks when that is 0
// (jbd2_journal_get_num_fc_blks).
func (sb *Superblock) NumFCBlocks() uint32 {
	if !sb.HasFastCommit() {
		return 0
	}
	if sb.Disk.NumFCBlocks == 0 {
		return DefaultFastCommitBlocks
	}
	return sb.Disk.NumFCBlocks
}

// LogEnd is the block after the circular log (j_last): the log occupies
// [First, LogEnd) and wraps from LogEnd-1 to First.
func (sb *Superblock) LogEnd() uint32 { return sb.Disk.MaxLen - sb.NumFCBlocks() }

// InLog reports whether journal block jb lies in the circular log.
func (sb *Superblock) InLog(jb uint32) bool { return jb >= sb.Disk.First && jb < sb.LogEnd() }

// NextBlock is the log position after jb, wrapping from LogEnd()-1 to
// First() like the kernel's wrap() macro.
func (sb *Superblock) NextBlock(jb uint32) uint32 {
	if jb+1 >= sb.LogEnd() || jb+1 < sb.Disk.First {
		return sb.Disk.First
	}
	return jb + 1
}

// TagBytes is the size of one descriptor tag without its optional UUID
// (journal_tag_bytes, include/linux/jbd2.h).
func (sb *Superblock) TagBytes() int {
	if sb.incompat&FeatureIncompatCsumV3 != 0 {
		return 16 // journal_block_tag3_t
	}
	n := 12 // journal_block_tag_t
	if sb.incompat&FeatureIncompatCsumV2 != 0 {
		n += 2
	}
	if !sb.Has64Bit() {
		n -= 4 // no t_blocknr_high
	}
	return n
}

// String summarises the superblock for logs.
func (sb *Superblock) String() string {
	return fmt.Sprintf("jbd2 v%d bs=%d len=%d first=%d start=%d seq=%d incompat=%s compat=%s",
		sb.Disk.Header.BlockType-2, sb.Disk.BlockSize, sb.Disk.MaxLen, sb.Disk.First,
		sb.Disk.Start, sb.Disk.Sequence, sb.incompat, sb.compat)
}

// BlockChecksum is crc32c(seed, block with the 4 bytes at off taken as
// zero), the v2/v3 checksum of descriptor, revoke and commit blocks (for a
// descriptor's tail, off is len(b)-BlockTailSize).
func (sb *Superblock) BlockChecksum(b []byte, off int) uint32 {
	var zero [4]byte
	c := crc32c(sb.seed, b[:off])
	c = crc32c(c, zero[:])
	return crc32c(c, b[off+4:])
}

// DataChecksum is the v2/v3 checksum of a journalled copy as stored (still
// escaped): crc32c(seed, be32 tid, block), jbd2_block_tag_csum_verify.
func (sb *Superblock) DataChecksum(seq uint32, b []byte) uint32 {
	var s [4]byte
	binary.BigEndian.PutUint32(s[:], seq)
	return crc32c(crc32c(sb.seed, s[:]), b)
}

// dataChecksumBase is the transaction's part of every copy's checksum:
// crc32c(seed, be32 tid) carried over BlockSize zero bytes. crc32c without
// inversions is linear: run from register r over a block b, it ends where
// the run from r over as many zero bytes ends, XOR the run from zero over b.
// So DataChecksum(seq, b) == dataChecksumBase(seq) ^ BlockSum(b), the first
// term the same for every copy of the transaction, the second the block's
// alone (ScanWithSums).
func (sb *Superblock) dataChecksumBase(seq uint32) uint32 {
	var s [4]byte
	binary.BigEndian.PutUint32(s[:], seq)
	c := crc32c(sb.seed, s[:])
	for n := sb.BlockSize(); n > 0; {
		k := min(n, len(zeroBlock))
		c = crc32c(c, zeroBlock[:k])
		n -= k
	}
	return c
}
