package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// editJournalInode rewrites the journal inode of img (in place) with edit,
// which gets the raw inode record, then fixes its checksum.
func editJournalInode(t *testing.T, img []byte, edit func(rec []byte)) {
	t.Helper()
	home, err := layout.OpenImage(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	ino := uint64(home.SB.JournalInum)
	blk, off, err := home.InodeAddr(ino)
	if err != nil {
		t.Fatal(err)
	}
	at := int(blk)*home.BlockSize() + off
	rec := img[at : at+home.SB.InodeSizeBytes()]
	edit(rec)
	c := layout.InodeChecksum(home.SB.ChecksumSeed(), uint32(ino), rec)
	binary.LittleEndian.PutUint16(rec[0x7C:], uint16(c))
	binary.LittleEndian.PutUint16(rec[0x82:], uint16(c>>16))
}

// punchJournalBlock unmaps journal block jb from the journal inode of img,
// splitting the root extent that maps it (the fixtures' journals have a
// depth-0 tree of three extents, with room for one more).
func punchJournalBlock(t *testing.T, img []byte, jb uint32) {
	t.Helper()
	editJournalInode(t, img, func(rec []byte) {
		root := rec[0x28 : 0x28+60]
		n, err := layout.ParseExtentNode(root)
		if err != nil || n.Header.Depth != 0 {
			t.Fatalf("fixture: journal extent root %+v, %v: the test needs a depth-0 tree", n, err)
		}
		var out []layout.Extent
		for _, x := range n.Extents {
			end := x.Block + x.Length()
			if jb < x.Block || jb >= end {
				out = append(out, x)
				continue
			}
			if jb > x.Block {
				y := x
				y.Len = uint16(jb - x.Block)
				out = append(out, y)
			}
			if jb+1 < end {
				start := x.Start() + uint64(jb+1-x.Block)
				out = append(out, layout.Extent{Block: jb + 1, Len: uint16(end - jb - 1), StartHi: uint16(start >> 32), StartLo: uint32(start)})
			}
		}
		if len(out) > int(n.Header.Max) {
			t.Fatalf("fixture: %d journal extents after the punch, room for %d", len(out), n.Header.Max)
		}
		le := binary.LittleEndian
		clear(root[layout.ExtentEntrySize:])
		le.PutUint16(root[2:], uint16(len(out)))
		for i, x := range out {
			e := root[layout.ExtentEntrySize*(1+i):]
			le.PutUint32(e[0:], x.Block)
			le.PutUint16(e[4:], x.Len)
			le.PutUint16(e[6:], x.StartHi)
			le.PutUint32(e[8:], x.StartLo)
		}
	})
}

// fixtureJournal returns the journal superblock and the committed
// transactions of a fixture as it is.
func fixtureJournal(t *testing.T, img []byte) (*jbd2.Superblock, []jbd2.Transaction) {
	t.Helper()
	im, err := OpenImage(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := im.journalBlock(0)
	if err != nil {
		t.Fatal(err)
	}
	jsb, err := jbd2.ParseSuperblock(b)
	if err != nil {
		t.Fatal(err)
	}
	txs, _, _, err := jbd2.Scan(jsb, jsb.Start(), jsb.Sequence(), im.journalBlock, int(jsb.MaxLen()))
	if err != nil || len(txs) == 0 {
		t.Fatalf("fixture: %d transactions, %v", len(txs), err)
	}
	return jsb, txs
}

func notesOf(im *Image) []string {
	if im == nil {
		return nil
	}
	return im.Notes
}

// TestJournalLongerThanItsInode: a journal superblock whose s_maxlen is
// more than the journal inode's i_size holds is refused by the kernel at
// every mount ("JBD2: journal file too short", fs/jbd2/journal.c), dirty
// journal or clean, asked to recover or not: the image is corrupt, not read
// as if the journal were fine, as it used to be.
func TestJournalLongerThanItsInode(t *testing.T) {
	for _, name := range []string{"ordered-dirty", "journal-dirty"} {
		t.Run(name, func(t *testing.T) {
			base := loadImage(t, name)
			jsb, _ := fixtureJournal(t, base)
			for _, tc := range []struct {
				name     string
				blocks   int64 // i_size in blocks, relative to s_maxlen
				noRecov  bool  // clear needs_recovery
				refused  bool
				fraction int64 // bytes added to i_size
			}{
				{name: "one block short", blocks: -1, refused: true},
				{name: "one byte short", blocks: 0, fraction: -1, refused: true},
				{name: "one block short, needs_recovery clear", blocks: -1, noRecov: true, refused: true},
				{name: "half", blocks: -int64(jsb.MaxLen()) / 2, refused: true},
				{name: "exact", blocks: 0},
				{name: "exact and a partial block", blocks: 0, fraction: 100},
				{name: "longer", blocks: 1},
			} {
				t.Run(tc.name, func(t *testing.T) {
					img := bytes.Clone(base)
					bs := int64(jsb.BlockSize())
					size := (int64(jsb.MaxLen())+tc.blocks)*bs + tc.fraction
					editJournalInode(t, img, func(rec []byte) {
						binary.LittleEndian.PutUint32(rec[0x4:], uint32(size))
						binary.LittleEndian.PutUint32(rec[0x6C:], uint32(size>>32))
					})
					if tc.noRecov {
						sbRaw := img[layout.SuperBlockOffset : layout.SuperBlockOffset+layout.SuperBlockSize]
						incompat := binary.LittleEndian.Uint32(sbRaw[0x60:])
						binary.LittleEndian.PutUint32(sbRaw[0x60:], incompat&^uint32(layout.IncompatRecover))
						binary.LittleEndian.PutUint32(sbRaw[0x3FC:], layout.SuperBlockChecksum(sbRaw))
					}
					im, err := OpenImage(bytes.NewReader(img), int64(len(img)))
					if !tc.refused {
						if err != nil || im.Replayed == 0 {
							t.Fatalf("journal inode of %d bytes for %d blocks: %v", size, jsb.MaxLen(), err)
						}
						return
					}
					if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "journal file too short") {
						t.Fatalf("journal inode of %d bytes for %d blocks: %v (notes %q); want ErrCorrupt saying the journal file is too short", size, jsb.MaxLen(), err, notesOf(im))
					}
				})
			}
		})
	}
}

// TestJournalBlockUnmapped: a journal block that recovery reads and the
// journal inode does not map (a copy of a committed transaction, which
// PASS_REPLAY reads; a commit block, or the block after the last
// transaction, which PASS_SCAN reads) makes older kernels fail the recovery
// and the mount, and newer ones read the filesystem block of the same
// number in its place (ext4_journal_bmap): the image is refused, naming the
// block. A copy used to be dropped silently (or, with checksums, to end the
// replay early with a note), the other blocks to end the replay early with
// a note.
func TestJournalBlockUnmapped(t *testing.T) {
	for _, name := range []string{"ordered-dirty", "journal-dirty"} {
		t.Run(name, func(t *testing.T) {
			base := loadImage(t, name)
			jsb, txs := fixtureJournal(t, base)
			tx := txs[len(txs)-1]
			if len(tx.Blocks) < 2 {
				t.Fatalf("fixture: transaction %d logs %d blocks; the test needs two", tx.Sequence, len(tx.Blocks))
			}
			for _, tc := range []struct {
				name string
				jb   uint32
			}{
				{"first copy", tx.Blocks[0].JBlock},
				{"last copy", tx.Blocks[len(tx.Blocks)-1].JBlock},
				{"commit block", tx.End},
				{"block after the last commit", jsb.NextBlock(tx.End)},
			} {
				t.Run(tc.name, func(t *testing.T) {
					img := bytes.Clone(base)
					punchJournalBlock(t, img, tc.jb)
					im, err := OpenImage(bytes.NewReader(img), int64(len(img)))
					want := fmt.Sprintf("journal block %d,", tc.jb)
					if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "not mapped") {
						replayed := 0
						if im != nil {
							replayed = im.Replayed
						}
						t.Fatalf("%v (%d blocks replayed, notes %q); want ErrCorrupt naming %q as not mapped", err, replayed, notesOf(im), want)
					}
				})
			}
			// A hole the recovery never reads changes nothing.
			img := bytes.Clone(base)
			punchJournalBlock(t, img, jsb.NextBlock(jsb.NextBlock(tx.End)))
			im, err := OpenImage(bytes.NewReader(img), int64(len(img)))
			if err != nil || im.Replayed == 0 {
				t.Fatalf("a hole past the log's end: %v", err)
			}
		})
	}
}

