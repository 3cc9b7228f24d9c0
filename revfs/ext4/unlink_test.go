package ext4

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// unlinkBlocks returns the image after the host unlinked p (entry removed,
// links count 0), and the two blocks that changed: p's directory block
// and its inode-table block.
func unlinkBlocks(t *testing.T, r *rig, p string) (next []byte, dirBlock, inoBlock uint64) {
	t.Helper()
	ino := uint64(r.ids[p])
	next = r.debugfs("unlink "+p, fmt.Sprintf("sif <%d> links_count 0", ino))
	inoBlock = r.e.byIno[ino].inoBlock
	for _, b := range changedBlocks(r.img.b, next, r.bs) {
		if b != inoBlock {
			if dirBlock != 0 {
				t.Fatalf("debugfs changed blocks %v, want only a directory block and %d", changedBlocks(r.img.b, next, r.bs), inoBlock)
			}
			dirBlock = b
		}
	}
	if dirBlock == 0 {
		t.Fatal("debugfs changed no directory block")
	}
	return next, dirBlock, inoBlock
}

func lookup(t *testing.T, img []byte, p string) (uint64, error) {
	t.Helper()
	return layout.LookupPath(bytes.NewReader(img), p)
}

// Without a journal, an unlink reaches the device as a directory block
// without the entry and an inode with no links, in either order. Under
// discard both must end with the file still reachable by its path.
func TestNoJournalUnlinkDiscard(t *testing.T) {
	const p = "var/log/app.log"
	for _, name := range []string{"b4k-nojournal.img", "b1k-nojournal.img"} {
		t.Run(name+"/directory first", func(t *testing.T) {
			r := openRig(t, loadImage(t, name), map[string]int64{p: 100}, p)
			next, dirB, inoB := unlinkBlocks(t, r, p)
			stale := bytes.Clone(next[int64(dirB)*r.bs : int64(dirB+1)*r.bs])
			if vs := r.discardWrite(int64(dirB)*r.bs, bytes.Clone(stale)); len(vs) != 0 {
				t.Fatalf("a directory block without the entry, alone: %v", vs)
			}
			vs := r.discardWrite(int64(inoB)*r.bs, bytes.Clone(next[int64(inoB)*r.bs:int64(inoB+1)*r.bs]))
			if !strings.Contains(kinds(vs), "inode-freed") {
				t.Fatalf("freeing the inode: %v", vs)
			}
			if ino, err := lookup(t, r.img.b, p); err != nil || ino != uint64(r.ids[p]) {
				t.Fatalf("after the discard, %s resolves to %d, %v; want inode %d", p, ino, err, r.ids[p])
			}
			checkDirBlock(t, r, dirB)
			// The host writes its cached, entry-less block again.
			if vs := r.discardWrite(int64(dirB)*r.bs, bytes.Clone(stale)); kinds(vs) != "dir-entry" {
				t.Fatalf("the stale directory block again: %v", vs)
			}
			if _, err := lookup(t, r.img.b, p); err != nil {
				t.Fatalf("after the second discard: %v", err)
			}
		})
		t.Run(name+"/inode first", func(t *testing.T) {
			r := openRig(t, loadImage(t, name), map[string]int64{p: 100}, p)
			next, dirB, inoB := unlinkBlocks(t, r, p)
			if vs := r.discardWrite(int64(inoB)*r.bs, bytes.Clone(next[int64(inoB)*r.bs:int64(inoB+1)*r.bs])); !strings.Contains(kinds(vs), "inode-freed") {
				t.Fatalf("freeing the inode: %v", vs)
			}
			if vs := r.discardWrite(int64(dirB)*r.bs, bytes.Clone(next[int64(dirB)*r.bs:int64(dirB+1)*r.bs])); kinds(vs) != "dir-entry" {
				t.Fatalf("the directory block without the entry after the unlink attempt: %v", vs)
			}
			if _, err := lookup(t, r.img.b, p); err != nil {
				t.Fatalf("after the discards: %v", err)
			}
		})
		t.Run(name+"/block changed since", func(t *testing.T) {
			// Another name added to the directory block after the entry
			// left: the entry goes back in beside it.
			r := openRig(t, loadImage(t, name), map[string]int64{p: 100}, p)
			next, dirB, inoB := unlinkBlocks(t, r, p)
			r.feed(next, []uint64{dirB})
			other := r.debugfs("ln var/log/big.log var/log/third.log")
			r.feed(other, changedBlocks(r.img.b, other, r.bs))
			if _, err := lookup(t, r.img.b, "var/log/third.log"); err != nil {
				t.Fatalf("setup: debugfs ln: %v", err)
			}
			r.discardWrite(int64(inoB)*r.bs, bytes.Clone(next[int64(inoB)*r.bs:int64(inoB+1)*r.bs]))
			if _, err := lookup(t, r.img.b, "var/log/third.log"); err != nil {
				t.Fatalf("the name added since was lost: %v", err)
			}
			if ino, err := lookup(t, r.img.b, p); err != nil || ino != uint64(r.ids[p]) {
				t.Fatalf("%s resolves to %d, %v; want inode %d", p, ino, err, r.ids[p])
			}
			checkDirBlock(t, r, dirB)
		})
	}
}

