package ext4

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// In data=journal a block can pass from an unprotected file to a protected
// one inside one transaction: freed and allocated again, the bitmaps never
// show it free, and its home still holds the old owner's bytes (written
// before, so counted as written). The protected file's bytes for it are
// the copy in the log, logged before the FLUSH that precedes the commit
// block. markMapped's mark for the block (its old write, now the file's)
// must not count as a home write newer than that copy: it did, and the
// device sealed the old owner's bytes as the file's (I1; seen in
// TestHuntDiscardMount/journal, "zzzz" sealed into b.log).
func TestStaleHomeUnderJournalledCopy(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-journal-data.img"), map[string]int64{p: 5000}, p)
	f := r.e.byIno[uint64(r.ids[p])]
	var maps [][3]uint64
	next := uint64(0)
	for _, x := range rt2RootExtents(t, r, p) {
		maps = append(maps, [3]uint64{uint64(x.Block), uint64(x.Len), x.Start()})
		next = uint64(x.Block) + uint64(x.Length())
	}
	if len(maps) > 3 || next != 2 {
		t.Skipf("extents %v", maps)
	}
	x := r.e.blocks - 10 // free in the test image
	if len(r.e.roles[x]) != 0 || len(r.e.dataAt(x, x)) != 0 {
		t.Skipf("block %d is in use", x)
	}
	// The old owner's bytes, written home (an unprotected file).
	if vs := r.write(int64(x)*r.bs, bytes.Repeat([]byte("z"), int(r.bs))); len(vs) != 0 {
		t.Fatal(vs)
	}
	r.e.Flushed()

	// A transaction gives x to app.log as logical block 2, its data in the
	// log: descriptor and copies, a FLUSH, then the commit block.
	data := bytes.Repeat([]byte("new line of app.log\n"), int(r.bs)/20)
	size := uint32(2*r.bs + 100)
	maps = append(maps, [3]uint64{2, 1, x})
	_, ib := r.inodeBlockWith(p, func(raw []byte) {
		rt2Extents(raw, maps)
		binary.LittleEndian.PutUint32(raw[4:], size)
	})
	// Block 1 completed too (the file held 5000 bytes).
	m1, _ := f.view.lookup(1)
	b1 := m1.Physical + 1 - m1.Logical
	blk1 := bytes.Clone(r.img.b[int64(b1)*r.bs : int64(b1+1)*r.bs])
	for i := 5000 - int(r.bs); i < len(blk1); i++ {
		blk1[i] = 'a'
	}
	w := newCsumTx(r)
	cpos := w.log([]uint64{f.inoBlock, b1, x}, [][]byte{ib, blk1, data})
	r.e.Flushed()
	if vs, _ := w.commit(cpos); len(vs) != 0 {
		t.Fatalf("commit raised %v", vs)
	}
	r.e.Flushed()
	st := r.state(p)
	if st.Coherent < int64(size) {
		t.Fatalf("coherent %d of %d", st.Coherent, size)
	}
	got := make([]byte, 100)
	if err := r.e.ReadFile(st.ID, got, 2*r.bs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[:100]) {
		t.Fatalf("block 2 of %s reads %q, want the journalled copy %q: the old owner's bytes would be sealed (I1)", p, got[:16], data[:16])
	}
}
