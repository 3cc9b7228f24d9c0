package ext4

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	w := newTxWriter(r)
	first, seq0 := w.pos, w.seq
	home, blk := r.inodeBlockWith(p, setSizeTo(6000))
	if vs, _ := w.commit([]uint64{home}, [][]byte{blk}); len(vs) != 0 {
		t.Fatalf("growth: %v", vs)
	}
	r.e.Flushed()
	_, bad := r.inodeBlockWith(p, setSizeTo(100))
	forged := &txWriter{r: r, pos: first, seq: seq0}
	forged.commit([]uint64{home}, [][]byte{bad}) // an applied tid: not judged again
	r.write(r.journalSuperblockAt(first, seq0))  // refused at the write since b3b6b66; landed here (honeypot)

	// The device restarts, having sealed 5000 bytes.
	path := r.crashed()
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
	path := r.crashed()
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

// The kernel recovers a log only when the superblock has needs_recovery
// (ext4_load_journal wipes it otherwise), and Open follows it: the same
// crash image replays with the flag and not without it, where the sealed
// growth the wipe loses is raised at the first flush.
func TestOpenReplaysOnlyWhatTheKernelWould(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
	newTxWriter(r).mountAndGrow(p) // the growth to 6000 bytes committed, then sealed

	r2 := openRig(t, r.crashed(), map[string]int64{p: 6000}, p)
	if st := r2.state(p); st.Size != 6000 {
		t.Fatalf("with needs_recovery: size %d, want 6000 (replayed)", st.Size)
	}
	r2.e.Flushed()
	if vs := r2.e.FlushViolations(); len(vs) != 0 {
		t.Fatalf("with needs_recovery: %v", vs)
	}

	path := filepath.Join(t.TempDir(), "wiped.img")
	if err := os.WriteFile(path, r.withNeedsRecovery(false), 0o644); err != nil {
		t.Fatal(err)
	}
	r3 := openRig(t, path, map[string]int64{p: 6000}, p)
	if st := r3.state(p); st.Size != 5000 {
		t.Fatalf("without needs_recovery: size %d, want the home inode's 5000 (the kernel discards the log)", st.Size)
	}
	r3.e.Flushed()
	if vs := r3.e.FlushViolations(); !slices.ContainsFunc(vs, func(v revfs.Violation) bool { return v.Kind == revfs.KindSizeDecreased }) {
		t.Fatalf("without needs_recovery: %v, want %v", vs, revfs.KindSizeDecreased)
	}
}

// Clearing needs_recovery while the log holds a committed copy of a
// protected inode that was never written home would make the host's next
// mount discard it: refused. Once the copy is home, and after the log is
// marked empty as at unmount, the same superblock passes.
func TestNeedsRecoveryClearedOverLiveCopy(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
	bs := int(r.bs)
	super := func(set bool) (int64, []byte) { return 0, r.withNeedsRecovery(set)[:bs] }
	if vs := r.write(super(true)); len(vs) != 0 { // as at mount
		t.Fatalf("needs_recovery set: %v", vs)
	}
	w := newTxWriter(r)
	_, seq0, home, blk := w.mountAndGrow(p)
	r.e.Flushed()
	vs := r.e.CheckWrite(super(false))
	if !layoutChangedIn(vs) || !strings.Contains(vs[0].Detail, "needs_recovery cleared") {
		t.Fatalf("needs_recovery cleared over a live copy: %v, want %v", vs, revfs.KindLayoutChanged)
	}
	t.Log(vs[0])
	if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 { // the checkpoint
		t.Fatalf("checkpoint: %v", vs)
	}
	r.e.Flushed()
	if vs := r.e.CheckWrite(super(false)); len(vs) != 0 {
		t.Fatalf("needs_recovery cleared once the copy is home: %v", vs)
	}
	if vs := r.write(r.journalSuperblockAt(0, seq0+1)); len(vs) != 0 { // unmount: the log empty
		t.Fatalf("log marked empty: %v", vs)
	}
	if vs := r.write(super(false)); len(vs) != 0 {
		t.Fatalf("needs_recovery cleared at unmount: %v", vs)
	}
}

