package ext4

import (
	"bytes"
	"encoding/binary"
	"github.com/indelible-worm/indelible/revfs"
	"os"
	"path/filepath"
	"testing"
)

// setSizeTo edits an inode record's i_size_lo.
func setSizeTo(n uint32) func([]byte) {
	return func(raw []byte) { binary.LittleEndian.PutUint32(raw[4:], n) }
}

// tailBlock returns the device offset of logical block lb of file p and
// the block as it would be written when the file holds n bytes of
// seqContent (ext4 zeroes what lies past the size).
func (r *rig) tailBlock(p string, lb uint64, n int) (int64, []byte) {
	f := r.e.byIno[uint64(r.ids[p])]
	m, ok := f.view.lookup(lb)
	if !ok {
		r.t.Fatalf("logical block %d of %s not mapped", lb, p)
	}
	blk := make([]byte, r.bs)
	content := seqContent(n)
	start := int64(lb) * r.bs
	if int64(n) > start {
		copy(blk, content[start:min(int64(n), start+r.bs)])
	}
	return int64(m.Physical+lb-m.Logical) * r.bs, blk
}

func (r *rig) writeSize(p string, n uint32) {
	home, blk := r.inodeBlockWith(p, setSizeTo(n))
	if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
		r.t.Fatalf("size %d: %v", n, vs)
	}
}

func (r *rig) wantCoherent(p string, want int64, what string) {
	r.t.Helper()
	if st := r.state(p); st.Coherent != want {
		r.t.Fatalf("%s: coherent %d, want %d (size %d)", what, st.Coherent, want, st.Size)
	}
}

// Without a journal the inode-table block and the tail data block reach
// the device in either order, and the data may have gone out long before
// the size (and never again). The coherent prefix follows the bytes the
// tail block is shown to hold, never the size alone, and never stalls.
func TestCoherenceTailBlockNoJournal(t *testing.T) {
	const p = "var/log/app.log" // 5000 bytes: block 1 holds 904
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), map[string]int64{p: 5000}, p)
	r.wantCoherent(p, 5000, "open")

	// Size first: the data block still ends at 5000.
	r.writeSize(p, 5100)
	r.wantCoherent(p, 5000, "size 5100 before its data")
	off, blk := r.tailBlock(p, 1, 5100)
	r.write(off, blk)
	r.wantCoherent(p, 5100, "data after the size")

	// Data first, then two size updates (the second one may carry only
	// another inode's change): the old tail rule stalled here.
	off, blk = r.tailBlock(p, 1, 5400)
	r.write(off, blk)
	r.wantCoherent(p, 5100, "data before any size")
	r.writeSize(p, 5300)
	r.wantCoherent(p, 5300, "size 5300 after data to 5400")
	r.writeSize(p, 5400)
	r.wantCoherent(p, 5400, "size 5400 with the block not written again")

	// A block written while the file was shorter than the announced size
	// proves only the bytes it holds.
	off, blk = r.tailBlock(p, 1, 5450)
	r.write(off, blk)
	r.writeSize(p, 5500)
	r.wantCoherent(p, 5450, "size 5500 with data to 5450")
	off, blk = r.tailBlock(p, 1, 5500)
	r.write(off, blk)
	r.wantCoherent(p, 5500, "rest of the data")
}

// In data=ordered ext4 raises i_disksize at write() time when the append
// stays inside an allocated block, so a commit can carry a size whose
// bytes are still in the host's page cache (the false positive of
// TestNoFalsePositives/ordered: zeroes were sealed, then the real write
// "changed" them).
func TestCoherenceJournalledSizeAheadOfData(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
	home, blk := r.inodeBlockWith(p, setSizeTo(5102))
	if vs, _ := newTxWriter(r).commit([]uint64{home}, [][]byte{blk}); len(vs) != 0 {
		t.Fatalf("commit: %v", vs)
	}
	if st := r.state(p); st.Size != 5102 || st.Coherent != 5000 {
		t.Fatalf("after a commit without its data: %+v", st)
	}
	off, data := r.tailBlock(p, 1, 5102)
	if vs := r.write(off, data); len(vs) != 0 {
		t.Fatalf("data write: %v", vs)
	}
	r.wantCoherent(p, 5102, "data written after the commit")
	got := make([]byte, 5102)
	if err := r.e.ReadFile(r.ids[p], got, 0); err != nil || !bytes.Equal(got, seqContent(5102)) {
		t.Fatalf("ReadFile: %v", err)
	}
}

