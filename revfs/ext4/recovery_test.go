package ext4

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
)

// journalSuperblockAt returns the journal superblock's device offset and
// its bytes with the log's start set to journal block start, transaction seq.
func (r *rig) journalSuperblockAt(start, seq uint32) (int64, []byte) {
	pb, _ := r.e.jnl.physOf(0)
	jsb := bytes.Clone(r.img.b[int64(pb)*r.bs : int64(pb+1)*r.bs])
	binary.BigEndian.PutUint32(jsb[0x18:], seq)
	binary.BigEndian.PutUint32(jsb[0x1C:], start)
	return int64(pb) * r.bs, jsb
}

// A host rewrites, in the live log, a transaction the engine has already
// applied (same position, same tid, valid checksums) with a copy of a
// protected inode truncated below what is sealed, and points the journal
// superblock at it. A commit block of an applied transaction is not judged
// again, so nothing is raised while the device runs; at the device's next
// Open a recovery would apply it. Open judges what it would replay against
// the store's watermarks: the forged transaction is not applied (size and
// map stay as sealed), the violation is raised at the first flush, and the
// host's replay of the truncated inode home is refused like any write.
func TestOpenRefusesForgedRecovery(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
	setSize := func(n uint32) func([]byte) {
		return func(raw []byte) { binary.LittleEndian.PutUint32(raw[4:], n) }
	}
	w := newTxWriter(r)
	first, seq0 := w.pos, w.seq
	home, blk := r.inodeBlockWith(p, setSize(6000))
	if vs, _ := w.commit([]uint64{home}, [][]byte{blk}); len(vs) != 0 {
		t.Fatalf("growth: %v", vs)
	}
	r.e.Flushed()
	_, bad := r.inodeBlockWith(p, setSize(100))
	forged := &txWriter{r: r, pos: first, seq: seq0}
	forged.commit([]uint64{home}, [][]byte{bad}) // an applied tid: not judged again
	r.write(r.journalSuperblockAt(first, seq0))  // refused at the write since b3b6b66; landed here (honeypot)

	// The device restarts, having sealed 5000 bytes.
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, r.img.b, 0o644); err != nil {
		t.Fatal(err)
	}
	r2 := openRig(t, path, map[string]int64{p: 5000}, p)
	if st := r2.state(p); st.Size < 5000 {
		t.Fatalf("after Open: size %d, below the 5000 bytes sealed (the forged transaction was applied)", st.Size)
	}
	r2.e.Flushed()
	if vs := r2.e.FlushViolations(); !slices.ContainsFunc(vs, func(v revfs.Violation) bool { return v.Kind == revfs.KindSizeDecreased }) {
		t.Fatalf("first flush after Open: %v, want %v", vs, revfs.KindSizeDecreased)
	}
	// The host's recovery writes the forged inode home: refused.
	if vs := r2.e.CheckWrite(int64(home)*r2.bs, bad); !slices.ContainsFunc(vs, func(v revfs.Violation) bool { return v.Kind == revfs.KindSizeDecreased }) {
		t.Fatalf("replay of the truncated inode: %v, want %v", vs, revfs.KindSizeDecreased)
	}
}

// A recovery the kernel would really make (the log not clean after a
// crash) is applied at Open as before: no violation, the size grown.
func TestOpenAppliesHonestRecovery(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
	w := newTxWriter(r)
	// As the kernel mounts: the superblock names the next transaction,
	// which then commits; the device stops before any checkpoint.
	if vs := r.write(r.journalSuperblockAt(w.pos, w.seq)); len(vs) != 0 {
		t.Fatalf("superblock of a mounted log: %v", vs)
	}
	home, blk := r.inodeBlockWith(p, func(raw []byte) { binary.LittleEndian.PutUint32(raw[4:], 6000) })
	if vs, _ := w.commit([]uint64{home}, [][]byte{blk}); len(vs) != 0 {
		t.Fatalf("growth: %v", vs)
	}
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, r.img.b, 0o644); err != nil {
		t.Fatal(err)
	}
	r2 := openRig(t, path, map[string]int64{p: 5000}, p)
	if st := r2.state(p); st.Size != 6000 {
		t.Fatalf("after Open: size %d, want 6000 (the committed growth replayed)", st.Size)
	}
	r2.e.Flushed()
	if vs := r2.e.FlushViolations(); len(vs) != 0 {
		t.Fatalf("honest recovery raised %v", vs)
	}
	if vs := r2.e.CheckWrite(int64(home)*r2.bs, blk); len(vs) != 0 {
		t.Fatalf("replay of the grown inode: %v", vs)
	}
}

// While the device runs, pointing the journal superblock back at a
// transaction already applied is refused at the write: the forgery above,
// caught before any restart. (A transaction rewritten in place while the
// superblock names it is not caught at the write: Open's judgment and the
// judging of its home writes stop it.)
func TestJournalForgeryRefusedAtTheWrite(t *testing.T) {
	const p = "var/log/app.log"
	setSize := func(n uint32) func([]byte) {
		return func(raw []byte) { binary.LittleEndian.PutUint32(raw[4:], n) }
	}
	layoutChanged := func(vs []revfs.Violation) bool {
		return slices.ContainsFunc(vs, func(v revfs.Violation) bool { return v.Kind == revfs.KindLayoutChanged })
	}

	t.Run("a clean log pointed back at an applied transaction", func(t *testing.T) {
		r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
		w := newTxWriter(r)
		first, seq0 := w.pos, w.seq
		home, blk := r.inodeBlockWith(p, setSize(6000))
		if vs, _ := w.commit([]uint64{home}, [][]byte{blk}); len(vs) != 0 {
			t.Fatalf("growth: %v", vs)
		}
		_, bad := r.inodeBlockWith(p, setSize(100))
		(&txWriter{r: r, pos: first, seq: seq0}).commit([]uint64{home}, [][]byte{bad})
		if vs := r.e.CheckWrite(r.journalSuperblockAt(first, seq0)); !layoutChanged(vs) {
			t.Fatalf("superblock pointing at applied transaction %d: %v, want %v", seq0, vs, revfs.KindLayoutChanged)
		}
	})
}