// checkDirBlock checks that block b of the rig's image is a directory block
// e2fsck would accept: it parses and its checksum tail matches (the test
// images have metadata_csum).
func checkDirBlock(t *testing.T, r *rig, b uint64) {
	t.Helper()
	blk := r.img.b[int64(b)*r.bs : int64(b+1)*r.bs]
	if _, err := layout.ParseDirBlock(blk); err != nil {
		t.Fatalf("directory block %d: %v", b, err)
	}
	if !r.e.sb.HasMetadataCsum() || !layout.HasDirTail(blk) {
		t.Fatal("test image: want metadata_csum and directory checksum tails")
	}
	d := r.e.byIno[13]
	seed := layout.InodeSeed(r.e.fsSeed, uint32(d.ino), d.view.inode.Generation)
	if !layout.VerifyDirTail(seed, blk) {
		t.Fatalf("directory block %d: checksum tail does not match", b)
	}
}

// FuzzReinsertEntry feeds hostile directory blocks (as the host may have
// written them) to reinsertEntry: it must not panic, and a block it
// returns must parse and name the inode, with a matching checksum tail.
func FuzzReinsertEntry(f *testing.F) {
	blk := func(entries ...[]byte) []byte {
		b := make([]byte, 1024)
		off := 0
		for i, e := range entries {
			copy(b[off:], e)
			if i == len(entries)-1 {
				binary.LittleEndian.PutUint16(b[off+4:], uint16(1024-12-off))
			}
			off += len(e)
		}
		copy(b[1012:], []byte{0, 0, 0, 0, 12, 0, 0, 0xDE})
		return b
	}
	ent := func(ino uint32, name string) []byte {
		n := align4(8 + len(name))
		e := make([]byte, n)
		binary.LittleEndian.PutUint32(e, ino)
		binary.LittleEndian.PutUint16(e[4:], uint16(n))
		e[6], e[7] = byte(len(name)), 1
		copy(e[8:], name)
		return e
	}
	old := blk(ent(2, "."), ent(2, ".."), ent(14, "app.log"), ent(15, "other.log"))
	cur := blk(ent(2, "."), ent(2, ".."), ent(15, "other.log"))
	f.Add(cur, old, uint32(14), uint32(7))
	f.Fuzz(func(t *testing.T, cur, old []byte, ino, seed uint32) {
		if len(cur) != len(old) {
			return
		}
		b, err := reinsertEntry(cur, old, ino, seed, true)
		if err != nil {
			return
		}
		ents, err := layout.ParseDirBlock(b)
		if err != nil {
			t.Fatalf("returned block does not parse: %v", err)
		}
		found := false
		for _, e := range ents {
			found = found || e.Inode == ino
		}
		if !found {
			t.Fatalf("returned block has no entry for inode %d", ino)
		}
		if layout.HasDirTail(b) && !layout.VerifyDirTail(seed, b) {
			t.Fatal("returned block's checksum tail does not match")
		}
	})
}

