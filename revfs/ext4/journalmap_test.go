package ext4

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// journalInode returns where the journal inode's record lies: its
// inode-table block and its offset there.
func (r *rig) journalInode() (uint64, int) {
	r.t.Helper()
	blk, off, err := layout.InodeAddr(r.e.sb, r.e.groups, uint64(r.e.sb.JournalInum))
	if err != nil {
		r.t.Fatal(err)
	}
	return blk, off
}

// journalInodeBlockWith returns the inode-table block holding the journal
// inode with its record edited by edit.
func (r *rig) journalInodeBlockWith(edit func(raw []byte)) (uint64, []byte) {
	blk, off := r.journalInode()
	b := bytes.Clone(r.img.b[int64(blk)*r.bs : int64(blk+1)*r.bs])
	edit(b[off : off+r.e.sb.InodeSizeBytes()])
	return blk, b
}

// Raw inode offsets (struct ext4_inode, fs/ext4/ext4.h) and the first
// extent of i_block.
const (
	inodeSizeLoOff   = 0x4
	inodeMtimeOff    = 0x10
	inodeLinksOff    = 0x1A
	inodeBlockOff    = 0x28
	inodeCsumLoOff   = 0x7C
	firstExtentOff   = inodeBlockOff + 12 // after ext4_extent_header
	extentStartLoOff = 8                  // ee_start_lo in ext4_extent
)

func onlyLayoutChanged(t *testing.T, vs []revfs.Violation, off, n int64) {
	t.Helper()
	if len(vs) != 1 || vs[0].Kind != revfs.KindLayoutChanged || vs[0].Off != off || vs[0].Len != n {
		t.Fatalf("got %v, want one %v at [%d,+%d)", vs, revfs.KindLayoutChanged, off, n)
	}
}

// The journal inode shares an inode-table block with protected files. A
// host write of that block that moves or resizes the journal is a layout
// change, blamed on the journal's record; the kernel's own writes of the
// block (other records changed) are not.
func TestJournalInodeRemap(t *testing.T) {
	const p = "var/log/app.log"
	path := loadImage(t, "b4k-journal.img")
	add := func(off int, d uint32) func([]byte) {
		return func(raw []byte) {
			binary.LittleEndian.PutUint32(raw[off:], binary.LittleEndian.Uint32(raw[off:])+d)
		}
	}
	for _, tc := range []struct {
		name string
		edit func([]byte)
		bad  bool
	}{
		{"first extent moved", add(firstExtentOff+extentStartLoOff, 1000), true},
		{"size grown", add(inodeSizeLoOff, 1<<20), true},
		{"size shrunk", add(inodeSizeLoOff, ^uint32(1<<20)+1), true},
		{"extents flag cleared", func(raw []byte) { raw[0x20+2] &^= 0x08 }, true},
		{"links dropped to zero", func(raw []byte) { binary.LittleEndian.PutUint16(raw[inodeLinksOff:], 0) }, true},
		{"mtime and checksum only", func(raw []byte) {
			add(inodeMtimeOff, 77)(raw)
			add(inodeCsumLoOff, 1)(raw)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openRig(t, path, map[string]int64{p: 5000}, p)
			home, blk := r.journalInodeBlockWith(tc.edit)
			if f := r.e.byIno[uint64(r.ids[p])]; f.inoBlock != home {
				t.Logf("note: %s's inode is in block %d, the journal's in %d", p, f.inoBlock, home)
			}
			_, recOff := r.journalInode()
			vs := r.e.CheckWrite(int64(home)*r.bs, blk)
			if !tc.bad {
				if len(vs) != 0 {
					t.Fatalf("got %v, want nothing", vs)
				}
				return
			}
			onlyLayoutChanged(t, vs, int64(home)*r.bs+int64(recOff), int64(r.e.sb.InodeSizeBytes()))
			t.Log(vs[0])

			// Through the journal: blamed on the commit block.
			vs, commitOff := newTxWriter(r).commit([]uint64{home}, [][]byte{blk})
			onlyLayoutChanged(t, vs, commitOff, r.bs)
		})
	}
}

