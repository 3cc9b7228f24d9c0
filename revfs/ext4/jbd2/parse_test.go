package jbd2

import (
	"errors"
	"slices"
	"testing"
)

func TestParseSuperblockErrors(t *testing.T) {
	good := func() DiskSuperblock {
		j := newJournal(t, journalOpts{bs: 4096, maxLen: 4096, incompat: FeatureIncompat64Bit | FeatureIncompatCsumV3})
		return j.disk
	}
	for _, c := range []struct {
		name   string
		mutate func(d *DiskSuperblock)
		bytes  func(b []byte) []byte // applied after encoding
		want   error
	}{
		{name: "ok", mutate: func(d *DiskSuperblock) {}},
		{name: "short", bytes: func(b []byte) []byte { return b[:1023] }, want: ErrCorrupt},
		{name: "magic", mutate: func(d *DiskSuperblock) { d.Header.Magic = 0xC03B3999 }, want: ErrBadMagic},
		{name: "type", mutate: func(d *DiskSuperblock) { d.Header.BlockType = BlockTypeCommit }, want: ErrBadMagic},
		{name: "blocksize-odd", mutate: func(d *DiskSuperblock) { d.BlockSize = 3000 }, want: ErrCorrupt},
		{name: "blocksize-big", mutate: func(d *DiskSuperblock) { d.BlockSize = 1 << 17 }, want: ErrCorrupt},
		{name: "maxlen", mutate: func(d *DiskSuperblock) { d.MaxLen = 1023 }, want: ErrCorrupt},
		{name: "fc-too-big", mutate: func(d *DiskSuperblock) {
			d.FeatureIncompat |= FeatureIncompatFastCommit
			d.NumFCBlocks = 4096 - 1023
		}, want: ErrCorrupt},
		{name: "first-0", mutate: func(d *DiskSuperblock) { d.First = 0 }, want: ErrCorrupt},
		{name: "first-end", mutate: func(d *DiskSuperblock) { d.First = 4096 }, want: ErrCorrupt},
		{name: "start-low", mutate: func(d *DiskSuperblock) { d.First, d.Start = 8, 3 }, want: ErrCorrupt},
		{name: "start-high", mutate: func(d *DiskSuperblock) { d.Start = 4096 }, want: ErrCorrupt},
		{name: "v2-and-v3", mutate: func(d *DiskSuperblock) { d.FeatureIncompat |= FeatureIncompatCsumV2 }, want: ErrCorrupt},
		{name: "v1-and-v3", mutate: func(d *DiskSuperblock) { d.FeatureCompat |= FeatureCompatChecksum }, want: ErrCorrupt},
		{name: "unknown-incompat", mutate: func(d *DiskSuperblock) { d.FeatureIncompat |= 0x400 }, want: ErrUnsupported},
		{name: "csum-type", mutate: func(d *DiskSuperblock) { d.ChecksumType = ChecksumTypeSHA1 }, want: ErrUnsupported},
		{name: "shared", mutate: func(d *DiskSuperblock) { d.NrUsers = 2 }, want: ErrUnsupported},
		{name: "bad-checksum", bytes: func(b []byte) []byte { b[0x20] ^= 1; return b }, want: ErrBadChecksum},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := good()
			if c.mutate != nil {
				c.mutate(&d)
			}
			b := superblockBytes(t, d)
			if c.bytes != nil {
				b = c.bytes(b)
			}
			sb, err := ParseSuperblock(b)
			if c.want == nil {
				if err != nil {
					t.Fatalf("ParseSuperblock: %v", err)
				}
				if sb.BlockSize() != 4096 || sb.MaxLen() != 4096 || sb.First() != 1 || sb.LogEnd() != 4096 ||
					!sb.Has64Bit() || !sb.HasCsumV2V3() || sb.TagBytes() != 16 || sb.String() == "" {
					t.Errorf("accessors: %v", sb)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Struct != "journal_superblock_t" {
				t.Errorf("err %v is not a *FormatError on journal_superblock_t", err)
			}
		})
	}
}

