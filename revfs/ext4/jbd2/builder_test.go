package jbd2

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// journal builds journals in memory, block by block, with the checksums the
// kernel would write, so tests can lay out any log and then damage it.
type journal struct {
	t      testing.TB
	sb     *Superblock
	disk   DiskSuperblock
	blocks map[uint32][]byte
	pos    uint32 // where the next appended block goes
	v1crc  uint32 // running checksum v1 of the transaction being built
}

type journalOpts struct {
	bs       int
	maxLen   uint32
	first    uint32
	compat   FeatureCompat
	incompat FeatureIncompat
	numFC    uint32
}

func newJournal(t testing.TB, o journalOpts) *journal {
	t.Helper()
	if o.bs == 0 {
		o.bs = 1024
	}
	if o.maxLen == 0 {
		o.maxLen = 1024
	}
	if o.first == 0 {
		o.first = 1
	}
	j := &journal{t: t, blocks: map[uint32][]byte{}, v1crc: ^uint32(0)}
	j.disk = DiskSuperblock{
		Header:          Header{Magic: JournalMagic, BlockType: BlockTypeSuperblockV2, Sequence: 0},
		BlockSize:       uint32(o.bs),
		MaxLen:          o.maxLen,
		First:           o.first,
		Sequence:        1,
		FeatureCompat:   o.compat,
		FeatureIncompat: o.incompat,
		NrUsers:         1,
		NumFCBlocks:     o.numFC,
	}
	copy(j.disk.UUID[:], "indelible-jbd2-t")
	if o.incompat&(FeatureIncompatCsumV2|FeatureIncompatCsumV3) != 0 {
		j.disk.ChecksumType = ChecksumTypeCRC32C
	}
	j.setStart(o.first, 1)
	j.pos = o.first
	return j
}

// superblockBytes encodes d into a block of the journal's size with a valid
// checksum when the features ask for one.
func superblockBytes(t testing.TB, d DiskSuperblock) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.BigEndian, &d); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, max(int(d.BlockSize), SuperblockSize))
	copy(b, buf.Bytes())
	if d.FeatureIncompat&(FeatureIncompatCsumV2|FeatureIncompatCsumV3) != 0 {
		be.PutUint32(b[superblockChecksumOff:], 0)
		be.PutUint32(b[superblockChecksumOff:], crc32c(^uint32(0), b[:SuperblockSize]))
	}
	return b
}

func (j *journal) setStart(start, seq uint32) {
	j.t.Helper()
	j.disk.Start, j.disk.Sequence = start, seq
	b := superblockBytes(j.t, j.disk)
	sb, err := ParseSuperblock(b)
	if err != nil {
		j.t.Fatalf("builder superblock: %v", err)
	}
	j.sb, j.blocks[0] = sb, b
}

func (j *journal) read(jb uint32) ([]byte, error) {
	if jb >= j.sb.MaxLen() {
		return nil, fmt.Errorf("read past the journal: %d", jb)
	}
	if b, ok := j.blocks[jb]; ok {
		return b, nil
	}
	return make([]byte, j.sb.BlockSize()), nil
}

// put writes b at the current position and advances, wrapping like jbd2.
func (j *journal) put(b []byte) uint32 {
	p := j.pos
	j.blocks[p] = b
	j.pos++
	if j.pos >= j.sb.LogEnd() {
		j.pos = j.sb.First()
	}
	return p
}

func (j *journal) header(typ, seq uint32) []byte {
	b := make([]byte, j.sb.BlockSize())
	be.PutUint32(b, JournalMagic)
	be.PutUint32(b[4:], typ)
	be.PutUint32(b[8:], seq)
	return b
}

func (j *journal) sealTail(b []byte) {
	if j.sb.HasCsumV2V3() {
		off := len(b) - BlockTailSize
		be.PutUint32(b[off:], j.sb.BlockChecksum(b, off))
	}
}

// dataBlock is a recognisable journalled copy for home block h in tid seq.
func (j *journal) dataBlock(h uint64, seq uint32) []byte {
	b := make([]byte, j.sb.BlockSize())
	for i := range b {
		b[i] = byte(h) ^ byte(seq) ^ byte(i*7)
	}
	be.PutUint64(b[8:], h)
	return b
}