// A journal left dirty by a crash holds several committed copies of the
// same block; at Open the newest one is the model (it was the oldest,
// which made e2fsck's replay of the newest look like a data change).
func TestOpenDirtyJournalNewestCopyWins(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
	w := newTxWriter(r)
	first, seq := w.pos, w.seq
	off, _ := r.tailBlock(p, 1, 5000)
	home := uint64(off / r.bs)
	type version struct {
		inoHome uint64
		ino     []byte
		data    []byte
	}
	var versions []version
	for _, n := range []int{5100, 5200, 5300} {
		_, data := r.tailBlock(p, 1, n)
		ih, iblk := r.inodeBlockWith(p, setSizeTo(uint32(n)))
		versions = append(versions, version{ih, iblk, data})
		if vs, _ := w.commit([]uint64{ih, home}, [][]byte{iblk, data}); len(vs) != 0 {
			t.Fatalf("commit %d: %v", n, vs)
		}
	}
	// The crash: the journal superblock says the log starts at the first
	// transaction; the home blocks were never written.
	jsb, _ := r.e.jnl.physOf(0)
	sb := r.img.b[int64(jsb)*r.bs:]
	binary.BigEndian.PutUint32(sb[24:], seq)
	binary.BigEndian.PutUint32(sb[28:], first)
	path := r.crashed()
	r2 := openRig(t, path, map[string]int64{p: 5200}, p)
	if st := r2.state(p); st.Size != 5300 || st.Coherent != 5300 {
		t.Fatalf("after open: %+v", st)
	}
	// Recovery writes every copy home in tid order, the oldest first
	// (size 5100 under a watermark of 5200): a replay, not an attack, and
	// the model keeps the newest version.
	for i, v := range versions {
		if vs := r2.write(int64(v.inoHome)*r2.bs, v.ino); len(vs) != 0 {
			t.Fatalf("replay of inode copy %d: %v", i, vs)
		}
		if vs := r2.write(off, v.data); len(vs) != 0 {
			t.Fatalf("replay of data copy %d: %v", i, vs)
		}
		if st := r2.state(p); st.Size != 5300 {
			t.Fatalf("model regressed during the replay (copy %d): %+v", i, st)
		}
	}
	// The replay ends: the journal superblock is written clean. An old
	// copy written now is an attack again.
	clean := bytes.Clone(r2.img.b[int64(jsb)*r2.bs : int64(jsb+1)*r2.bs])
	binary.BigEndian.PutUint32(clean[28:], 0)
	if vs := r2.write(int64(jsb)*r2.bs, clean); len(vs) != 0 {
		t.Fatalf("clean journal superblock: %v", vs)
	}
	if vs := r2.write(int64(versions[0].inoHome)*r2.bs, versions[0].ino); len(vs) == 0 {
		t.Fatal("an old inode copy written after the replay was accepted")
	}
}

// At Open, blocks the bitmaps show free leave the written set (a kill
// between a bitmap write that frees them and the FLUSH that would have
// made the set forget them leaves them marked), except blocks a protected
// file maps: without a journal their bitmap may land long after their data.
func TestOpenForgetsFreeBlocks(t *testing.T) {
	const p = "var/log/app.log"
	path := loadImage(t, "b4k-nojournal.img")
	r := openRig(t, path, nil, p, "var/log/big.log")
	phys := func(name string) uint64 {
		m, _ := r.e.byIno[uint64(r.ids[name])].view.lookup(0)
		return m.Physical
	}
	app, big := phys(p), phys("var/log/big.log")
	bb := r.e.groups[0].BlockBitmap()
	bm := r.img.b[int64(bb)*r.bs : int64(bb+1)*r.bs]
	bit := func(b uint64) bool { return bm[b/8]&(1<<(b%8)) != 0 }
	var free []uint64 // a few free blocks of group 0, one in a word of its own
	for b := uint64(200); b < uint64(r.e.sb.BlocksPerGroup) && len(free) < 3; b++ {
		if !bit(b) && (len(free) == 0 || b > free[len(free)-1]+100) {
			free = append(free, b)
		}
	}
	if !bit(app) || !bit(big) || len(free) < 3 {
		t.Fatalf("unexpected image: app.log at %d (%v), big.log at %d (%v), free %v", app, bit(app), big, bit(big), free)
	}
	bm[app/8] &^= 1 << (app % 8) // the bitmap allocating app.log's block has not landed
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, r.img.b, 0o644); err != nil {
		t.Fatal(err)
	}

	// Only app.log is protected now: big.log's block is an ordinary used block.
	written := blockSet{app: true, big: true}
	for _, b := range free {
		written[b] = true
	}
	b, _ := os.ReadFile(img)
	ino := r.ids[p]
	if _, err := Open(&memImage{b: b}, int64(len(b)), []revfs.ProtectedFile{{ID: ino, Path: p}}, written, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range free {
		if written[f] {
			t.Errorf("free block %d still marked written", f)
		}
	}
	if !written[app] {
		t.Error("the protected file's block was forgotten because its bitmap bit is clear")
	}
	if !written[big] {
		t.Error("a used block was forgotten")
	}
}

// Pruning keeps the write marks of blocks in each file's unsealed tail and
// only those, and leaves the map usable.
func TestPruneLastWriteKeepsTails(t *testing.T) {
	const p = "var/log/frag.log"
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), map[string]int64{p: 30000}, p)
	f := r.e.byIno[uint64(r.ids[p])]
	from := uint64(f.committed / r.bs)
	want := map[uint64]writeMark{}
	var in, out int
	for _, m := range f.view.maps {
		for i := uint64(0); i < m.Len; i++ {
			w := writeMark{seq: m.Physical + i, epoch: 1}
			r.e.lastWrite.set(m.Physical+i, w)
			if m.Logical+i >= from {
				want[m.Physical+i] = w
				in++
			} else {
				out++
			}
		}
	}
	r.e.lastWrite.set(1<<40, writeMark{seq: 1}) // no file's block
	if in == 0 || out == 0 {
		t.Fatalf("image gives %d tail and %d committed blocks; need both", in, out)
	}
	r.e.pruneLastWrite()
	if r.e.lastWrite.len() != len(want) {
		t.Fatalf("kept %d marks, want %d", r.e.lastWrite.len(), len(want))
	}
	for pb, w := range want {
		if got, _ := r.e.lastWrite.get(pb); got != w {
			t.Fatalf("block %d: mark %v, want %v", pb, got, w)
		}
	}
}
