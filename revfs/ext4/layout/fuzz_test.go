package layout

import (
	"bytes"
	"testing"
)

// seedBlocks returns interesting raw structures from the test images: the
// superblock, descriptor table, inode records, extent blocks, dir blocks.
func seedBlocks(f *testing.F) (sbs, gds, inodes, extents, dirs [][]byte) {
	for _, name := range []string{"b1k-journal.img", "b4k-nojournal.img"} {
		img := loadImage(f, name)
		im, err := OpenImage(bytes.NewReader(img))
		if err != nil {
			f.Fatal(err)
		}
		bs := im.BlockSize()
		sbs = append(sbs, img[SuperBlockOffset:SuperBlockOffset+SuperBlockSize])
		gdt := int(im.SB.GroupDescBlock()) * bs
		gds = append(gds, img[gdt:gdt+im.SB.DescSizeBytes()])
		for _, p := range []string{"var/log", "var/log/app.log", "var/log/frag.log"} {
			ino, err := im.Lookup(p)
			if err != nil {
				f.Fatal(err)
			}
			in, raw, _ := im.ReadInode(ino)
			inodes = append(inodes, bytes.Clone(raw))
			extents = append(extents, bytes.Clone(raw[InodeBlockOff:InodeBlockOff+InodeBlockLen]))
			maps, tree, _ := im.FileMap(in)
			for _, t := range tree {
				b, _ := im.ReadBlock(t)
				extents = append(extents, b)
			}
			if in.IsDir() {
				b, _ := im.ReadBlock(maps[0].Physical)
				dirs = append(dirs, b)
			}
		}
	}
	return
}

func FuzzSuperBlock(f *testing.F) {
	sbs, _, _, _, _ := seedBlocks(f)
	for _, s := range sbs {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := ParseSuperBlock(b)
		if err != nil {
			return
		}
		_ = sb.Supported()
		_ = sb.Features()
		_ = sb.VerifyChecksum(b)
		_ = sb.GroupDescBlocks()
		for _, ino := range []uint64{0, 1, 2, uint64(sb.InodesCount), uint64(sb.InodesCount) + 1} {
			_, off, ok := sb.InodeLocation(ino)
			if ok && off+uint64(sb.InodeSizeBytes()) > uint64(sb.InodesPerGroup)*uint64(sb.InodeSizeBytes()) {
				t.Fatalf("inode %d at offset %d outside its group's table", ino, off)
			}
		}
	})
}

// FuzzImage feeds a whole small image whose superblock and descriptor
// table are fuzzed: opening it and looking up paths must never panic.
func FuzzImage(f *testing.F) {
	sbs, gds, _, _, _ := seedBlocks(f)
	for i := range sbs {
		f.Add(sbs[i], gds[i])
	}
	base := loadImage(f, "b1k-journal.img")
	f.Fuzz(func(t *testing.T, sb, gd []byte) {
		img := bytes.Clone(base)
		copy(img[SuperBlockOffset:SuperBlockOffset+SuperBlockSize], sb)
		copy(img[2048:3072], gd)
		if _, err := Inspect(bytes.NewReader(img)); err != nil {
			return
		}
		_, _ = LookupPath(bytes.NewReader(img), "var/log/frag.log")
	})
}

func FuzzGroupDesc(f *testing.F) {
	_, gds, _, _, _ := seedBlocks(f)
	for _, g := range gds {
		f.Add(g, uint8(len(g)))
	}
	f.Fuzz(func(t *testing.T, b []byte, size uint8) {
		gd, err := ParseGroupDesc(b, int(size))
		if err != nil {
			return
		}
		_ = gd.BlockBitmap() + gd.InodeTable() + gd.InodeBitmap()
		if len(b) >= int(size) {
			_ = GroupDescChecksum(1, 0, b[:size])
		}
	})
}

func FuzzInode(f *testing.F) {
	_, _, inodes, _, _ := seedBlocks(f)
	for _, in := range inodes {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := ParseInode(b)
		if err != nil {
			return
		}
		_ = in.Size() + in.Blocks()
		_ = VerifyInodeChecksum(1, 12, b)
		_, _ = ParseExtentNode(in.Block[:])
	})
}

func FuzzExtentNode(f *testing.F) {
	_, _, _, extents, _ := seedBlocks(f)
	for _, e := range extents {
		f.Add(e)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseExtentNode(b)
		if err != nil {
			return
		}
		if int(n.Header.Entries) != len(n.Index)+len(n.Extents) {
			t.Fatalf("header says %d entries, decoded %d", n.Header.Entries, len(n.Index)+len(n.Extents))
		}
		_ = VerifyExtentTail(1, b, n.Header)
		// Walk it as a root whose children are the block itself: cycles
		// and depth mismatches must be refused, not followed.
		_, _, _ = ExtentTree(b, 1<<20, func(uint64) ([]byte, error) { return b, nil })
	})
}

func FuzzDirBlock(f *testing.F) {
	_, _, _, _, dirs := seedBlocks(f)
	for _, d := range dirs {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParseDirBlock(b)
		if err == nil {
			end := 0
			for _, e := range entries {
				if e.Off != end || e.RecLen <= 0 {
					t.Fatalf("entry at %d, expected %d", e.Off, end)
				}
				end += e.RecLen
			}
			if end != len(b) {
				t.Fatalf("records cover %d of %d bytes", end, len(b))
			}
			_ = LiveEntries(entries)
		}
		_ = HasDirTail(b)
		_ = VerifyDirTail(1, b)
		_, _ = ParseDxRoot(b)
		_, _, _, _ = ParseDxNode(b)
	})
}
