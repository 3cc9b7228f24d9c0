package layout

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// loadImage decompresses testdata/NAME.gz (built by make-images.sh).
func loadImage(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", name+".gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openImageFile opens the image file at path for the test's length.
func openImageFile(t testing.TB, path string) *Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	im, err := OpenImage(f)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// seqContent is what make-images.sh's seq_file writes.
func seqContent(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %06d of the protected log\n", i)
	}
	return b.Bytes()[:n]
}

var supportedImages = []string{"b1k-journal.img", "b4k-journal.img", "b4k-nojournal.img", "b1k-nojournal.img", "b4k-journal-data.img"}

func TestStructSizes(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want int
	}{
		{SuperBlock{}, SuperBlockSize},
		{GroupDesc{}, GroupDescSize64},
		{Inode{}, InodeStructSize},
		{ExtentHeader{}, ExtentEntrySize},
		{ExtentIdx{}, ExtentEntrySize},
		{Extent{}, ExtentEntrySize},
		{DirEntry2Header{}, DirEntryHeaderSize},
		{DirEntryTail{}, DirTailSize},
		{DxRootInfo{}, 8},
		{DxCountLimit{}, 4},
		{DxEntry{}, DxEntrySize},
	} {
		if got := binary.Size(tc.v); got != tc.want {
			t.Errorf("binary.Size(%T) = %d, want %d", tc.v, got, tc.want)
		}
	}
}

func TestSuperBlockFields(t *testing.T) {
	for _, tc := range []struct {
		img       string
		blockSize int
		blocks    uint64
		journal   bool
		mode      string
	}{
		{"b1k-journal.img", 1024, 8192, true, ""},
		{"b4k-journal.img", 4096, 4096, true, ""},
		{"b4k-nojournal.img", 4096, 4096, false, ""},
		{"b4k-journal-data.img", 4096, 4096, true, "journal"},
	} {
		t.Run(tc.img, func(t *testing.T) {
			img := loadImage(t, tc.img)
			raw := img[SuperBlockOffset : SuperBlockOffset+SuperBlockSize]
			sb, err := ParseSuperBlock(raw)
			if err != nil {
				t.Fatal(err)
			}
			if sb.BlockSize() != tc.blockSize || sb.BlocksCount() != tc.blocks {
				t.Errorf("block size %d count %d, want %d %d", sb.BlockSize(), sb.BlocksCount(), tc.blockSize, tc.blocks)
			}
			if sb.InodeSizeBytes() != 256 {
				t.Errorf("inode size %d", sb.InodeSizeBytes())
			}
			if want := [16]byte{0x6b, 0x1d, 0x2c, 0x4e, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0xab, 0x01}; sb.UUID != want {
				t.Errorf("uuid %x", sb.UUID)
			}
			if !sb.HasMetadataCsum() || !sb.VerifyChecksum(raw) {
				t.Errorf("superblock checksum does not verify")
			}
			if got := sb.FeatureCompat&CompatHasJournal != 0; got != tc.journal {
				t.Errorf("has_journal %v", got)
			}
			if tc.journal && sb.JournalInum != 8 {
				t.Errorf("journal inode %d", sb.JournalInum)
			}
			if sb.JournalMode() != tc.mode {
				t.Errorf("journal mode %q, want %q", sb.JournalMode(), tc.mode)
			}
			if err := sb.Supported(); err != nil {
				t.Errorf("Supported: %v", err)
			}
			// Flipping a byte breaks the checksum.
			bad := bytes.Clone(raw)
			bad[0x78] ^= 1
			if sb.VerifyChecksum(bad) {
				t.Error("checksum verified a modified superblock")
			}
		})
	}
}

