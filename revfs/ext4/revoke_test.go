package ext4

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
)

// revokeTx writes a transaction of revoke blocks only (no checksums, no
// 64bit: 4-byte records) and its commit block, and returns what the commit
// block raised.
func (w *txWriter) revokeTx(blocks ...[]uint64) []revfs.Violation {
	for _, recs := range blocks {
		b := jbdBlock(w.r.bs, jbd2.BlockTypeRevoke, w.seq)
		off := jbd2.RevokeHeaderSize
		for _, h := range recs {
			binary.BigEndian.PutUint32(b[off:], uint32(h))
			off += 4
		}
		binary.BigEndian.PutUint32(b[jbd2.HeaderSize:], uint32(off))
		if vs := w.put(w.pos, b); len(vs) > 0 {
			w.r.t.Fatalf("revoke block raised %v", vs)
		}
		w.pos++
	}
	vs := w.put(w.pos, jbdBlock(w.r.bs, jbd2.BlockTypeCommit, w.seq))
	w.pos, w.seq = w.pos+1, w.seq+1
	return vs
}

// A scan keeps only the revoke records that cancel something, but a copy
// the engine holds from a transaction applied before counts: a later
// transaction that revokes the block drops the held copy (the kernel
// would not replay it), although that scan logs no copy of it, and
// records naming blocks nobody logged are not kept at all.
func TestRevokeDropsHeldCopy(t *testing.T) {
	const p = "var/log/app.log" // 5000 bytes: block 1, past the watermark, holds 904
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 4096}, p)
	f := r.e.byIno[uint64(r.ids[p])]
	m, ok := f.view.lookup(1)
	if !ok || m.Unwritten {
		t.Fatalf("block 1 of %s not mapped", p)
	}
	home := m.Physical + 1 - m.Logical
	copyOf := bytes.Clone(r.img.b[int64(home)*r.bs : int64(home+1)*r.bs])

	w := newTxWriter(r)
	if vs, _ := w.commit([]uint64{home}, [][]byte{copyOf}); len(vs) > 0 {
		t.Fatalf("journalled copy of the tail: %v", vs)
	}
	if c, ok := r.e.overlay[home]; !ok || c.seq != w.seq-1 {
		t.Fatalf("the engine holds no copy of block %d after its transaction (%v)", home, r.e.overlay)
	}

	// Records nothing logged, then the held block among them.
	noise := make([]uint64, 1000)
	for i := range noise {
		noise[i] = 1<<20 + uint64(i)
	}
	if vs := w.revokeTx(noise); len(vs) > 0 {
		t.Fatalf("revoke records of blocks nobody logged: %v", vs)
	}
	if _, ok := r.e.overlay[home]; !ok {
		t.Fatal("a transaction revoking other blocks dropped the held copy")
	}
	pos := r.e.jnl.pos
	if vs := w.revokeTx(noise, append(noise[:10:10], home)); len(vs) > 0 {
		t.Fatalf("a revoke of the held copy (past the committed bytes): %v", vs)
	}
	if _, ok := r.e.overlay[home]; ok {
		t.Fatal("the held copy survived the transaction that revokes it")
	}
	if r.e.jnl.pos != w.pos {
		t.Fatalf("the engine expects the next transaction at %d, want %d", r.e.jnl.pos, w.pos)
	}
	read := func(jb uint32) ([]byte, error) { return r.e.jnl.readJ(jb, nil) }
	txs, _, _, err := jbd2.Scan(r.e.jnl.sb, pos, w.seq-1, read, 16)
	if err != nil || len(txs) != 1 || len(txs[0].Revoked) != 0 {
		kept := -1
		if len(txs) > 0 {
			kept = len(txs[0].Revoked)
		}
		t.Fatalf("without the engine's held copies a scan gives %d transactions keeping %d records (err %v); want one, none", len(txs), kept, err)
	}
}

// The engine's side of a log full of revoke blocks: the commit block that
// completes it costs the engine memory for what the transaction changes,
// not 8 bytes per record (blocksize/4 records a block, scanned up to four
// times per commit block and walked again by journal.versions and apply).
func TestCommitOverRevokeBlocks(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 4096}, p)
	w := newTxWriter(r)
	sb := r.e.jnl.sb
	n := sb.LogEnd() - w.pos - 1 // every block of the log but the commit block
	recs := (r.bs - jbd2.RevokeHeaderSize) / 4
	for k := range n {
		b := jbdBlock(r.bs, jbd2.BlockTypeRevoke, w.seq)
		for i := range recs {
			// Distinct in the whole log.
			binary.BigEndian.PutUint32(b[jbd2.RevokeHeaderSize+4*i:], 1<<20+k<<10+uint32(i))
		}
		binary.BigEndian.PutUint32(b[jbd2.HeaderSize:], uint32(r.bs))
		if vs := w.put(w.pos, b); len(vs) > 0 {
			t.Fatalf("revoke block: %v", vs)
		}
		w.pos++
	}
	pb, _ := r.e.jnl.physOf(w.pos)
	commit := jbdBlock(r.bs, jbd2.BlockTypeCommit, w.seq)
	var vs []revfs.Violation
	got := testenv.BytesAllocated(func() { vs = r.write(int64(pb)*r.bs, commit) })
	bound := uint64(sb.MaxLen()) * 16 * 4 // a few times 16 bytes a journal block
	t.Logf("commit block over %d revoke blocks (%d records): %d KiB allocated (bound %d KiB)", n, int64(n)*recs, got>>10, bound>>10)
	if len(vs) > 0 || r.e.jnl.seq != w.seq+1 {
		t.Fatalf("violations %v; engine expects tid %d, want %d", vs, r.e.jnl.seq, w.seq+1)
	}
	if got > bound {
		t.Fatalf("the commit block cost %d bytes, more than %d", got, bound)
	}
}
