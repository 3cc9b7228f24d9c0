package ext4

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// txWriter appends hand-built jbd2 transactions to a rig's clean journal
// (no checksums, no 64bit: 8-byte tags), the way jbd2 lays them out.
type txWriter struct {
	r   *rig
	pos uint32 // next journal block
	seq uint32
}

func newTxWriter(r *rig) *txWriter {
	j := r.e.jnl
	return &txWriter{r: r, pos: j.sb.First(), seq: j.sb.Sequence()}
}

// mountAndGrow writes the journal superblock as the kernel does at mount,
// its start at the writer's position, and commits a transaction growing p
// to 6000 bytes, failing the test on any violation. It returns the start
// and tid the superblock names and the inode block the transaction logged.
func (w *txWriter) mountAndGrow(p string) (first, seq0 uint32, home uint64, blk []byte) {
	r := w.r
	first, seq0 = w.pos, w.seq
	if vs := r.write(r.journalSuperblockAt(first, seq0)); len(vs) != 0 {
		r.t.Fatalf("superblock as at mount: %v", vs)
	}
	home, blk = r.inodeBlockWith(p, setSizeTo(6000))
	if vs, _ := w.commit([]uint64{home}, [][]byte{blk}); len(vs) != 0 {
		r.t.Fatalf("growth: %v", vs)
	}
	return first, seq0, home, blk
}

func (w *txWriter) put(jb uint32, b []byte) []revfs.Violation {
	pb, ok := w.r.e.jnl.physOf(jb)
	if !ok {
		w.r.t.Fatalf("journal block %d not mapped", jb)
	}
	return w.r.write(int64(pb)*w.r.bs, b)
}

// commit logs copies of home blocks as one transaction and returns the
// violations of the commit block write and its device offset.
func (w *txWriter) commit(homes []uint64, copies [][]byte) ([]revfs.Violation, int64) {
	off, commit := w.stage(homes, copies)
	return w.r.write(off, commit), off
}

// stage writes the descriptor and copies of a transaction and returns its
// commit block and where it goes, without writing it.
func (w *txWriter) stage(homes []uint64, copies [][]byte) (int64, []byte) {
	bs := w.r.bs
	desc := jbdBlock(bs, 1, w.seq)
	off := 12
	for i, h := range homes {
		binary.BigEndian.PutUint32(desc[off:], uint32(h))
		flags := uint16(0)
		if i > 0 {
			flags |= 2 // SAME_UUID
		}
		if i == len(homes)-1 {
			flags |= 8 // LAST_TAG
		}
		binary.BigEndian.PutUint16(desc[off+6:], flags)
		off += 8
		if i == 0 {
			off += 16 // the UUID after the first tag
		}
	}
	if vs := w.put(w.pos, desc); len(vs) > 0 {
		w.r.t.Fatalf("descriptor raised %v", vs)
	}
	for i, c := range copies {
		if vs := w.put(w.pos+1+uint32(i), c); len(vs) > 0 {
			w.r.t.Fatalf("copy raised %v", vs)
		}
	}
	cpos := w.pos + 1 + uint32(len(copies))
	pb, _ := w.r.e.jnl.physOf(cpos)
	commit := jbdBlock(bs, 2, w.seq)
	w.pos, w.seq = cpos+1, w.seq+1
	return int64(pb) * bs, commit
}

// inodeBlockWith returns the inode-table block of file p with its record
// edited by edit.
func (r *rig) inodeBlockWith(p string, edit func(raw []byte)) (uint64, []byte) {
	f := r.e.byIno[uint64(r.ids[p])]
	b := bytes.Clone(r.img.b[int64(f.inoBlock)*r.bs : int64(f.inoBlock+1)*r.bs])
	edit(b[f.inoOff : f.inoOff+r.e.sb.InodeSizeBytes()])
	r.sealInode(f.ino, b[f.inoOff:f.inoOff+r.e.sb.InodeSizeBytes()])
	return f.inoBlock, b
}

// sealInode sets the checksum of inode ino's raw record, as the kernel
// does whenever it writes one (ext4_inode_csum_set), when the filesystem
// has metadata_csum.
func (r *rig) sealInode(ino uint64, raw []byte) {
	if !r.e.sb.HasMetadataCsum() {
		return
	}
	c := layout.InodeChecksum(r.e.fsSeed, uint32(ino), raw)
	binary.LittleEndian.PutUint16(raw[0x7C:], uint16(c)) // l_i_checksum_lo
	if len(raw) >= 0x84 && binary.LittleEndian.Uint16(raw[0x80:]) >= 4 {
		binary.LittleEndian.PutUint16(raw[0x82:], uint16(c>>16)) // i_checksum_hi
	}
}