// While the device runs, the forgery above is refused at the write,
// before any restart: pointing the journal superblock back at a transaction
// already applied, or rewriting a transaction the superblock names (the
// live log is never rewritten by jbd2).
func TestJournalForgeryRefusedAtTheWrite(t *testing.T) {
	const p = "var/log/app.log"
	layoutChanged := func(vs []revfs.Violation) bool {
		return slices.ContainsFunc(vs, func(v revfs.Violation) bool { return v.Kind == revfs.KindLayoutChanged })
	}

	t.Run("a clean log pointed back at an applied transaction", func(t *testing.T) {
		r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
		w := newTxWriter(r)
		first, seq0 := w.pos, w.seq
		home, blk := r.inodeBlockWith(p, setSizeTo(6000))
		if vs, _ := w.commit([]uint64{home}, [][]byte{blk}); len(vs) != 0 {
			t.Fatalf("growth: %v", vs)
		}
		_, bad := r.inodeBlockWith(p, setSizeTo(100))
		(&txWriter{r: r, pos: first, seq: seq0}).commit([]uint64{home}, [][]byte{bad})
		if vs := r.e.CheckWrite(r.journalSuperblockAt(first, seq0)); !layoutChanged(vs) {
			t.Fatalf("superblock pointing at applied transaction %d: %v, want %v", seq0, vs, revfs.KindLayoutChanged)
		}
	})

	t.Run("a live transaction rewritten in place", func(t *testing.T) {
		r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
		w := newTxWriter(r)
		first, seq0, _, _ := w.mountAndGrow(p)
		// The next transaction, at the head of the log, is no rewrite.
		home2, blk2 := r.inodeBlockWith(p, setSizeTo(6500))
		if vs, _ := w.commit([]uint64{home2}, [][]byte{blk2}); len(vs) != 0 {
			t.Fatalf("next transaction: %v", vs)
		}
		_, bad := r.inodeBlockWith(p, setSizeTo(100))
		pb, _ := r.e.jnl.physOf(first + 1) // the first transaction's copy
		if vs := r.e.CheckWrite(int64(pb)*r.bs, bad); !layoutChanged(vs) {
			t.Fatalf("copy of applied transaction %d rewritten: %v, want %v", seq0, vs, revfs.KindLayoutChanged)
		}
		// The same bytes again change nothing: not a rewrite.
		if vs := r.e.CheckWrite(int64(pb)*r.bs, r.img.b[int64(pb)*r.bs:int64(pb+1)*r.bs]); len(vs) != 0 {
			t.Fatalf("same bytes written again: %v", vs)
		}
		// Once the superblock moves the start past it (a checkpoint), the
		// block is free for the log's next lap.
		if vs := r.write(r.journalSuperblockAt(w.pos, w.seq)); len(vs) != 0 {
			t.Fatalf("checkpoint: %v", vs)
		}
		if vs := r.e.CheckWrite(int64(pb)*r.bs, bad); len(vs) != 0 {
			t.Fatalf("a block past the log's start written: %v", vs)
		}
	})
}

// setExtents rewrites an inode's extent tree, held in the inode, as the
// given runs (logical block, length, physical block).
func setExtents(size uint32, runs ...[3]uint32) func([]byte) {
	return func(raw []byte) {
		le := binary.LittleEndian
		le.PutUint32(raw[4:], size)
		ib := raw[0x28 : 0x28+60]
		clear(ib)
		le.PutUint16(ib[0:], 0xF30A)
		le.PutUint16(ib[2:], uint16(len(runs)))
		le.PutUint16(ib[4:], 4)
		for i, r := range runs {
			e := ib[12+12*i:]
			le.PutUint32(e[0:], r[0])
			le.PutUint16(e[4:], uint16(r[1]))
			le.PutUint32(e[8:], r[2])
		}
	}
}

