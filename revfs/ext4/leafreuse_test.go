package ext4

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// leafRig opens b4k-nojournal.img with big.log (18 blocks in the inode) and
// frag.log (12 extents under one leaf) protected, committed as given, and
// has the host write every data block of both.
func leafRig(t *testing.T, committed map[string]int64) (r *rig, big, frag *tracked) {
	t.Helper()
	r = openRig(t, loadImage(t, "b4k-nojournal.img"), committed, "var/log/big.log", "var/log/frag.log")
	big, frag = r.e.byIno[uint64(r.ids["var/log/big.log"])], r.e.byIno[uint64(r.ids["var/log/frag.log"])]
	if len(frag.view.tree) != 1 || len(big.view.tree) != 0 || !r.e.sb.HasMetadataCsum() {
		t.Skipf("big.log's tree %v, frag.log's %v", big.view.tree, frag.view.tree)
	}
	for _, f := range []*tracked{big, frag} {
		for _, m := range f.view.maps {
			off := int64(m.Physical) * r.bs
			if vs := r.write(off, bytes.Clone(r.img.b[off:off+int64(m.Len)*r.bs])); len(vs) != 0 {
				t.Fatal(vs)
			}
		}
	}
	return r, big, frag
}

// mapsAny reports whether f's view maps any block of g's view.
func mapsAny(f, g *tracked) bool {
	for _, m := range f.view.maps {
		for _, n := range g.view.maps {
			if m.Physical < n.Physical+n.Len && n.Physical < m.Physical+m.Len {
				return true
			}
		}
	}
	return false
}

// writtenAll reports whether every block f maps counts as written.
func (r *rig) writtenAll(f *tracked) bool {
	for _, m := range f.view.maps {
		if !r.e.written.Contains(m.Physical, m.Len) {
			return false
		}
	}
	return true
}

// Without a journal, ext4 folds one file's tree back into its inode, frees
// the leaf and gives the block to another file's new leaf: the other
// file's inode, pointing at it, can land before the new leaf (and in the
// same inode-table block as the first inode, which stops pointing at it).
// The leaf the engine holds is the first file's: it is not the second
// file's, whose range stays unknown until its own leaf comes. Read as the
// second file's, it mapped the first file's blocks; when the second file
// stopped using them again, the first file's next view found them "dropped
// by another owner" and forgot that the host wrote them: sealing stopped
// for good (tests/kernel TestHuntNoneMultiWriters).
func TestLeafOfAnotherFileWithoutJournal(t *testing.T) {
	r, big, frag := leafRig(t, nil)
	leaf := frag.view.tree[0]
	xs := big.view.maps
	if vs := r.writeRootIndex("var/log/big.log", leaf); len(vs) != 0 {
		t.Fatalf("big.log pointing at frag.log's leaf raised %v", vs)
	}
	if mapsAny(big, frag) {
		t.Fatalf("big.log maps frag.log's blocks through frag.log's leaf: %v", big.view.maps)
	}
	if got := r.e.Stalls(r.ids["var/log/big.log"], 4); len(got) == 0 || got[0].Kind != revfs.StallUnknownTree {
		t.Fatalf("stalls %v, want big.log's map unknown", got)
	}
	var back [][3]uint64
	for _, m := range xs {
		back = append(back, [3]uint64{m.Logical, m.Len, m.Physical})
	}
	if vs := r.writeExtents(back, 70000); len(vs) != 0 {
		t.Fatalf("big.log back in its inode raised %v", vs)
	}
	r.writeSize("var/log/frag.log", uint32(frag.view.size)+1) // a new view of frag.log
	if !r.writtenAll(frag) {
		t.Fatal("frag.log's blocks no longer count as written")
	}
}

// leafOf returns a leaf block holding f's extents maps, with f's checksum.
func (r *rig) leafOf(f *tracked, maps []layout.Mapping) []byte {
	nb := make([]byte, r.bs)
	le := binary.LittleEndian
	le.PutUint16(nb[0:], layout.ExtentMagic)
	le.PutUint16(nb[2:], uint16(len(maps)))
	le.PutUint16(nb[4:], uint16((r.bs-12)/12))
	for i, m := range maps {
		e := nb[12+12*i:]
		le.PutUint32(e[0:], uint32(m.Logical))
		le.PutUint16(e[4:], uint16(m.Len))
		le.PutUint32(e[8:], uint32(m.Physical))
	}
	r.sealExtentBlock(f, nb)
	return nb
}