func TestJournalTransactions(t *testing.T) {
	const p = "var/log/app.log"
	path := loadImage(t, "b4k-journal.img")

	t.Run("truncate in a transaction is blamed on the commit block", func(t *testing.T) {
		r := openRig(t, path, map[string]int64{p: 5000}, p)
		home, blk := r.inodeBlockWith(p, setSizeTo(100))
		vs, commitOff := newTxWriter(r).commit([]uint64{home}, [][]byte{blk})
		if len(vs) != 1 || vs[0].Kind != revfs.KindSizeDecreased || vs[0].Off != commitOff || vs[0].Len != r.bs {
			t.Fatalf("got %v, want size-decreased on the commit block [%d,+%d)", vs, commitOff, r.bs)
		}
	})

	t.Run("growth through the journal is visible before any home write", func(t *testing.T) {
		r := openRig(t, path, map[string]int64{p: 5000}, p)
		home, blk := r.inodeBlockWith(p, setSizeTo(6000))
		homeBefore := bytes.Clone(r.img.b[int64(home)*r.bs : int64(home+1)*r.bs])
		vs, _ := newTxWriter(r).commit([]uint64{home}, [][]byte{blk})
		if len(vs) != 0 {
			t.Fatalf("legit growth: %v", vs)
		}
		st := r.state(p)
		if st.Size != 6000 || !st.Journalled {
			t.Fatalf("after the commit: %+v", st)
		}
		if !bytes.Equal(homeBefore, r.img.b[int64(home)*r.bs:int64(home+1)*r.bs]) {
			t.Fatal("the engine changed the image")
		}
		// The checkpoint (home write of the same version) is no violation.
		if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
			t.Fatalf("checkpoint: %v", vs)
		}
		// A later home write that truncates is.
		_, bad := r.inodeBlockWith(p, setSizeTo(10))
		if vs := r.write(int64(home)*r.bs, bad); len(vs) != 1 || vs[0].Kind != revfs.KindSizeDecreased {
			t.Fatalf("home truncate after checkpoint: %v", vs)
		}
	})

	t.Run("journalled data copy changing committed bytes", func(t *testing.T) {
		r := openRig(t, path, map[string]int64{p: 5000}, p)
		f := r.e.byIno[uint64(r.ids[p])]
		m := f.view.maps[0]
		data := bytes.Clone(r.img.b[int64(m.Physical)*r.bs : int64(m.Physical+1)*r.bs])
		data[10] ^= 0xFF
		vs, commitOff := newTxWriter(r).commit([]uint64{m.Physical}, [][]byte{data})
		if len(vs) != 1 || vs[0].Kind != revfs.KindDataChanged || vs[0].Off != commitOff {
			t.Fatalf("got %v, want data-changed on the commit block", vs)
		}
	})

	t.Run("commit before its transaction waits for the flush", func(t *testing.T) {
		r := openRig(t, path, map[string]int64{p: 5000}, p)
		home, blk := r.inodeBlockWith(p, setSizeTo(7000))
		w := newTxWriter(r)
		// Commit block first (stale log blocks must not count)...
		pb, _ := r.e.jnl.physOf(w.pos + 2)
		if vs := r.write(int64(pb)*r.bs, jbdBlock(r.bs, 2, w.seq)); len(vs) != 0 {
			t.Fatalf("early commit: %v", vs)
		}
		if st := r.state(p); st.Size != 5000 {
			t.Fatalf("size %d before the transaction landed", st.Size)
		}
		// ...then the rest, then the flush.
		w.commit([]uint64{home}, [][]byte{blk})
		r.e.Flushed()
		if st := r.state(p); st.Size != 7000 {
			t.Fatalf("size %d after the flush", st.Size)
		}
	})

	t.Run("journal superblock garbage and new geometry", func(t *testing.T) {
		r := openRig(t, path, nil, p)
		pb, _ := r.e.jnl.physOf(0)
		jsb := bytes.Clone(r.img.b[int64(pb)*r.bs : int64(pb+1)*r.bs])
		bad := bytes.Clone(jsb)
		bad[0] = 0
		if vs := r.e.CheckWrite(int64(pb)*r.bs, bad); len(vs) != 1 || vs[0].Kind != revfs.KindUnparseable {
			t.Fatalf("garbage journal superblock: %v", vs)
		}
		binary.BigEndian.PutUint32(jsb[0x14:], 2) // s_first
		if vs := r.e.CheckWrite(int64(pb)*r.bs, jsb); len(vs) != 1 || vs[0].Kind != revfs.KindLayoutChanged {
			t.Fatalf("moved log start: %v", vs)
		}
	})
}

// Tids only grow: a commit block with new bytes and a tid below the one the
// log was at when the flush epoch began is not the kernel's (skipped as
// applied, it would hide what it commits). The same bytes written again (a
// page of a 1 KiB-block log written back whole) are not judged, nor is a
// commit block of this epoch's own transactions arriving late.
func TestCommitBelowTheLogsTid(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
	w := newTxWriter(r)
	w.mountAndGrow(p)
	// The commit block just written, written again: the same bytes.
	last, _ := w.r.e.jnl.physOf(w.pos - 1)
	again := bytes.Clone(r.img.b[int64(last)*r.bs : int64(last+1)*r.bs])
	if vs := r.write(int64(last)*r.bs, again); len(vs) != 0 {
		t.Fatalf("an applied commit block rewritten in its epoch: %v", vs)
	}
	r.e.Flushed()
	if vs := r.write(int64(last)*r.bs, again); len(vs) != 0 {
		t.Fatalf("an applied commit block rewritten with the same bytes: %v", vs)
	}
	// A new commit block, at the head, of a tid below the log's.
	old := w.seq - 1
	if vs := w.put(w.pos, jbdBlock(r.bs, jbd2.BlockTypeCommit, old)); !layoutChangedIn(vs) {
		t.Fatalf("a new commit block of tid %d (the log is at %d): %v, want %v", old, w.seq, vs, revfs.KindLayoutChanged)
	}
}