// The committed bytes a recovery would show where only the journal maps
// them must be the sealed ones. The file grows into a new block through a
// transaction the device applies and seals (the home inode still says 5000
// bytes); the host then rewrites that transaction in place, mapping the new
// block to another one holding other bytes, and the device restarts. The
// home blocks cannot tell the forged map from the true one; the sealed
// bytes can.
func TestOpenComparesSealedBytes(t *testing.T) {
	const p = "var/log/app.log"
	const grown = 9000
	for _, forge := range []bool{false, true} {
		name := map[bool]string{false: "honest recovery", true: "transaction rewritten with another block"}[forge]
		t.Run(name, func(t *testing.T) {
			r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
			old := r.fileBytes(p)
			m, _ := r.e.byIno[uint64(r.ids[p])].view.lookup(0)
			first := uint32(m.Physical)             // (0-1): first, first+1
			const newBlock, otherBlock = 1326, 1327 // free in the image
			content := append(bytes.Clone(old), bytes.Repeat([]byte("appended line\n"), 1000)...)[:grown]
			// The appended data, home first (data=ordered).
			blk1 := bytes.Clone(r.img.b[int64(first+1)*r.bs : int64(first+2)*r.bs])
			copy(blk1, content[r.bs:2*r.bs])
			blk2 := make([]byte, r.bs)
			copy(blk2, content[2*r.bs:])
			for _, w := range []struct {
				b    uint64
				data []byte
			}{{uint64(first + 1), blk1}, {newBlock, blk2}, {otherBlock, bytes.Repeat([]byte("forged!\n"), int(r.bs/8))}} {
				if vs := r.write(int64(w.b)*r.bs, w.data); len(vs) != 0 {
					t.Fatalf("data write to block %d: %v", w.b, vs)
				}
			}
			w := newTxWriter(r)
			pos, seq := w.pos, w.seq
			if vs := r.write(r.journalSuperblockAt(pos, seq)); len(vs) != 0 {
				t.Fatalf("superblock of a mounted log: %v", vs)
			}
			home, ino := r.inodeBlockWith(p, setExtents(grown, [3]uint32{0, 2, first}, [3]uint32{2, 1, newBlock}))
			if vs, _ := w.commit([]uint64{home}, [][]byte{ino}); len(vs) != 0 {
				t.Fatalf("growth: %v", vs)
			}
			r.e.Flushed()
			if st := r.state(p); st.Size != grown {
				t.Fatalf("after the growth: %+v", st)
			}
			if forge {
				// The transaction's copy of the inode block, rewritten in
				// place: refused at the write, and landed here
				// (honeypot), so that the restart meets it.
				_, bad := r.inodeBlockWith(p, setExtents(grown, [3]uint32{0, 2, first}, [3]uint32{2, 1, otherBlock}))
				pb, _ := r.e.jnl.physOf(pos + 1)
				if vs := r.write(int64(pb)*r.bs, bad); len(vs) != 1 || vs[0].Kind != revfs.KindLayoutChanged {
					t.Fatalf("live transaction rewritten: %v, want %v", vs, revfs.KindLayoutChanged)
				}
			}

			// The device restarts, having sealed all 9000 bytes.
			path := r.crashed()
			r2 := openRigSealed(t, path, map[string]int64{p: grown}, map[string][]byte{p: content}, p)
			r2.e.Flushed()
			vs := r2.e.FlushViolations()
			got := r2.fileBytes(p)
			if !forge {
				if len(vs) != 0 || !bytes.Equal(got, content) {
					t.Fatalf("honest recovery: %v, %d bytes (equal %v)", vs, len(got), bytes.Equal(got, content))
				}
				return
			}
			if !slices.ContainsFunc(vs, func(v revfs.Violation) bool { return v.Kind == revfs.KindDataChanged }) {
				t.Fatalf("first flush after Open: %v, want %v", vs, revfs.KindDataChanged)
			}
			if bytes.Contains(got, []byte("forged!")) {
				t.Fatal("the forged map was applied: the file shows the other block's bytes")
			}
		})
	}
}

// Open finds where to cut a harmful recovery by bisection: a log of
// hundreds of transactions before the harmful one costs a handful of
// evaluations, not one per prefix (each as long as the prefix).
func TestOpenFindsHarmfulTransactionQuickly(t *testing.T) {
	const p = "var/log/app.log"
	const honest = 300
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
	w := newTxWriter(r)
	if vs := r.write(r.journalSuperblockAt(w.pos, w.seq)); len(vs) != 0 {
		t.Fatalf("superblock of a mounted log: %v", vs)
	}
	for i := range honest {
		home, blk := r.inodeBlockWith(p, setSizeTo(uint32(5001+i)))
		if vs, _ := w.commit([]uint64{home}, [][]byte{blk}); len(vs) != 0 {
			t.Fatalf("growth %d: %v", i, vs)
		}
	}
	home, bad := r.inodeBlockWith(p, setSizeTo(100))
	harmful := w.pos + 2                    // descriptor, copy, commit
	w.commit([]uint64{home}, [][]byte{bad}) // raised, and landed (honeypot)

	path := r.crashed()
	r2 := openRig(t, path, map[string]int64{p: 5000}, p)
	checks := r2.e.jnl.recoveryChecks
	if len(r2.e.flushUndo) != 1 || r2.e.flushUndo[0] != harmful {
		t.Fatalf("cut before %v, want the harmful transaction's commit block %d", r2.e.flushUndo, harmful)
	}
	if checks > 12 {
		t.Fatalf("%d evaluations for %d transactions", checks, honest+1)
	}
	t.Logf("%d evaluations for %d transactions", checks, honest+1)
}