// Without a journal, a protected file given a second name outside the
// watched directories and then unlinked under its own name keeps its
// inode (links 2 -> 1): the directory block without the entry and the
// inode with one link fewer reach the device in either order. At the FLUSH
// that ends the epoch the link count fell in, a directory without the
// entry is an unlink of the protected name. A link count that fell in an
// earlier epoch than the block (another name removed, then an htree split
// that moves the entry) is not judged, nor a block that still holds it.
func TestNoJournalUnlinkWithAnotherName(t *testing.T) {
	const p = "var/log/app.log"
	blocks := func(t *testing.T, r *rig) (next []byte, dirB, inoB uint64) {
		t.Helper()
		ino := uint64(r.ids[p])
		linked := r.debugfs(fmt.Sprintf("sif <%d> links_count 2", ino))
		if vs := r.feed(linked, changedBlocks(r.img.b, linked, r.bs)); len(vs) != 0 {
			t.Fatalf("a second link: %v", vs)
		}
		r.e.Flushed()
		next = r.debugfs("unlink "+p, fmt.Sprintf("sif <%d> links_count 1", ino))
		inoB = r.e.byIno[ino].inoBlock
		for _, b := range changedBlocks(r.img.b, next, r.bs) {
			if b != inoB {
				dirB = b
			}
		}
		if dirB == 0 {
			t.Fatal("debugfs changed no directory block")
		}
		return next, dirB, inoB
	}
	block := func(img []byte, r *rig, b uint64) []byte {
		return bytes.Clone(img[int64(b)*r.bs : int64(b+1)*r.bs])
	}
	atFlush := func(r *rig) string {
		r.e.Flushed()
		return kinds(r.e.FlushViolations())
	}
	for _, name := range []string{"b4k-nojournal.img", "b1k-nojournal.img"} {
		for _, order := range []string{"directory first", "inode first"} {
			t.Run(name+"/"+order, func(t *testing.T) {
				r := openRig(t, loadImage(t, name), map[string]int64{p: 100}, p)
				next, dirB, inoB := blocks(t, r)
				first, second := dirB, inoB
				if order == "inode first" {
					first, second = inoB, dirB
				}
				for _, b := range []uint64{first, second} {
					if vs := r.write(int64(b)*r.bs, block(next, r, b)); len(vs) != 0 {
						t.Fatalf("block %d: %v (judged at the flush)", b, vs)
					}
				}
				if got := atFlush(r); got != "dir-entry" {
					t.Fatalf("at the flush: %q, want dir-entry", got)
				}
				if got := atFlush(r); got != "" {
					t.Fatalf("at the next flush: %q, want nothing (raised once)", got)
				}
			})
		}
		t.Run(name+"/inode in an earlier epoch", func(t *testing.T) {
			r := openRig(t, loadImage(t, name), map[string]int64{p: 100}, p)
			next, dirB, inoB := blocks(t, r)
			if vs := r.write(int64(inoB)*r.bs, block(next, r, inoB)); len(vs) != 0 {
				t.Fatalf("one link fewer: %v", vs)
			}
			if got := atFlush(r); got != "" {
				t.Fatalf("the entry still there at the flush: %q", got)
			}
			if vs := r.write(int64(dirB)*r.bs, block(next, r, dirB)); len(vs) != 0 {
				t.Fatalf("a block without the entry, epochs after the link count fell: %v", vs)
			}
			if got := atFlush(r); got != "" {
				t.Fatalf("at the next flush: %q", got)
			}
		})
	}
}