// A version-1 superblock has no feature words: whatever lies there is ignored.
func TestParseSuperblockV1(t *testing.T) {
	j := newJournal(t, journalOpts{})
	d := j.disk
	d.Header.BlockType = BlockTypeSuperblockV1
	d.FeatureIncompat = 0xFFFF
	sb, err := ParseSuperblock(superblockBytes(t, d))
	if err != nil {
		t.Fatal(err)
	}
	if sb.Incompat() != 0 || sb.TagBytes() != 8 || sb.HasCsumV2V3() {
		t.Errorf("v1 superblock features in force: %s, tag %d", sb.Incompat(), sb.TagBytes())
	}
}

func TestFastCommitArea(t *testing.T) {
	for _, c := range []struct {
		num, wantFC uint32
		feature     bool
	}{{0, 0, false}, {100, 0, false}, {0, 256, true}, {100, 100, true}} {
		o := journalOpts{maxLen: 2048, numFC: c.num}
		if c.feature {
			o.incompat = FeatureIncompatFastCommit
		}
		j := newJournal(t, o)
		if j.sb.NumFCBlocks() != c.wantFC || j.sb.LogEnd() != 2048-c.wantFC {
			t.Errorf("%+v: NumFCBlocks %d LogEnd %d", c, j.sb.NumFCBlocks(), j.sb.LogEnd())
		}
	}
}

var featureSets = []struct {
	name     string
	incompat FeatureIncompat
	compat   FeatureCompat
}{
	{"plain32", 0, 0},
	{"64bit", FeatureIncompat64Bit, 0},
	{"csum-v1", FeatureIncompat64Bit, FeatureCompatChecksum},
	{"csum-v2-32", FeatureIncompatCsumV2, 0},
	{"csum-v2-64", FeatureIncompatCsumV2 | FeatureIncompat64Bit, 0},
	{"csum-v3-32", FeatureIncompatCsumV3, 0},
	{"csum-v3-64", FeatureIncompatCsumV3 | FeatureIncompat64Bit | FeatureIncompatRevoke, 0},
}

func TestParseDescriptor(t *testing.T) {
	for _, fs := range featureSets {
		for _, uuidEvery := range []bool{false, true} {
			t.Run(fs.name, func(t *testing.T) {
				j := newJournal(t, journalOpts{incompat: fs.incompat, compat: fs.compat})
				homes := []uint64{7, 1 << 20, 0xFFFFFFFF, 42}
				if j.sb.Has64Bit() {
					homes = append(homes, 0x1_2345_6789)
				}
				datas := make([][]byte, len(homes))
				for i, h := range homes {
					datas[i] = j.dataBlock(h, 5)
				}
				be.PutUint32(datas[1], JournalMagic) // must come out escaped
				j.descriptor(5, homes, datas, uuidEvery)
				d := j.blocks[j.sb.First()]
				tags, err := ParseDescriptor(j.sb, d)
				if err != nil {
					t.Fatal(err)
				}
				var got []uint64
				for i, tg := range tags {
					got = append(got, tg.Home)
					if tg.Escaped() != (i == 1) || tg.Last() != (i == len(homes)-1) || tg.SameUUID() == (uuidEvery || i == 0) {
						t.Errorf("tag %d flags %s", i, tg.Flags)
					}
				}
				if !slices.Equal(got, homes) {
					t.Errorf("homes %v, want %v", got, homes)
				}
				if j.sb.HasCsumV2V3() {
					d[len(d)-1] ^= 1
					if _, err := ParseDescriptor(j.sb, d); !errors.Is(err, ErrBadChecksum) {
						t.Errorf("damaged tail: err = %v", err)
					}
				}
			})
		}
	}
}

// Without LAST_TAG the kernel keeps reading tags until the block is full.
func TestParseDescriptorFillsBlock(t *testing.T) {
	j := newJournal(t, journalOpts{incompat: FeatureIncompatCsumV3})
	d := j.header(BlockTypeDescriptor, 1)
	for off := HeaderSize; off+16 <= len(d)-4; off += 16 {
		be.PutUint32(d[off:], uint32(off))
		be.PutUint32(d[off+4:], uint32(TagFlagSameUUID))
	}
	j.sealTail(d)
	tags, err := ParseDescriptor(j.sb, d)
	if err != nil {
		t.Fatal(err)
	}
	if want := (1024 - 12 - 4) / 16; len(tags) != want {
		t.Errorf("%d tags, want %d", len(tags), want)
	}
}

