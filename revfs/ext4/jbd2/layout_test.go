package jbd2

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name string
		v    any
		want int
	}{
		{"journal_header_t", Header{}, HeaderSize},
		{"journal_superblock_t", DiskSuperblock{}, SuperblockSize},
		{"journal_block_tag3_t", DiskTag3{}, 16},
		{"journal_block_tag_t", DiskTag{}, 12},
		{"jbd2_journal_block_tail", BlockTail{}, BlockTailSize},
		{"jbd2_journal_revoke_header_t", RevokeHeader{}, RevokeHeaderSize},
		{"commit_header", CommitHeader{}, CommitHeaderSize},
	} {
		if got := binary.Size(c.v); got != c.want {
			t.Errorf("binary.Size(%s) = %d, want %d", c.name, got, c.want)
		}
	}
}

// TestSuperblockOffsets pins the fields the kernel documents by offset
// (journal.rst), so a misplaced padding field cannot shift them unnoticed.
func TestSuperblockOffsets(t *testing.T) {
	d := DiskSuperblock{
		BlockSize: 0x0C0C0C0C, MaxLen: 0x10101010, First: 0x14141414, Sequence: 0x18181818,
		Start: 0x1C1C1C1C, FeatureCompat: 0x24242424, FeatureIncompat: 0x28282828,
		NrUsers: 0x40404040, ChecksumType: 0x50, NumFCBlocks: 0x54545454, Head: 0x58585858,
		Checksum: 0xFCFCFCFC,
	}
	d.UUID[0] = 0x30
	d.Users[0] = 0xAA
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.BigEndian, &d); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	for _, off := range []int{0x0C, 0x10, 0x14, 0x18, 0x1C, 0x24, 0x28, 0x40, 0x54, 0x58, 0xFC} {
		if got := be.Uint32(b[off:]); got != uint32(off)*0x01010101 {
			t.Errorf("field at %#x reads %#08x", off, got)
		}
	}
	if b[0x30] != 0x30 || b[0x50] != 0x50 || b[0x100] != 0xAA {
		t.Errorf("uuid/checksum type/users misplaced: %#x %#x %#x", b[0x30], b[0x50], b[0x100])
	}

	c := CommitHeader{ChecksumType: 1, ChecksumSize: 4, CommitSec: 0x3030303030303030, CommitNsec: 0x38383838}
	c.Checksum[0] = 0x10101010
	buf.Reset()
	if err := binary.Write(&buf, binary.BigEndian, &c); err != nil {
		t.Fatal(err)
	}
	b = buf.Bytes()
	if b[0xC] != 1 || b[0xD] != 4 || be.Uint32(b[0x10:]) != 0x10101010 ||
		be.Uint64(b[0x30:]) != 0x3030303030303030 || be.Uint32(b[0x38:]) != 0x38383838 {
		t.Errorf("commit_header fields misplaced: % x", b)
	}
}

func TestFlagStrings(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{TagFlag(0).String(), "0"},
		{(TagFlagEscape | TagFlagLastTag).String(), "escape|last_tag"},
		{(TagFlagSameUUID | 0x100).String(), "same_uuid|0x100"},
		{(FeatureIncompat64Bit | FeatureIncompatCsumV3).String(), "64bit|csum_v3"},
		{FeatureCompatChecksum.String(), "checksum"},
		{BlockTypeString(BlockTypeRevoke), "revoke"},
		{BlockTypeString(9), "blocktype(9)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestTagBytes(t *testing.T) {
	for _, c := range []struct {
		incompat FeatureIncompat
		want     int
	}{
		{0, 8},
		{FeatureIncompat64Bit, 12},
		{FeatureIncompatCsumV2, 10},
		{FeatureIncompatCsumV2 | FeatureIncompat64Bit, 14},
		{FeatureIncompatCsumV3, 16},
		{FeatureIncompatCsumV3 | FeatureIncompat64Bit, 16},
	} {
		j := newJournal(t, journalOpts{incompat: c.incompat})
		if got := j.sb.TagBytes(); got != c.want {
			t.Errorf("TagBytes(%s) = %d, want %d", c.incompat, got, c.want)
		}
	}
}

// TestCRC pins the two checksum primitives to known vectors: crc32c("123456789")
// with the usual inversions is 0xE3069283, and the kernel's crc32_be with
// seed ~0 and a final inversion is the CRC-32/BZIP2 check value 0xFC891918.
func TestCRC(t *testing.T) {
	if got := ^crc32c(^uint32(0), []byte("123456789")); got != 0xE3069283 {
		t.Errorf("crc32c = %#08x", got)
	}
	if got := ^crc32Be(^uint32(0), []byte("123456789")); got != 0xFC891918 {
		t.Errorf("crc32_be = %#08x", got)
	}
}