func TestUnsupportedFeatures(t *testing.T) {
	for _, tc := range []struct{ img, want string }{
		{"unsupported-inline-data.img", "inline_data"},
		{"unsupported-bigalloc.img", "bigalloc"},
	} {
		info, err := Inspect(bytes.NewReader(loadImage(t, tc.img)))
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(info.Unsupported, ErrUnsupported) || !strings.Contains(info.Unsupported.Error(), tc.want) {
			t.Errorf("%s: Unsupported = %v, want %s", tc.img, info.Unsupported, tc.want)
		}
	}
	// Hand-made refusals: external journal, meta_bg, unknown bits.
	raw := loadImage(t, "b4k-journal.img")[SuperBlockOffset : SuperBlockOffset+SuperBlockSize]
	for _, tc := range []struct {
		name string
		edit func(sb *SuperBlock)
		want string
	}{
		{"external journal", func(sb *SuperBlock) { sb.JournalInum = 0 }, "external journal"},
		{"meta_bg", func(sb *SuperBlock) { sb.FeatureIncompat |= IncompatMetaBG }, "meta_bg"},
		{"encrypt", func(sb *SuperBlock) { sb.FeatureIncompat |= IncompatEncrypt }, "encrypt"},
		{"casefold", func(sb *SuperBlock) { sb.FeatureIncompat |= IncompatCasefold }, "casefold"},
		{"journal_dev", func(sb *SuperBlock) { sb.FeatureIncompat |= IncompatJournalDev }, "journal_dev"},
		{"unknown incompat", func(sb *SuperBlock) { sb.FeatureIncompat |= 0x80000000 }, "0x80000000"},
		{"no extents", func(sb *SuperBlock) { sb.FeatureIncompat &^= IncompatExtents }, "extents"},
		{"small groups", func(sb *SuperBlock) { sb.BlocksPerGroup = 256 }, "blocks per group"},
	} {
		sb, err := ParseSuperBlock(raw)
		if err != nil {
			t.Fatal(err)
		}
		tc.edit(sb)
		err = sb.Supported()
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestParseSuperBlockRejects(t *testing.T) {
	raw := loadImage(t, "b1k-journal.img")[SuperBlockOffset : SuperBlockOffset+SuperBlockSize]
	for _, tc := range []struct {
		name string
		off  int
		val  []byte
		want error
	}{
		{"magic", 0x38, []byte{0, 0}, ErrBadMagic},
		{"block size", 0x18, []byte{7, 0, 0, 0}, ErrCorrupt},
		{"blocks per group", 0x20, []byte{0, 0, 0, 0}, ErrCorrupt},
		{"inode size", 0x58, []byte{100, 0}, ErrCorrupt},
		{"inodes count", 0x0, []byte{1, 0, 0, 0}, ErrCorrupt},
		// 1 KiB blocks: the superblock is block 1, and so is the first data block.
		{"first data block 0", 0x14, []byte{0, 0, 0, 0}, ErrCorrupt},
		{"first data block 2", 0x14, []byte{2, 0, 0, 0}, ErrCorrupt},
	} {
		b := bytes.Clone(raw)
		copy(b[tc.off:], tc.val)
		_, err := ParseSuperBlock(b)
		var fe *FormatError
		if !errors.Is(err, tc.want) || !errors.As(err, &fe) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := ParseSuperBlock(raw[:100]); !errors.Is(err, ErrShort) {
		t.Errorf("short: %v", err)
	}
	// 4 KiB blocks: the first data block is 0.
	raw4 := loadImage(t, "b4k-journal.img")[SuperBlockOffset : SuperBlockOffset+SuperBlockSize]
	b := bytes.Clone(raw4)
	binary.LittleEndian.PutUint32(b[0x14:], 1)
	if _, err := ParseSuperBlock(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("4 KiB blocks, first data block 1: %v", err)
	}
}

// handMadeSuper is a 4 KiB image holding only a superblock: 1 KiB blocks,
// 64bit and extents, edited by mod.
func handMadeSuper(mod func(b []byte)) []byte {
	img := make([]byte, 4096)
	b := img[SuperBlockOffset : SuperBlockOffset+SuperBlockSize]
	le := binary.LittleEndian
	le.PutUint16(b[0x38:], SuperBlockMagic)
	le.PutUint32(b[0x20:], 8192) // blocks per group
	le.PutUint32(b[0x28:], 8)    // inodes per group
	le.PutUint32(b[0x4C:], 1)    // revision 1
	le.PutUint16(b[0x58:], 256)  // inode size
	le.PutUint32(b[0x14:], 1)    // first data block
	le.PutUint32(b[0x60:], uint32(Incompat64Bit|IncompatExtents))
	mod(b)
	return img
}

// Counts no mke2fs writes, which would make the group arithmetic wrap or
// the descriptor table too large to read, are refused before any
// allocation sized by them.
func TestHostileGeometry(t *testing.T) {
	le := binary.LittleEndian
	// 2^64-1 blocks: the group count used to wrap to 0.
	img := handMadeSuper(func(b []byte) {
		le.PutUint32(b[0x4:], 0xFFFFFFFF)
		le.PutUint32(b[0x150:], 0xFFFFFFFF)
	})
	if _, err := ParseSuperBlock(img[SuperBlockOffset : SuperBlockOffset+SuperBlockSize]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("2^64-1 blocks: %v", err)
	}
	if _, err := Inspect(bytes.NewReader(img)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Inspect, 2^64-1 blocks: %v", err)
	}
	// 2^20 groups of 1024-byte descriptors: a 1 GiB table described by a
	// 4 KiB image.
	img = handMadeSuper(func(b []byte) {
		le.PutUint32(b[0x20:], 1)
		le.PutUint32(b[0x28:], 1)
		le.PutUint16(b[0xFE:], 1024)
		le.PutUint32(b[0x4:], 1<<20+1)
		le.PutUint32(b[0x0:], 1<<20)
	})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := OpenImage(bytes.NewReader(img))
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "descriptor table") {
		t.Errorf("1 GiB descriptor table: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("refusing the table allocated %d bytes", n)
	}
}

// TestChecksumsAndFiles walks every supported image: group descriptor,
// inode, extent-tail and directory-tail checksums verify, LookupPath finds
// the files, and the block map reads back exactly what make-images.sh wrote.
func TestChecksumsAndFiles(t *testing.T) {
	for _, name := range supportedImages {
		t.Run(name, func(t *testing.T) {
			img := loadImage(t, name)
			im, err := OpenImage(bytes.NewReader(img))
			if err != nil {
				t.Fatal(err)
			}
			seed := im.SB.ChecksumSeed()
			ds := im.SB.DescSizeBytes()
			gdt := img[int(im.SB.GroupDescBlock())*im.BlockSize():]
			for g := range im.Groups {
				raw := gdt[g*ds : (g+1)*ds]
				if got := GroupDescChecksum(seed, uint32(g), raw); got != im.Groups[g].Checksum {
					t.Errorf("group %d checksum %#x, stored %#x", g, got, im.Groups[g].Checksum)
				}
			}
			for _, tc := range []struct {
				path string
				want []byte
			}{
				{"var/log/app.log", seqContent(5000)},
				{"/var/log/big.log", seqContent(70000)},
				{"var/log/empty.log", nil},
				{"var/log/frag.log", fragContent()},
			} {
				ino, err := LookupPath(bytes.NewReader(img), tc.path)
				if err != nil {
					t.Fatalf("%s: %v", tc.path, err)
				}
				in, raw, err := im.ReadInode(ino)
				if err != nil {
					t.Fatal(err)
				}
				if !VerifyInodeChecksum(seed, uint32(ino), raw) {
					t.Errorf("%s: inode checksum does not verify", tc.path)
				}
				raw[0x10] ^= 1 // mtime
				if VerifyInodeChecksum(seed, uint32(ino), raw) {
					t.Errorf("%s: inode checksum verified a modified inode", tc.path)
				}
				raw[0x10] ^= 1
				if !in.IsRegular() || in.Size() != uint64(len(tc.want)) {
					t.Errorf("%s: mode %#o size %d, want regular %d", tc.path, in.Mode, in.Size(), len(tc.want))
				}
				maps, tree, err := im.FileMap(in)
				if err != nil {
					t.Fatal(err)
				}
				iseed := InodeSeed(seed, uint32(ino), in.Generation)
				for _, blk := range tree {
					b, _ := im.ReadBlock(blk)
					n, err := ParseExtentNode(b)
					if err != nil {
						t.Fatal(err)
					}
					if !VerifyExtentTail(iseed, b, n.Header) {
						t.Errorf("%s: extent block %d tail does not verify", tc.path, blk)
					}
				}
				if tc.path == "var/log/frag.log" && (len(maps) <= 4 || len(tree) != 1) {
					t.Errorf("frag.log: %d extents in %d tree blocks, want more than 4 in 1", len(maps), len(tree))
				}
				got := readMapped(img, im.BlockSize(), maps, len(tc.want))
				if !bytes.Equal(got, tc.want) {
					t.Errorf("%s: content differs from what make-images.sh wrote", tc.path)
				}
			}
			// The directory holding the logs has a valid checksum tail.
			dino, err := im.Lookup("var/log")
			if err != nil {
				t.Fatal(err)
			}
			din, _, _ := im.ReadInode(dino)
			maps, _, err := im.FileMap(din)
			if err != nil || len(maps) == 0 {
				t.Fatal(err)
			}
			b, _ := im.ReadBlock(maps[0].Physical)
			if !VerifyDirTail(InodeSeed(seed, uint32(dino), din.Generation), b) {
				t.Error("directory tail does not verify")
			}
			if _, err := im.Lookup("var/log/missing"); !errors.Is(err, ErrNotFound) {
				t.Errorf("missing file: %v", err)
			}
		})
	}
}

func fragContent() []byte {
	out := make([]byte, 11*8192+3072)
	for i := 0; i < 12; i++ {
		copy(out[i*8192:], seqContent(3072))
	}
	return out
}

func readMapped(img []byte, bs int, maps []Mapping, size int) []byte {
	out := make([]byte, size)
	for _, m := range maps {
		for i := uint64(0); i < m.Len; i++ {
			lo := int(m.Logical+i) * bs
			if lo >= size || m.Unwritten {
				continue
			}
			p := int(m.Physical+i) * bs
			copy(out[lo:min(lo+bs, size)], img[p:p+bs])
		}
	}
	return out
}

func TestParseExtentNodeRejects(t *testing.T) {
	good := func() []byte {
		b := make([]byte, 60)
		binary.LittleEndian.PutUint16(b[0:], ExtentMagic)
		binary.LittleEndian.PutUint16(b[2:], 2) // entries
		binary.LittleEndian.PutUint16(b[4:], 4) // max
		binary.LittleEndian.PutUint32(b[12:], 0)
		binary.LittleEndian.PutUint16(b[16:], 2)
		binary.LittleEndian.PutUint32(b[20:], 100)
		binary.LittleEndian.PutUint32(b[24:], 2)
		binary.LittleEndian.PutUint16(b[28:], 32768+3) // unwritten, 3 blocks
		binary.LittleEndian.PutUint32(b[32:], 200)
		return b
	}
	n, err := ParseExtentNode(good())
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Extents) != 2 || n.Extents[1].Length() != 3 || !n.Extents[1].Unwritten() || n.Extents[0].Start() != 100 {
		t.Fatalf("decoded %+v", n.Extents)
	}
	for _, tc := range []struct {
		name string
		edit func(b []byte)
	}{
		{"magic", func(b []byte) { b[0] = 0 }},
		{"entries over max", func(b []byte) { binary.LittleEndian.PutUint16(b[2:], 5) }},
		{"max over room", func(b []byte) { binary.LittleEndian.PutUint16(b[4:], 5) }},
		{"depth", func(b []byte) { binary.LittleEndian.PutUint16(b[6:], 6) }},
		{"overlap", func(b []byte) { binary.LittleEndian.PutUint32(b[24:], 1) }},
		{"zero length", func(b []byte) { binary.LittleEndian.PutUint16(b[16:], 0) }},
	} {
		b := good()
		tc.edit(b)
		if _, err := ParseExtentNode(b); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestExtentTreeRejectsCycles(t *testing.T) {
	// An index node at block 5 pointing to itself.
	blk := make([]byte, 1024)
	binary.LittleEndian.PutUint16(blk[0:], ExtentMagic)
	binary.LittleEndian.PutUint16(blk[2:], 1)
	binary.LittleEndian.PutUint16(blk[4:], 84)
	binary.LittleEndian.PutUint16(blk[6:], 1)
	binary.LittleEndian.PutUint32(blk[16:], 5)
	root := make([]byte, 60)
	binary.LittleEndian.PutUint16(root[0:], ExtentMagic)
	binary.LittleEndian.PutUint16(root[2:], 1)
	binary.LittleEndian.PutUint16(root[4:], 4)
	binary.LittleEndian.PutUint16(root[6:], 2)
	binary.LittleEndian.PutUint32(root[16:], 5)
	_, _, err := ExtentTree(root, 100, func(uint64) ([]byte, error) { return blk, nil })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("cycle: %v", err)
	}
}

func TestParseDirBlock(t *testing.T) {
	img := loadImage(t, "b1k-journal.img")
	im, err := OpenImage(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	dino, _ := im.Lookup("var/log")
	din, _, _ := im.ReadInode(dino)
	entries, err := im.ReadDir(din)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	if got, want := strings.Join(names, ","), ".,..,app.log,big.log,frag.log,empty.log"; got != want {
		t.Errorf("entries %s, want %s", got, want)
	}
	maps, _, _ := im.FileMap(din)
	b, _ := im.ReadBlock(maps[0].Physical)
	for _, tc := range []struct {
		name string
		off  int
		val  []byte
	}{
		{"rec_len zero", 4, []byte{0, 0}},
		{"rec_len odd", 4, []byte{13, 0}},
		{"rec_len past block", 4, []byte{0xF0, 0xFF}},
		{"name past rec_len", 6, []byte{200}},
	} {
		bad := bytes.Clone(b)
		copy(bad[tc.off:], tc.val)
		if _, err := ParseDirBlock(bad); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrShort) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestDxRoot(t *testing.T) {
	// A hand-built htree root for a 1 KiB block, as the kernel lays it out.
	b := make([]byte, 1024)
	binary.LittleEndian.PutUint32(b[0:], 12)
	binary.LittleEndian.PutUint16(b[4:], 12)
	b[6], b[7], b[8] = 1, 2, '.'
	binary.LittleEndian.PutUint32(b[12:], 2)
	binary.LittleEndian.PutUint16(b[16:], 1012)
	b[18], b[19], b[20], b[21] = 2, 2, '.', '.'
	b[0x1C], b[0x1D] = 1, 8
	binary.LittleEndian.PutUint16(b[0x20:], 123) // limit
	binary.LittleEndian.PutUint16(b[0x22:], 2)   // count
	binary.LittleEndian.PutUint32(b[0x24:], 1)   // block for the lowest hashes
	binary.LittleEndian.PutUint32(b[0x28:], 0x80000000)
	binary.LittleEndian.PutUint32(b[0x2C:], 2)
	r, err := ParseDxRoot(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Block0 != 1 || len(r.Entries) != 1 || r.Entries[0].Block != 2 {
		t.Errorf("dx_root %+v", r)
	}
	entries, err := ParseDirBlock(b)
	if err != nil || len(LiveEntries(entries)) != 2 {
		t.Errorf("dx_root as a linear block: %v %+v", err, entries)
	}
	b[0x1D] = 9
	if _, err := ParseDxRoot(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("bad info_length: %v", err)
	}
}

func TestFeatureStrings(t *testing.T) {
	if got := (IncompatExtents | IncompatInlineData | 0x40000000).String(); got != "extent|inline_data|0x40000000" {
		t.Errorf("incompat string %q", got)
	}
	if got := (DefmJModeData | 0x4).String(); got != "user_xattr|journal_data" {
		t.Errorf("mount opts %q", got)
	}
	if got := (InodeFlagAppend | InodeFlagExtents).String(); got != "append|extents" {
		t.Errorf("inode flags %q", got)
	}
}

func TestInspect(t *testing.T) {
	info, err := Inspect(bytes.NewReader(loadImage(t, "b4k-journal-data.img")))
	if err != nil {
		t.Fatal(err)
	}
	if info.BlockSize != 4096 || !info.HasJournal || info.JournalMode != "journal" || info.Unsupported != nil || !info.Delalloc {
		t.Errorf("%+v", info)
	}
	if !strings.Contains(strings.Join(info.Features, " "), "metadata_csum") {
		t.Errorf("features %v", info.Features)
	}
	if _, err := Inspect(bytes.NewReader(make([]byte, 4096))); !errors.Is(err, ErrBadMagic) {
		t.Errorf("zero image: %v", err)
	}
}

// TestInodeDecode holds the hand-written inode decoder to encoding/binary's
// reading of the same struct, over random records.
func TestInodeDecode(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b [InodeStructSize]byte
	for range 1000 {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		var got, want Inode
		got.decode(&b)
		if _, err := binary.Decode(b[:], binary.LittleEndian, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("decode differs from binary.Decode:\n got %+v\nwant %+v", got, want)
		}
	}
}

// The hot decoders read fields by hand; encoding/binary over the mirrored
// structs is the reference they must agree with.
func TestHandDecodersMatchBinary(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var b [GroupDescSize64]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		var want, got GroupDesc
		if _, err := binary.Decode(b[:], binary.LittleEndian, &want); err != nil {
			t.Fatal(err)
		}
		got.decode(&b)
		if got != want {
			t.Fatalf("group descriptor %x: got %+v, want %+v", b, got, want)
		}

		node := make([]byte, 60)
		for i := range node {
			node[i] = byte(rng.Uint32())
		}
		depth := uint16(rng.IntN(2))
		le.PutUint16(node[0:], ExtentMagic)
		le.PutUint16(node[2:], 4)
		le.PutUint16(node[4:], 4)
		le.PutUint16(node[6:], depth)
		for i := range 4 { // increasing, short, non-empty entries
			e := node[ExtentEntrySize*(i+1):]
			le.PutUint32(e[0:], uint32(i*100))
			if depth == 0 {
				le.PutUint16(e[4:], uint16(1+rng.IntN(50)))
			}
		}
		n, err := ParseExtentNode(node)
		if err != nil {
			t.Fatalf("node %x: %v", node, err)
		}
		var h ExtentHeader
		binary.Decode(node, binary.LittleEndian, &h)
		if n.Header != h {
			t.Fatalf("header: got %+v, want %+v", n.Header, h)
		}
		for i := range 4 {
			e := node[ExtentEntrySize*(i+1):]
			if depth > 0 {
				var x ExtentIdx
				binary.Decode(e, binary.LittleEndian, &x)
				if n.Index[i] != x {
					t.Fatalf("index %d: got %+v, want %+v", i, n.Index[i], x)
				}
			} else {
				var x Extent
				binary.Decode(e, binary.LittleEndian, &x)
				if n.Extents[i] != x {
					t.Fatalf("extent %d: got %+v, want %+v", i, n.Extents[i], x)
				}
			}
		}
	}
}

// A tree with more extents than maxExtents is refused (a 64 KiB-block
// tree within MaxExtentTreeBlocks could otherwise hold 357 million).
func TestExtentCountBounded(t *testing.T) {
	img := loadImage(t, "b4k-journal.img")
	im, err := OpenImage(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	ino, err := im.Lookup("var/log/frag.log")
	if err != nil {
		t.Fatal(err)
	}
	in, _, err := im.ReadInode(ino)
	if err != nil {
		t.Fatal(err)
	}
	maps, _, err := im.FileMap(in)
	if err != nil || len(maps) < 2 {
		t.Fatalf("frag.log: %d extents, %v; the test needs two or more", len(maps), err)
	}
	defer func(n int) { maxExtents = n }(maxExtents)
	maxExtents = len(maps) - 1
	if _, _, err := im.FileMap(in); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%d extents with a limit of %d: %v", len(maps), maxExtents, err)
	}
	maxExtents = len(maps)
	if _, _, err := im.FileMap(in); err != nil {
		t.Fatalf("%d extents with a limit of %d: %v", len(maps), maxExtents, err)
	}
}

// An inode table address near 2^64 used to wrap around to a block inside
// the filesystem when the inode's offset was added.
func TestInodeTableAddressWraps(t *testing.T) {
	img := bytes.Clone(loadImage(t, "b4k-journal.img"))
	gd := img[4096:] // group 0's descriptor: the table follows the superblock's block
	le := binary.LittleEndian
	le.PutUint32(gd[0x8:], 0xFFFFFFFF)  // bg_inode_table_lo
	le.PutUint32(gd[0x28:], 0xFFFFFFFF) // bg_inode_table_hi
	im, err := OpenImage(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if im.SB.DescSizeBytes() < 64 {
		t.Fatalf("descriptor size %d: the test needs 64-bit descriptors", im.SB.DescSizeBytes())
	}
	if b, _, err := im.InodeAddr(20); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("inode 20 located at block %d (err %v)", b, err)
	}
}

// countingReader counts the reads of one block of the image.
type countingReader struct {
	r     io.ReaderAt
	block int64 // byte offset of the block counted
	reads int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	if off <= c.block && c.block < off+int64(len(p)) {
		c.reads++
	}
	return c.r.ReadAt(p, off)
}

// A directory whose extent tree maps one block hundreds of times (a hostile
// host can write one; the helper who found it made a root directory cost
// 3.9 GB and minutes) is read a block at a time: Lookup stops at the entry
// it looks for and reads no block past i_size. It used to collect every
// entry of every mapped block first.
func TestLookupReadsDirectoryLazily(t *testing.T) {
	img := bytes.Clone(loadImage(t, "b4k-journal.img"))
	im, err := OpenImage(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	dino, err := im.Lookup("var/log")
	if err != nil {
		t.Fatal(err)
	}
	din, _, err := im.ReadInode(dino)
	if err != nil {
		t.Fatal(err)
	}
	maps, _, err := im.FileMap(din)
	if err != nil || len(maps) != 1 || maps[0].Len != 1 {
		t.Fatalf("var/log maps %v, %v: the test needs one block", maps, err)
	}
	const bs = 4096
	dirBlk := maps[0].Physical
	leafBlk := im.SB.BlocksCount() - 1
	leaf := img[leafBlk*bs : (leafBlk+1)*bs]
	if !bytes.Equal(leaf, make([]byte, bs)) {
		t.Fatalf("block %d is in use; the test needs a free one", leafBlk)
	}
	le := binary.LittleEndian
	// A leaf of 340 one-block extents, logical blocks 0..339, all mapping
	// the directory's one block.
	const n = (bs - ExtentEntrySize) / ExtentEntrySize
	le.PutUint16(leaf[0:], ExtentMagic)
	le.PutUint16(leaf[2:], n)
	le.PutUint16(leaf[4:], n)
	for i := range n {
		e := leaf[ExtentEntrySize*(1+i):]
		le.PutUint32(e[0:], uint32(i))
		le.PutUint16(e[4:], 1)
		le.PutUint16(e[6:], uint16(dirBlk>>32))
		le.PutUint32(e[8:], uint32(dirBlk))
	}
	iblk, ioff, err := im.InodeAddr(dino)
	if err != nil {
		t.Fatal(err)
	}
	rec := img[int(iblk)*bs+ioff:]
	setSize := func(blocks uint64) {
		le.PutUint32(rec[0x4:], uint32(blocks*bs))
		le.PutUint32(rec[0x6C:], uint32(blocks*bs>>32))
	}
	root := rec[0x28 : 0x28+60]
	clear(root)
	le.PutUint16(root[0:], ExtentMagic)
	le.PutUint16(root[2:], 1)
	le.PutUint16(root[4:], 4)
	le.PutUint16(root[6:], 1) // depth 1: one index entry to the leaf
	le.PutUint32(root[16:], uint32(leafBlk))
	le.PutUint16(root[20:], uint16(leafBlk>>32))

	lookup := func(path string) (uint64, int, error) {
		t.Helper()
		cr := &countingReader{r: bytes.NewReader(img), block: int64(dirBlk) * bs}
		im, err := OpenImage(cr)
		if err != nil {
			t.Fatal(err)
		}
		ino, err := im.Lookup(path)
		return ino, cr.reads, err
	}
	setSize(n)
	if ino, reads, err := lookup("var/log/app.log"); err != nil || ino == 0 || reads != 1 {
		t.Errorf("app.log: inode %d, %v, after %d reads of the directory block; want 1", ino, err, reads)
	}
	if _, reads, err := lookup("var/log/none"); !errors.Is(err, ErrNotFound) || reads != n {
		t.Errorf("a missing name: %v after %d reads; want ErrNotFound after %d", err, reads, n)
	}
	setSize(2)
	if _, reads, err := lookup("var/log/none"); !errors.Is(err, ErrNotFound) || reads != 2 {
		t.Errorf("i_size of 2 blocks: %v after %d reads; want ErrNotFound after 2", err, reads)
	}
}

// extentNode builds an extent tree node of size bytes: depth, then for an
// index node (ei_block, child) pairs, for a leaf (ee_block, len, start)
// triples.
func extentNode(size int, depth uint16, entries ...[3]uint32) []byte {
	b := make([]byte, size)
	le := binary.LittleEndian
	le.PutUint16(b[0:], ExtentMagic)
	le.PutUint16(b[2:], uint16(len(entries)))
	le.PutUint16(b[4:], uint16((size-ExtentEntrySize)/ExtentEntrySize))
	le.PutUint16(b[6:], depth)
	for i, e := range entries {
		x := b[ExtentEntrySize*(1+i):]
		le.PutUint32(x[0:], e[0])
		if depth > 0 {
			le.PutUint32(x[4:], e[1])
			continue
		}
		le.PutUint16(x[4:], uint16(e[1]))
		le.PutUint32(x[8:], e[2])
	}
	return b
}

// A node below the root must map only the logical range its parent's index
// entry gives it, as the kernel finds blocks through the index: its first
// entry starts at the index entry's ei_block (ext4_valid_extent_entries),
// an index node has entries (__ext4_ext_check), and nothing reaches the
// next index entry's ei_block. A reader that flattened every leaf showed
// extents the kernel's lookup never reaches.
func TestExtentTreeChildInsideIndexRange(t *testing.T) {
	type tree struct {
		root   []byte
		blocks map[uint64][]byte
	}
	walk := func(tr tree) ([]Mapping, error) {
		maps, _, err := ExtentTree(tr.root, 1000, func(b uint64) ([]byte, error) {
			if blk, ok := tr.blocks[b]; ok {
				return blk, nil
			}
			return nil, fmt.Errorf("block %d not in the test tree", b)
		})
		return maps, err
	}
	// Root: logical [0,10) in leaf 50, [10,...) in leaf 51.
	good := func() tree {
		return tree{
			root: extentNode(60, 1, [3]uint32{0, 50}, [3]uint32{10, 51}),
			blocks: map[uint64][]byte{
				50: extentNode(1024, 0, [3]uint32{0, 4, 100}, [3]uint32{6, 4, 110}),
				51: extentNode(1024, 0, [3]uint32{10, 5, 200}),
			},
		}
	}
	maps, err := walk(good())
	if err != nil || len(maps) != 3 {
		t.Fatalf("a well-formed tree: %v, %v", maps, err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(tr *tree)
	}{
		{"extent past the next index entry", "outside the logical range [0,10)", func(tr *tree) {
			tr.blocks[50] = extentNode(1024, 0, [3]uint32{0, 4, 100}, [3]uint32{12, 2, 110})
		}},
		{"extent past the next index entry, whose leaf is empty", "outside the logical range [0,10)", func(tr *tree) {
			// The kernel's lookup of block 12 goes to leaf 51: a hole.
			tr.blocks[50] = extentNode(1024, 0, [3]uint32{0, 4, 100}, [3]uint32{12, 2, 110})
			tr.blocks[51] = extentNode(1024, 0)
		}},
		{"extent running into the next index entry's range", "outside the logical range [0,10)", func(tr *tree) {
			tr.blocks[50] = extentNode(1024, 0, [3]uint32{0, 4, 100}, [3]uint32{6, 8, 110})
		}},
		{"first extent after the index entry's ei_block", "starts at logical block 11, its parent's index entry at 10", func(tr *tree) {
			tr.blocks[51] = extentNode(1024, 0, [3]uint32{11, 5, 200})
		}},
		{"first extent before the index entry's ei_block", "starts at logical block 8, its parent's index entry at 10", func(tr *tree) {
			tr.blocks[51] = extentNode(1024, 0, [3]uint32{8, 5, 200})
		}},
		{"index node without entries", "has no entries", func(tr *tree) {
			tr.root = extentNode(60, 2, [3]uint32{0, 52})
			tr.blocks[52] = extentNode(1024, 1)
		}},
		{"root index node without entries", "has no entries", func(tr *tree) {
			tr.root = extentNode(60, 1)
		}},
		{"grandchild index past its parent's range", "outside the logical range [0,10)", func(tr *tree) {
			tr.root = extentNode(60, 2, [3]uint32{0, 52}, [3]uint32{10, 53})
			tr.blocks[52] = extentNode(1024, 1, [3]uint32{0, 50}, [3]uint32{10, 51})
			tr.blocks[53] = extentNode(1024, 1, [3]uint32{10, 54})
			tr.blocks[54] = extentNode(1024, 0, [3]uint32{10, 1, 300})
		}},
	} {
		tr := good()
		tc.edit(&tr)
		maps, err := walk(tr)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, %v; want ErrCorrupt saying %q", tc.name, maps, err, tc.want)
		}
	}
	// An empty leaf below the root maps nothing; the kernel accepts it.
	tr := good()
	tr.blocks[51] = extentNode(1024, 0)
	if maps, err := walk(tr); err != nil || len(maps) != 2 {
		t.Errorf("an empty leaf: %v, %v", maps, err)
	}
}
