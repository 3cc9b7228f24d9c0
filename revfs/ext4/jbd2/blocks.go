package jbd2

import "encoding/binary"

var be = binary.BigEndian

// ParseHeader decodes the journal_header_t at the start of b. ok is false
// when b is too short or does not start with JournalMagic, i.e. when the
// block is not journal metadata.
func ParseHeader(b []byte) (h Header, ok bool) {
	if len(b) < HeaderSize {
		return Header{}, false
	}
	h = Header{Magic: be.Uint32(b), BlockType: be.Uint32(b[4:]), Sequence: be.Uint32(b[8:])}
	return h, h.Magic == JournalMagic
}

// Tag is one descriptor tag: the home block of the journalled copy that sits
// at the matching position after the descriptor.
type Tag struct {
	Home     uint64  // home block number (t_blocknr | t_blocknr_high<<32 with 64bit)
	Flags    TagFlag // JBD2_FLAG_* (only the low 16 bits count, as in the kernel)
	Checksum uint32  // csum v3: the full crc32c; csum v2: its low 16 bits; else 0
}

// Escaped reports that the copy's first 4 bytes were JournalMagic and are
// stored as zeroes; Unescape restores them.
func (t Tag) Escaped() bool { return t.Flags&TagFlagEscape != 0 }

// Last reports the last tag of its descriptor block.
func (t Tag) Last() bool { return t.Flags&TagFlagLastTag != 0 }

// SameUUID reports that no 16-byte UUID follows this tag.
func (t Tag) SameUUID() bool { return t.Flags&TagFlagSameUUID != 0 }

// checkBlock validates what every log block parser needs: the journal block
// size, the magic and the expected block type.
func checkBlock(sb *Superblock, b []byte, want uint32, st string) (Header, error) {
	if len(b) != sb.BlockSize() {
		return Header{}, formatErr(ErrCorrupt, 0, st, "block is %d bytes, journal block size is %d", len(b), sb.BlockSize())
	}
	h, ok := ParseHeader(b)
	if !ok {
		return h, formatErr(ErrBadMagic, 0, st, "magic %#08x, want %#08x", h.Magic, JournalMagic)
	}
	if h.BlockType != want {
		return h, formatErr(ErrCorrupt, 4, st, "block type %s, want %s", BlockTypeString(h.BlockType), BlockTypeString(want))
	}
	return h, nil
}

// checkTail verifies the jbd2_journal_block_tail of a descriptor or revoke
// block when the journal has csum v2/v3.
func checkTail(sb *Superblock, b []byte, st string) error {
	if !sb.HasCsumV2V3() {
		return nil
	}
	off := len(b) - BlockTailSize
	stored := be.Uint32(b[off:])
	if got := sb.BlockChecksum(b, off); got != stored {
		return formatErr(ErrBadChecksum, off, st, "tail checksum %#08x, computed %#08x", stored, got)
	}
	return nil
}

// ParseDescriptor decodes the tags of a descriptor block, after checking
// its block size, type and (csum v2/v3) tail checksum. It walks the tags as
// the kernel's count_tags does: until a tag has TagFlagLastTag or the next
// one would overrun the block (before the tail). The walk is bounded by the
// block size: at most (blocksize-12)/TagBytes tags.
func ParseDescriptor(sb *Superblock, b []byte) ([]Tag, error) {
	const st = "journal_block_tag_t"
	if _, err := checkBlock(sb, b, BlockTypeDescriptor, "journal_header_t"); err != nil {
		return nil, err
	}
	if err := checkTail(sb, b, "jbd2_journal_block_tail"); err != nil {
		return nil, err
	}
	end := len(b)
	if sb.HasCsumV2V3() {
		end -= BlockTailSize
	}
	tagBytes := sb.TagBytes()
	v3 := sb.incompat&FeatureIncompatCsumV3 != 0
	v2 := sb.incompat&FeatureIncompatCsumV2 != 0
	tags := make([]Tag, 0, (end-HeaderSize)/tagBytes)
	for off := HeaderSize; off+tagBytes <= end; {
		r := b[off : off+tagBytes]
		t := Tag{Home: uint64(be.Uint32(r))}
		// The kernel reads the flags as the be16 at byte 6 for both tag
		// layouts, which for tag3 is the low half of its be32 t_flags.
		t.Flags = TagFlag(be.Uint16(r[6:]))
		switch {
		case v3:
			t.Checksum = be.Uint32(r[12:])
		case v2:
			t.Checksum = uint32(be.Uint16(r[4:]))
		}
		if sb.Has64Bit() {
			t.Home |= uint64(be.Uint32(r[8:])) << 32
		}
		tags = append(tags, t)
		off += tagBytes
		if !t.SameUUID() {
			off += 16
		}
		if t.Last() {
			break
		}
	}
	if len(tags) == 0 {
		// Unreachable for block sizes >= 1024; kept so a bad caller-built
		// superblock cannot produce an empty transaction piece silently.
		return nil, formatErr(ErrCorrupt, HeaderSize, st, "no room for a tag")
	}
	return tags, nil
}

