package ext4

import (
	"bytes"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
)

func unknownTree(ss []revfs.Stall) bool {
	for _, s := range ss {
		if s.Kind == revfs.StallUnknownTree {
			return true
		}
	}
	return false
}

// Without a journal and with -o discard, ext4 trims the leaf of a tree it
// folds back into the inode at once, before the inode that stops using it
// is written (tests/kernel TestHuntNoneDiscardMount). The TRIM is held:
// accepted, not carried out, nothing raised. The hold ends when the inode
// stops using the block or the host writes it again; a block still in use
// after a FLUSH is an unknown-tree range, which the device raises when it
// stays (what an attacker's TRIM of a protected leaf comes to).
func TestTrimOfFoldedLeafWithoutJournal(t *testing.T) {
	const frag = "var/log/frag.log"
	r, _, f := leafRig(t, map[string]int64{frag: 3072})
	leaf := f.view.tree[0]
	off := int64(leaf) * r.bs
	if vs := r.e.CheckDiscard(off, r.bs); len(vs) == 0 {
		t.Fatal("a TRIM of the leaf is not watched")
	}
	if !r.e.HoldTrim(off, r.bs) {
		t.Fatal("the TRIM of the leaf is not held")
	}
	if ss := r.e.Stalls(r.ids[frag], 4); unknownTree(ss) {
		t.Fatalf("stalls %v before any FLUSH", ss)
	}
	r.e.Flushed()
	if ss := r.e.Stalls(r.ids[frag], 4); !unknownTree(ss) {
		t.Fatalf("stalls %v: the leaf is still used after a FLUSH", ss)
	}
	// The host writes the leaf again (allocated anew): the hold ends.
	if vs := r.write(off, bytes.Clone(r.e.meta[leaf])); len(vs) != 0 {
		t.Fatal(vs)
	}
	if ss := r.e.Stalls(r.ids[frag], 4); unknownTree(ss) {
		t.Fatalf("stalls %v after the leaf was written again", ss)
	}

	// The inode stops using the leaf: the hold ends.
	if !r.e.HoldTrim(off, r.bs) {
		t.Fatal("the TRIM of the leaf is not held")
	}
	r.e.Flushed()
	var xs [][3]uint64
	for _, m := range f.view.maps[:4] {
		xs = append(xs, [3]uint64{m.Logical, m.Len, m.Physical})
	}
	home, blk := r.inodeBlockWith(frag, func(raw []byte) { rt2Extents(raw, xs) })
	if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
		t.Fatalf("the folded inode raised %v", vs)
	}
	if len(r.e.held) != 0 {
		t.Fatalf("holds %v after the inode stopped using the leaf", r.e.held)
	}
	if ss := r.e.Stalls(r.ids[frag], 4); unknownTree(ss) {
		t.Fatalf("stalls %v after the inode stopped using the leaf", ss)
	}
}

// What else a TRIM touches is judged as before: committed data, the inode
// table, and anything with a journal.
func TestTrimNotHeld(t *testing.T) {
	const frag = "var/log/frag.log"
	r, _, f := leafRig(t, map[string]int64{frag: 3072})
	leaf := f.view.tree[0]
	first := f.view.maps[0].Physical // committed
	for _, c := range []struct {
		what     string
		off, len int64
	}{
		{"committed data", int64(first) * r.bs, r.bs},
		{"the leaf and committed data", int64(min(first, leaf)) * r.bs, int64(max(first, leaf)-min(first, leaf)+1) * r.bs},
		{"the inode table", int64(f.inoBlock) * r.bs, r.bs},
	} {
		if r.e.HoldTrim(c.off, c.len) {
			t.Errorf("a TRIM of %s is held", c.what)
		}
		if vs := r.e.CheckDiscard(c.off, c.len); len(vs) == 0 {
			t.Errorf("a TRIM of %s raised nothing", c.what)
		}
	}
	rj := openRig(t, loadImage(t, "b4k-journal.img"), nil, frag)
	fj := rj.e.byIno[uint64(rj.ids[frag])]
	if len(fj.view.tree) != 1 {
		t.Skipf("frag.log's tree %v", fj.view.tree)
	}
	if rj.e.HoldTrim(int64(fj.view.tree[0])*rj.bs, rj.bs) {
		t.Error("with a journal, a TRIM of a leaf is held")
	}
}