// withJournalLeaf returns a copy of the image at path whose journal inode
// maps its extents through a one-leaf tree (depth 1) in a free block, as
// mke2fs makes it for a journal in more pieces than i_block holds, and the
// leaf's block.
func withJournalLeaf(t *testing.T, path string) (string, uint64) {
	t.Helper()
	r := openRig(t, path, nil)
	inoBlock, inoOff := r.journalInode()
	rec := r.img.b[int64(inoBlock)*r.bs+int64(inoOff):]
	if depth := binary.LittleEndian.Uint16(rec[inodeBlockOff+6:]); depth != 0 {
		t.Fatalf("test image: the journal already has an extent tree (depth %d)", depth)
	}
	// A free block: clear in group 0's bitmap, past the metadata.
	var leaf uint64
	for bb, g := range r.e.bitmapG {
		if g != 0 {
			continue
		}
		bm := r.e.bitmaps[bb]
		for b := uint64(r.e.blocks) - 1; b > 0; b-- {
			if b < uint64(len(bm))*8 && bm[b/8]&(1<<(b%8)) == 0 {
				leaf = b
				break
			}
		}
	}
	if leaf == 0 {
		t.Fatal("no free block in group 0")
	}
	img := bytes.Clone(r.img.b)
	rec = img[int64(inoBlock)*r.bs+int64(inoOff):]
	iblock := rec[inodeBlockOff : inodeBlockOff+60]
	entries := binary.LittleEndian.Uint16(iblock[2:])
	// The leaf: the inode's header and extents, with room for more.
	lb := img[int64(leaf)*r.bs : int64(leaf+1)*r.bs]
	clear(lb)
	copy(lb, iblock[:12+12*int(entries)])
	binary.LittleEndian.PutUint16(lb[4:], uint16((r.bs-12)/12)) // eh_max
	// The root: one index entry to the leaf, depth 1.
	clear(iblock)
	binary.LittleEndian.PutUint16(iblock[0:], 0xF30A)
	binary.LittleEndian.PutUint16(iblock[2:], 1)
	binary.LittleEndian.PutUint16(iblock[4:], 4)
	binary.LittleEndian.PutUint16(iblock[6:], 1)
	binary.LittleEndian.PutUint32(iblock[12+4:], uint32(leaf)) // ei_leaf_lo
	out := filepath.Join(t.TempDir(), "deep-journal.img")
	if err := os.WriteFile(out, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return out, leaf
}

// A journal whose extents live in a leaf block: the leaf is watched like
// the inode, and a write remapping the journal there is a layout change.
func TestJournalExtentLeafRemap(t *testing.T) {
	const p = "var/log/app.log"
	path, leaf := withJournalLeaf(t, loadImage(t, "b4k-journal.img"))
	r := openRig(t, path, map[string]int64{p: 5000}, p)
	if n := r.e.jnl.length(); n != 1024 {
		t.Fatalf("the journal read through its leaf maps %d blocks, want 1024", n)
	}
	off := int64(leaf) * r.bs
	same := bytes.Clone(r.img.b[off : off+r.bs])
	if vs := r.write(off, same); len(vs) != 0 {
		t.Fatalf("the leaf rewritten as it is: %v", vs)
	}
	moved := bytes.Clone(same)
	binary.LittleEndian.PutUint32(moved[12+extentStartLoOff:], binary.LittleEndian.Uint32(moved[12+extentStartLoOff:])+1000)
	onlyLayoutChanged(t, r.e.CheckWrite(off, moved), off, r.bs)

	// The inode pointing the tree at another block (a copy of the leaf
	// elsewhere) is one too, though the map is the same.
	other := leaf - 1
	home, blk := r.journalInodeBlockWith(func(raw []byte) {
		binary.LittleEndian.PutUint32(raw[inodeBlockOff+12+4:], uint32(other))
	})
	_, inoOff := r.journalInode()
	copy(r.img.b[int64(other)*r.bs:], same)
	r.written.Add(other, 1)
	onlyLayoutChanged(t, r.e.CheckWrite(int64(home)*r.bs, blk), int64(home)*r.bs+int64(inoOff), int64(r.e.sb.InodeSizeBytes()))
}
