package ext4

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
)

// superWith returns the superblock's block with s_inode_size set to n.
func (r *rig) superWith(n uint16) (int64, []byte) {
	off := int64(r.e.sbBlock) * r.bs
	b := bytes.Clone(r.img.b[off : off+r.bs])
	binary.LittleEndian.PutUint16(b[r.e.sbOff+0x58:], n)
	return off, b
}

// touchInode rewrites a harmless byte of p's inode record (i_faddr), so
// that the engine decodes the record again.
func (r *rig) touchInode(p string) {
	r.t.Helper()
	home, blk := r.inodeBlockWith(p, func(raw []byte) { raw[0x70] ^= 1 })
	if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
		r.t.Fatalf("touching the inode: %v", vs)
	}
}

// A superblock with another inode size is a layout violation, and the
// engine keeps the layout its tracked inodes were located with even when
// the write lands (on_violation = record) or a dirty journal replays it at
// open. Adopting it used to slice inode records past their block (panic).
func TestNewGeometryNotAdopted(t *testing.T) {
	const p = "var/log/app.log"
	t.Run("written", func(t *testing.T) {
		r := openRig(t, loadImage(t, "b1k-nojournal.img"), nil, p)
		want := r.e.sb.InodeSizeBytes()
		if vs := r.write(r.superWith(uint16(r.bs))); kinds(vs) != "layout-changed" {
			t.Fatalf("new inode size: %v, want layout-changed", vs)
		}
		if got := r.e.sb.InodeSizeBytes(); got != want {
			t.Fatalf("engine took inode size %d (was %d)", got, want)
		}
		r.touchInode(p)
	})
	t.Run("replayed at open", func(t *testing.T) {
		r := openRig(t, loadImage(t, "b4k-journal.img"), nil, p)
		want := r.e.sb.InodeSizeBytes()
		w := newTxWriter(r)
		first, seq := w.pos, w.seq
		_, sb := r.superWith(uint16(r.bs))
		if vs, _ := w.commit([]uint64{r.e.sbBlock}, [][]byte{sb}); kinds(vs) != "layout-changed" {
			t.Fatalf("commit of the new superblock: %v, want layout-changed", vs)
		}
		// Leave the journal as a crash would: dirty from that transaction.
		img := bytes.Clone(r.img.b)
		pb, _ := r.e.jnl.physOf(0)
		binary.BigEndian.PutUint32(img[int64(pb)*r.bs+0x18:], seq)
		binary.BigEndian.PutUint32(img[int64(pb)*r.bs+0x1C:], first)
		path := filepath.Join(t.TempDir(), "dirty.img")
		if err := os.WriteFile(path, img, 0o644); err != nil {
			t.Fatal(err)
		}
		r2 := openRig(t, path, nil, p)
		if got := r2.e.sb.InodeSizeBytes(); got != want {
			t.Fatalf("engine took inode size %d from the replay (was %d)", got, want)
		}
		r2.touchInode(p)
	})
}

// A journal whose inode maps one device block twice, or that is larger
// than a scan of it may hold in memory, is refused at open: either would
// let a small image describe a log of any length.
func TestHostileJournalRefused(t *testing.T) {
	path := loadImage(t, "b4k-journal.img")
	r := openRig(t, path, nil)
	jt, err := r.e.newTracked(uint64(r.e.sb.JournalInum), false)
	if err != nil {
		t.Fatal(err)
	}
	first, last := jt.view.maps[0], jt.view.maps[len(jt.view.maps)-1]
	open := func(img []byte) error {
		_, err := Open(&memImage{b: img}, int64(len(img)), nil, blockSet{}, Options{})
		return err
	}
	if err := open(bytes.Clone(r.img.b)); err != nil {
		t.Fatalf("unedited image: %v", err)
	}

	// One more extent after the last, mapping the journal's first block
	// again.
	img := bytes.Clone(r.img.b)
	iblock := img[int64(jt.inoBlock)*r.bs+int64(jt.inoOff)+0x28:]
	le := binary.LittleEndian
	n, most, depth := le.Uint16(iblock[2:]), le.Uint16(iblock[4:]), le.Uint16(iblock[6:])
	if depth != 0 || n >= most {
		t.Fatalf("journal extent tree: depth %d, %d of %d entries; the test needs room in the inode", depth, n, most)
	}
	le.PutUint16(iblock[2:], n+1) // eh_entries
	e := iblock[12+12*int(n):]
	le.PutUint32(e[0:], uint32(last.Logical+last.Len))
	le.PutUint16(e[4:], 1)
	le.PutUint16(e[6:], uint16(first.Physical>>32))
	le.PutUint32(e[8:], uint32(first.Physical))
	if err := open(img); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("journal mapping a block twice: %v", err)
	}

	img = bytes.Clone(r.img.b)
	pb, _ := r.e.jnl.physOf(0)
	binary.BigEndian.PutUint32(img[int64(pb)*r.bs+0x10:], maxJournalBlocks+1) // s_maxlen
	if err := open(img); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("journal of %d blocks: %v", maxJournalBlocks+1, err)
	}
}

// A protected file with more extents than maxTreeExtents is refused at
// open with the reason, instead of an unbounded block map in memory.
func TestTrackedExtentsBounded(t *testing.T) {
	const p = "var/log/frag.log"
	path := loadImage(t, "b4k-journal.img")
	r := openRig(t, path, nil, p)
	n := len(r.e.byIno[uint64(r.ids[p])].view.maps)
	if n < 2 {
		t.Fatalf("%s maps %d extents; the test needs two or more", p, n)
	}
	files := []revfs.ProtectedFile{{ID: r.ids[p], Path: p}}
	defer func(m int) { maxTreeExtents = m }(maxTreeExtents)
	maxTreeExtents = n - 1
	if _, err := Open(&memImage{b: bytes.Clone(r.img.b)}, int64(len(r.img.b)), files, blockSet{}, Options{}); err == nil || !strings.Contains(err.Error(), "extents") {
		t.Fatalf("%d extents with a limit of %d: %v", n, maxTreeExtents, err)
	}
	maxTreeExtents = n
	if _, err := Open(&memImage{b: bytes.Clone(r.img.b)}, int64(len(r.img.b)), files, blockSet{}, Options{}); err != nil {
		t.Fatalf("%d extents with a limit of %d: %v", n, maxTreeExtents, err)
	}
}