// writeRootIndex has the host write p's inode with a depth-1 root naming
// leaf.
func (r *rig) writeRootIndex(p string, leaf uint64) []revfs.Violation {
	home, blk := r.inodeBlockWith(p, func(raw []byte) {
		ib := raw[0x28 : 0x28+60]
		le := binary.LittleEndian
		clear(ib)
		le.PutUint16(ib[0:], layout.ExtentMagic)
		le.PutUint16(ib[2:], 1)
		le.PutUint16(ib[4:], 4)
		le.PutUint16(ib[6:], 1)
		le.PutUint32(ib[16:], uint32(leaf))
	})
	return r.write(int64(home)*r.bs, blk)
}

// The other way round: ext4 folds a small tree back into the inode and the
// freed leaf's next owner writes it (another file's leaf or data) before
// the inode that stops pointing at it lands. That is not this file's leaf
// (nor would the kernel read it as such): the range under it is unknown,
// not remapped, and not a change of the committed block map. A leaf that
// cannot have been folded (more extents than the inode holds) is judged
// at once, as before.
func TestLeafReusedByAnotherFileWithoutJournal(t *testing.T) {
	const p = "var/log/big.log"
	r, big, frag := leafRig(t, map[string]int64{p: 8192, "var/log/frag.log": 3072})
	xs := slices.Clone(big.view.maps)
	const x = 3000 // a free block: big.log's tree goes there
	if len(r.e.roles[x]) != 0 || len(r.e.dataAt(x, x)) != 0 {
		t.Skipf("block %d is in use", x)
	}
	if vs := r.write(x*r.bs, r.leafOf(big, xs)); len(vs) != 0 {
		t.Fatal(vs)
	}
	if vs := r.writeRootIndex(p, x); len(vs) != 0 {
		t.Fatalf("big.log's tree into a leaf raised %v", vs)
	}
	if !slices.Equal(big.view.maps, xs) || len(big.view.tree) != 1 {
		t.Fatalf("big.log's view %v (tree %v)", big.view.maps, big.view.tree)
	}
	for _, c := range []struct {
		what string
		b    []byte
	}{
		{"frag.log's leaf", r.leafOf(frag, frag.view.maps[:3])},
		{"another file's data", bytes.Repeat([]byte("q"), int(r.bs))},
	} {
		if vs := r.write(x*r.bs, c.b); len(vs) != 0 {
			t.Fatalf("%s in big.log's folded leaf raised %v", c.what, vs)
		}
		if mapsAny(big, frag) || len(big.view.maps) != 0 {
			t.Fatalf("%s: big.log maps %v", c.what, big.view.maps)
		}
		r.writeSize(p, 70000) // a new view of big.log: still unknown
		if got := r.e.Stalls(r.ids[p], 4); len(got) == 0 || got[0].Kind != revfs.StallUnknownTree {
			t.Fatalf("%s: stalls %v, want big.log's map unknown", c.what, got)
		}
	}
	// A leaf with big.log's own checksum moving its committed blocks is
	// judged at once, foldable or not.
	moved := slices.Clone(xs)
	moved[0].Physical++
	if vs := r.write(x*r.bs, r.leafOf(big, moved)); len(vs) == 0 {
		t.Fatal("a leaf moving committed blocks, with the file's checksum, raised nothing")
	}
	// The inode that stopped using the leaf lands.
	var back [][3]uint64
	for _, m := range xs {
		back = append(back, [3]uint64{m.Logical, m.Len, m.Physical})
	}
	if vs := r.writeExtents(back, 70000); len(vs) != 0 {
		t.Fatalf("big.log back in its inode raised %v", vs)
	}
	r.wantCoherent(p, 70000, "big.log folded back")
	if !r.writtenAll(big) || !r.writtenAll(frag) {
		t.Fatal("blocks lost their written state")
	}

	// frag.log's leaf holds 12 extents: the kernel cannot have folded it.
	// Another file's leaf there, with that file's checksum, is a change
	// of frag.log's committed block map, raised at once.
	leaf := frag.view.tree[0]
	if vs := r.write(int64(leaf)*r.bs, r.leafOf(big, xs)); !hasKind(vs, revfs.KindMappingChanged) {
		t.Fatalf("another file's leaf over an unfoldable leaf raised %q", kinds(vs))
	}
}