func TestParseDescriptorRejects(t *testing.T) {
	j := newJournal(t, journalOpts{})
	d := j.header(BlockTypeDescriptor, 1)
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"short", d[:512], ErrCorrupt},
		{"long", append(d, 0), ErrCorrupt},
		{"magic", make([]byte, 1024), ErrBadMagic},
		{"commit", j.header(BlockTypeCommit, 1), ErrCorrupt},
	} {
		if _, err := ParseDescriptor(j.sb, c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestParseRevoke(t *testing.T) {
	for _, fs := range featureSets {
		t.Run(fs.name, func(t *testing.T) {
			j := newJournal(t, journalOpts{incompat: fs.incompat, compat: fs.compat})
			recs := []uint64{3, 99, 0xFFFFFFFF}
			if j.sb.Has64Bit() {
				recs = append(recs, 0xAB_0000_0001)
			}
			j.revoke(9, recs)
			b := j.blocks[j.sb.First()]
			got, err := ParseRevoke(j.sb, b)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, recs) {
				t.Errorf("revoked %v, want %v", got, recs)
			}
			limit := 1024
			if j.sb.HasCsumV2V3() {
				limit -= BlockTailSize
			}
			be.PutUint32(b[HeaderSize:], uint32(limit))
			j.sealTail(b)
			if _, err := ParseRevoke(j.sb, b); err != nil {
				t.Errorf("r_count at the limit: %v", err)
			}
			be.PutUint32(b[HeaderSize:], uint32(limit+1))
			j.sealTail(b)
			if _, err := ParseRevoke(j.sb, b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("huge r_count: err = %v", err)
			}
			if j.sb.HasCsumV2V3() {
				be.PutUint32(b[HeaderSize:], 16)
				if _, err := ParseRevoke(j.sb, b); !errors.Is(err, ErrBadChecksum) {
					t.Errorf("stale tail: err = %v", err)
				}
			}
		})
	}
}

func TestParseCommit(t *testing.T) {
	j := newJournal(t, journalOpts{incompat: FeatureIncompatCsumV3 | FeatureIncompat64Bit})
	b := j.commitBlock(77, 1700000123)
	c, err := ParseCommit(j.sb, b)
	if err != nil {
		t.Fatal(err)
	}
	if c.Sequence != 77 || c.Sec != 1700000123 || c.Nsec != 12345 {
		t.Errorf("commit %+v", c)
	}
	b[0x40] ^= 0x80
	if _, err := ParseCommit(j.sb, b); !errors.Is(err, ErrBadChecksum) {
		t.Errorf("damaged commit: err = %v", err)
	}
	if _, err := ParseCommit(j.sb, j.header(BlockTypeRevoke, 77)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("revoke as commit: err = %v", err)
	}
}

func TestParseHeaderAndUnescape(t *testing.T) {
	if _, ok := ParseHeader([]byte{0xC0, 0x3B, 0x39}); ok {
		t.Error("short header accepted")
	}
	b := []byte{0xC0, 0x3B, 0x39, 0x98, 0, 0, 0, 2, 0, 0, 1, 0}
	h, ok := ParseHeader(b)
	if !ok || h.BlockType != BlockTypeCommit || h.Sequence != 256 {
		t.Errorf("header %+v ok=%v", h, ok)
	}
	z := make([]byte, 8)
	Unescape(z)
	if be.Uint32(z) != JournalMagic || z[4] != 0 {
		t.Errorf("unescaped % x", z)
	}
	Unescape(z[:2]) // too short: must not panic
}

func TestNextBlock(t *testing.T) {
	j := newJournal(t, journalOpts{incompat: FeatureIncompatFastCommit, maxLen: 1300, first: 4, numFC: 100})
	for _, c := range []struct{ in, want uint32 }{{4, 5}, {1198, 1199}, {1199, 4}, {0, 4}, {1250, 4}, {0xFFFFFFFF, 4}} {
		if got := j.sb.NextBlock(c.in); got != c.want {
			t.Errorf("NextBlock(%d) = %d, want %d", c.in, got, c.want)
		}
	}
	if j.sb.InLog(3) || !j.sb.InLog(4) || !j.sb.InLog(1199) || j.sb.InLog(1200) {
		t.Error("InLog bounds")
	}
}
