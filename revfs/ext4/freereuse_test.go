package ext4

import (
	"bytes"
	"testing"
)

// With data=writeback, ext4 frees a data block for reuse at once
// (ext4_mb_clear_bb): the next transaction may give it to another file and
// writeback write its data while jbd2 still writes the transaction whose
// bitmap (its frozen copy) frees it. That write is the new owner's and
// stays in the written set when the commit lands; a write before the
// transaction's log (the old owner's) is forgotten.
func TestCommitFreeingBlockKeepsNewOwnersWrite(t *testing.T) {
	const p = "var/log/app.log"
	path := loadImage(t, "b4k-journal.img")
	probe := openRig(t, path, nil, "var/log/big.log")
	m, ok := probe.e.byIno[uint64(probe.ids["var/log/big.log"])].view.lookup(0)
	if !ok || m.Len < 2 {
		t.Fatalf("big.log: unexpected map %+v", m)
	}
	old, reused := m.Physical, m.Physical+1 // used blocks of a file nobody protects here

	r := openRig(t, path, nil, p)
	bb := r.e.groups[0].BlockBitmap()
	bm := bytes.Clone(r.img.b[int64(bb)*r.bs : int64(bb+1)*r.bs])
	for _, b := range []uint64{old, reused} {
		if bm[b/8]&(1<<(b%8)) == 0 {
			t.Fatalf("block %d is free in the image", b)
		}
		bm[b/8] &^= 1 << (b % 8) // freed by the transaction
	}
	w := newTxWriter(r)
	if vs := r.write(r.journalSuperblockAt(w.pos, w.seq)); len(vs) != 0 {
		t.Fatalf("superblock as at mount: %v", vs)
	}
	data := bytes.Repeat([]byte{'x'}, int(r.bs))
	r.write(int64(old)*r.bs, data) // before the transaction's log: the old owner
	off, commit := w.stage([]uint64{bb}, [][]byte{bm})
	r.write(int64(reused)*r.bs, data) // during its log: the block's next owner
	if vs := r.write(off, commit); len(vs) != 0 {
		t.Fatalf("commit: %v", vs)
	}
	if !r.written[reused] {
		t.Error("a block written after the log of the transaction freeing it was forgotten at its commit")
	}
	if r.written[old] {
		t.Error("a block written before the log of the transaction freeing it is still marked written")
	}

	// The next transaction's log starts after this commit: an earlier
	// write no longer counts for it.
	bm2 := bytes.Clone(bm)
	bm2[reused/8] |= 1 << (reused % 8)
	off, commit = w.stage([]uint64{bb}, [][]byte{bm2})
	r.write(off, commit)
	bm3 := bytes.Clone(bm2)
	bm3[reused/8] &^= 1 << (reused % 8)
	off, commit = w.stage([]uint64{bb}, [][]byte{bm3})
	r.write(off, commit)
	if r.written[reused] {
		t.Error("a write before the log of a later transaction freeing the block kept it written")
	}
}
