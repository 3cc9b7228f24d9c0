package ext4

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// A host points a protected file's extent root at an index block it has
// never written: the block map below cannot be read, so the committed
// range cannot be judged until the host writes it. The committed blocks
// must stay watched meanwhile: overwriting them is refused at once, and a
// leaf later written under the index that restores the old map does not
// launder the overwrite.
func TestAttackHiddenSubtree(t *testing.T) {
	for _, name := range []string{"b4k-nojournal.img", "b4k-journal.img", "b1k-nojournal.img"} {
		t.Run(name, func(t *testing.T) {
			const p = "var/log/app.log"
			r := openRig(t, loadImage(t, name), map[string]int64{p: 5000}, p)
			f := r.e.byIno[uint64(r.ids[p])]
			if len(f.view.tree) != 0 || len(f.view.maps) == 0 {
				t.Fatalf("app.log should map its data from the inode itself: tree %v maps %v", f.view.tree, f.view.maps)
			}
			data := f.view.maps[0]
			c := r.e.blocks - 20 // free, never written by the host
			if r.written.Contains(c, 1) {
				t.Fatalf("block %d already written", c)
			}

			// 1. The root becomes a depth-1 index over block c.
			ib := bytes.Clone(r.img.b[int64(f.inoBlock)*r.bs : int64(f.inoBlock+1)*r.bs])
			root := ib[f.inoOff+0x28 : f.inoOff+0x28+60]
			clear(root)
			binary.LittleEndian.PutUint16(root[0:], 0xF30A) // magic
			binary.LittleEndian.PutUint16(root[2:], 1)      // entries
			binary.LittleEndian.PutUint16(root[4:], 4)      // max
			binary.LittleEndian.PutUint16(root[6:], 1)      // depth
			binary.LittleEndian.PutUint32(root[16:], uint32(c))
			if vs := r.write(int64(f.inoBlock)*r.bs, ib); len(vs) != 0 {
				t.Logf("index over an unwritten block: %v", vs) // judging may wait for the leaf
			}
			if !r.e.Watches(int64(data.Physical)*r.bs, r.bs) {
				t.Fatal("the committed data block is no longer watched while the map above it is unknown")
			}

			// 2. Overwriting committed bytes is a violation now.
			evil := bytes.Repeat([]byte("X"), int(r.bs))
			vs := r.e.CheckWrite(int64(data.Physical)*r.bs, evil)
			if !slices.ContainsFunc(vs, func(v revfs.Violation) bool { return v.Kind == revfs.KindDataChanged }) {
				t.Fatalf("overwrite of committed data under an unknown subtree: %v, want %v", vs, revfs.KindDataChanged)
			}
		})
	}
}

// Only the part of the committed range under an unreadable subtree waits
// to be judged; a remap of the rest is a violation at once.
func TestMappingCheckJudgesKnownPart(t *testing.T) {
	const p = "var/log/frag.log"
	r := openRig(t, loadImage(t, "b1k-nojournal.img"), map[string]int64{p: 20000}, p)
	f := r.e.byIno[uint64(r.ids[p])]
	n := uint64((f.committed + r.bs - 1) / r.bs)
	if len(f.sealed) < 2 || n < 4 {
		t.Fatalf("frag.log: sealed %v over %d blocks, want at least two extents", f.sealed, n)
	}
	view := func(maps []layout.Mapping, unknown ...lrange) *view {
		nv := *f.view
		nv.maps, nv.unknown = maps, unknown
		return &nv
	}
	chg := &change{carries: map[uint64]bool{}, blame: func(uint64, int, int) (int64, int64) { return 0, 0 }}
	kinds := func(vs []revfs.Violation) []revfs.Kind {
		var ks []revfs.Kind
		for _, v := range vs {
			ks = append(ks, v.Kind)
		}
		return ks
	}
	last := f.sealed[len(f.sealed)-1]
	first := f.sealed[0]
	remapped := slices.Clone(f.sealed)
	remapped[0].Physical += 100

	// The last extent unknown, the first remapped: judged, refused.
	known := slices.DeleteFunc(slices.Clone(remapped), func(m layout.Mapping) bool { return m.Logical == last.Logical })
	if vs := r.e.checkFile(f, view(known, lrange{last.Logical, 1 << 32}), chg); !slices.Contains(kinds(vs), revfs.KindMappingChanged) {
		t.Errorf("remap beside an unknown subtree: %v, want mapping-changed", vs)
	}
	// The first extent unknown (remapped or not, it cannot be read): waits.
	rest := slices.Clone(f.sealed[1:])
	if vs := r.e.checkFile(f, view(rest, lrange{first.Logical, first.Logical + first.Len}), chg); len(vs) != 0 {
		t.Errorf("only the unknown part differs: %v, want none yet", vs)
	}
	// Nothing unknown, nothing changed: fine.
	if vs := r.e.checkFile(f, view(slices.Clone(f.sealed)), chg); len(vs) != 0 {
		t.Errorf("same map: %v", vs)
	}
	// While the first extent is unknown, its committed blocks stay watched.
	saved := f.view
	f.view = view(rest, lrange{first.Logical, first.Logical + first.Len})
	defer func() { f.view = saved }()
	got := r.e.sealedUncovered(f)
	want := []layout.Mapping{{Logical: first.Logical, Physical: first.Physical, Len: min(first.Len, n-first.Logical), Unwritten: first.Unwritten}}
	if !slices.Equal(got, want) {
		t.Errorf("sealedUncovered: %v, want %v", got, want)
	}
}

func TestMapDiffs(t *testing.T) {
	m := func(l, p, n uint64) layout.Mapping { return layout.Mapping{Logical: l, Physical: p, Len: n} }
	for _, c := range []struct {
		a, b []layout.Mapping
		n    uint64
		want []lrange
	}{
		{[]layout.Mapping{m(0, 100, 10)}, []layout.Mapping{m(0, 100, 4), m(4, 104, 6)}, 10, nil},
		{[]layout.Mapping{m(0, 100, 10)}, []layout.Mapping{m(0, 100, 4), m(4, 200, 6)}, 10, []lrange{{4, 10}}},
		{[]layout.Mapping{m(0, 100, 4)}, []layout.Mapping{m(0, 100, 4), m(6, 300, 2)}, 10, []lrange{{6, 8}}},
		{nil, []layout.Mapping{m(2, 50, 3)}, 4, []lrange{{2, 4}}},
		{[]layout.Mapping{m(0, 100, 10)}, []layout.Mapping{m(0, 100, 10)}, 1 << 40, nil},
		{[]layout.Mapping{{Logical: 0, Physical: 7, Len: 3, Unwritten: true}}, []layout.Mapping{m(0, 7, 3)}, 3, []lrange{{0, 3}}},
	} {
		if got := mapDiffs(c.a, c.b, c.n); !slices.Equal(got, c.want) {
			t.Errorf("mapDiffs(%v, %v, %d) = %v, want %v", c.a, c.b, c.n, got, c.want)
		}
	}
	v := &view{unknown: []lrange{{10, 20}, {0, 5}, {5, 8}}}
	for _, c := range []struct {
		lo, hi uint64
		want   bool
	}{{0, 8, true}, {2, 7, true}, {0, 9, false}, {10, 20, true}, {7, 11, false}, {25, 30, false}} {
		if got := v.unknownCovers(c.lo, c.hi); got != c.want {
			t.Errorf("unknownCovers(%d, %d) = %v, want %v", c.lo, c.hi, got, c.want)
		}
	}
}