// descriptor appends a descriptor for copies of homes followed by the copies
// (escaped when they start with the magic). Tags after the first carry
// SAME_UUID unless uuidEvery is set, which puts a UUID after each.
func (j *journal) descriptor(seq uint32, homes []uint64, datas [][]byte, uuidEvery bool) {
	j.t.Helper()
	d := j.header(BlockTypeDescriptor, seq)
	off := HeaderSize
	tb := j.sb.TagBytes()
	stored := make([][]byte, len(homes))
	for i, h := range homes {
		data := append([]byte(nil), datas[i]...)
		var fl TagFlag
		if be.Uint32(data) == JournalMagic {
			be.PutUint32(data, 0)
			fl |= TagFlagEscape
		}
		if i > 0 && !uuidEvery {
			fl |= TagFlagSameUUID
		}
		if i == len(homes)-1 {
			fl |= TagFlagLastTag
		}
		r := d[off : off+tb]
		be.PutUint32(r, uint32(h))
		sum := j.sb.DataChecksum(seq, data)
		switch {
		case j.sb.incompat&FeatureIncompatCsumV3 != 0:
			be.PutUint32(r[4:], uint32(fl))
			be.PutUint32(r[12:], sum)
		default:
			be.PutUint16(r[6:], uint16(fl))
			if j.sb.incompat&FeatureIncompatCsumV2 != 0 {
				be.PutUint16(r[4:], uint16(sum))
			}
		}
		if j.sb.Has64Bit() {
			be.PutUint32(r[8:], uint32(h>>32))
		}
		off += tb
		if fl&TagFlagSameUUID == 0 {
			copy(d[off:], j.disk.UUID[:])
			off += 16
		}
		if off > len(d)-BlockTailSize && i < len(homes)-1 {
			j.t.Fatalf("too many tags for one descriptor")
		}
		stored[i] = data
	}
	j.sealTail(d)
	j.put(d)
	if j.sb.HasChecksumV1() {
		j.v1crc = crc32Be(j.v1crc, d)
	}
	for _, s := range stored {
		j.put(s)
		if j.sb.HasChecksumV1() {
			j.v1crc = crc32Be(j.v1crc, s)
		}
	}
}

func (j *journal) revoke(seq uint32, recs []uint64) {
	b := j.header(BlockTypeRevoke, seq)
	off := RevokeHeaderSize
	for _, r := range recs {
		if j.sb.Has64Bit() {
			be.PutUint64(b[off:], r)
			off += 8
		} else {
			be.PutUint32(b[off:], uint32(r))
			off += 4
		}
	}
	be.PutUint32(b[HeaderSize:], uint32(off))
	j.sealTail(b)
	j.put(b)
}

func (j *journal) commitBlock(seq uint32, sec uint64) []byte {
	b := j.header(BlockTypeCommit, seq)
	be.PutUint64(b[0x30:], sec)
	be.PutUint32(b[0x38:], 12345)
	if j.sb.HasChecksumV1() {
		b[0xC], b[0xD] = ChecksumTypeCRC32, ChecksumSizeCRC32
		be.PutUint32(b[commitChecksumOff:], j.v1crc)
	}
	if j.sb.HasCsumV2V3() {
		be.PutUint32(b[commitChecksumOff:], j.sb.BlockChecksum(b, commitChecksumOff))
	}
	j.v1crc = ^uint32(0)
	return b
}

func (j *journal) commit(seq uint32) uint32 { return j.put(j.commitBlock(seq, 1700000000+uint64(seq))) }

// tx appends a whole transaction logging homes, and returns its start.
func (j *journal) tx(seq uint32, homes ...uint64) uint32 {
	start := j.pos
	datas := make([][]byte, len(homes))
	for i, h := range homes {
		datas[i] = j.dataBlock(h, seq)
	}
	j.descriptor(seq, homes, datas, false)
	j.commit(seq)
	return start
}