// TestJournalCopyFailsChecksum: a committed copy that fails its checksum,
// not revoked, makes the kernel's recovery fail after it replays the others
// ("JBD2: Invalid checksum recovering data block"), and the mount with it:
// the image is refused, naming the copy. It used to be left out of the
// replay, the rest shown as if the filesystem mounted.
func TestJournalCopyFailsChecksum(t *testing.T) {
	for _, name := range []string{"ordered-dirty", "journal-dirty"} {
		t.Run(name, func(t *testing.T) {
			img := loadImage(t, name)
			jsb, txs := fixtureJournal(t, img)
			lb := txs[0].Blocks[0]
			im, err := OpenImage(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			pb, ok := im.jphys(lb.JBlock)
			if !ok {
				t.Fatalf("journal block %d not mapped", lb.JBlock)
			}
			img[int64(pb)*int64(jsb.BlockSize())+100] ^= 1
			im, err = OpenImage(bytes.NewReader(img), int64(len(img)))
			want := fmt.Sprintf("journal block %d, the copy of block %d in committed transaction %d, fails its checksum", lb.JBlock, lb.Home, txs[0].Sequence)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
				t.Fatalf("a failing copy: %v (notes %q); want ErrCorrupt saying %q", err, notesOf(im), want)
			}
		})
	}
}