// ParseRevoke decodes the home block numbers of a revoke block, after
// checking its block size, type and (csum v2/v3) tail checksum. r_count
// (bytes used, header included) must fit the block before the tail, which
// bounds the records to blocksize/4.
func ParseRevoke(sb *Superblock, b []byte) ([]uint64, error) {
	rec, end, err := revokeRecords(sb, b)
	if err != nil {
		return nil, err
	}
	var out []uint64
	if end > RevokeHeaderSize {
		out = make([]uint64, 0, (end-RevokeHeaderSize)/rec)
	}
	for off := RevokeHeaderSize; off+rec <= end; off += rec {
		out = append(out, revokeRecord(b, off, rec))
	}
	return out, nil
}

// revokeRecords checks a revoke block as ParseRevoke does and returns the
// size of its records (4, or 8 with 64bit) and the end of the bytes they
// use (r_count), so that Scan can walk them without allocating.
func revokeRecords(sb *Superblock, b []byte) (rec, end int, err error) {
	const st = "jbd2_journal_revoke_header_t"
	if _, err := checkBlock(sb, b, BlockTypeRevoke, st); err != nil {
		return 0, 0, err
	}
	if err := checkTail(sb, b, "jbd2_journal_block_tail"); err != nil {
		return 0, 0, err
	}
	limit := len(b)
	if sb.HasCsumV2V3() {
		limit -= BlockTailSize
	}
	count := be.Uint32(b[HeaderSize:])
	if count > uint32(limit) {
		return 0, 0, formatErr(ErrCorrupt, HeaderSize, st, "r_count %d exceeds the %d usable bytes", count, limit)
	}
	rec = 4
	if sb.Has64Bit() {
		rec = 8
	}
	return rec, int(count), nil
}

// revokeRecord decodes the record of size rec at byte off of a revoke block.
func revokeRecord(b []byte, off, rec int) uint64 {
	if rec == 8 {
		return be.Uint64(b[off:])
	}
	return uint64(be.Uint32(b[off:]))
}

// Commit is the content of a commit block.
type Commit struct {
	Sequence uint32 // the tid it commits
	Sec      uint64 // h_commit_sec
	Nsec     uint32 // h_commit_nsec

	// Checksum v1 fields, checked by Scan against the running crc32_be of
	// the transaction (ParseCommit cannot: it sees one block).
	ChecksumType uint8  // h_chksum_type
	ChecksumSize uint8  // h_chksum_size
	Checksum     uint32 // h_chksum[0]
}

// ParseCommit decodes a commit block, after checking its block size, type
// and (csum v2/v3) checksum.
func ParseCommit(sb *Superblock, b []byte) (*Commit, error) {
	const st = "commit_header"
	h, err := checkBlock(sb, b, BlockTypeCommit, st)
	if err != nil {
		return nil, err
	}
	c := &Commit{
		Sequence:     h.Sequence,
		ChecksumType: b[0xC],
		ChecksumSize: b[0xD],
		Checksum:     be.Uint32(b[commitChecksumOff:]),
		Sec:          be.Uint64(b[0x30:]),
		Nsec:         be.Uint32(b[0x38:]),
	}
	if sb.HasCsumV2V3() {
		if got := sb.BlockChecksum(b, commitChecksumOff); got != c.Checksum {
			return nil, formatErr(ErrBadChecksum, commitChecksumOff, st, "checksum %#08x, computed %#08x", c.Checksum, got)
		}
	}
	return c, nil
}

// Unescape restores JournalMagic in the first 4 bytes of a journalled copy
// whose tag has TagFlagEscape; b must be the caller's own copy.
func Unescape(b []byte) {
	if len(b) >= 4 {
		be.PutUint32(b, JournalMagic)
	}
}
