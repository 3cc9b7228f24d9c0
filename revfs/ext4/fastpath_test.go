package ext4

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// forgetDropped walks mappings piece by piece; the rule it implements is
// per block: a block past the committed ones that the new maps no longer
// hold at the same physical place is not written any more once another
// owner claims it. The test
// checks the walk against that rule on random old and new maps.
func TestForgetDroppedPerBlockRule(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	randMaps := func() []layout.Mapping {
		var ms []layout.Mapping
		lb := uint64(rng.IntN(4))
		for range rng.IntN(6) {
			n := uint64(1 + rng.IntN(12))
			ms = append(ms, layout.Mapping{Logical: lb, Physical: 1000 + uint64(rng.IntN(4))*20 + lb%3, Len: n})
			lb += n + uint64(rng.IntN(3))
		}
		return ms
	}
	for range 5000 {
		oldMaps, newMaps := randMaps(), randMaps()
		if rng.IntN(3) == 0 { // often the new maps extend the old ones
			newMaps = append(slices.Clone(oldMaps), newMaps...)
			slices.SortFunc(newMaps, func(a, b layout.Mapping) int { return int(a.Logical) - int(b.Logical) })
			newMaps = dropOverlaps(newMaps)
		}
		committed := int64(rng.IntN(20)) * 1024
		e := &Engine{bs: 4096, written: blockSet{}}
		want := blockSet{}
		for b := uint64(900); b < 1200; b++ {
			e.written.Add(b, 1)
			want[b] = true
		}
		from := uint64((committed + e.bs - 1) / e.bs)
		nv := &view{inode: &layout.Inode{}, maps: newMaps}
		for _, m := range oldMaps {
			for i := range m.Len {
				lb := m.Logical + i
				if lb < from {
					continue
				}
				if n, ok := nv.lookup(lb); !ok || n.Physical+lb-n.Logical != m.Physical+i {
					delete(want, m.Physical+i)
				}
			}
		}
		e.forgetDropped(&tracked{committed: committed}, &view{maps: oldMaps}, nv)
		// Dropped blocks are set aside; claimed by another owner, they
		// are forgotten.
		e.settleDropped(0, 1<<20, forgetWritten)
		if got := e.written.(blockSet); !maps.Equal(got, want) {
			t.Fatalf("old %v new %v committed %d: written differs from the per-block rule", oldMaps, newMaps, committed)
		}
	}
}

func dropOverlaps(ms []layout.Mapping) []layout.Mapping {
	out := ms[:0]
	for _, m := range ms {
		if len(out) > 0 && m.Logical < out[len(out)-1].Logical+out[len(out)-1].Len {
			continue
		}
		out = append(out, m)
	}
	return out
}

// applyBitmap skips unchanged words; the rule is per bit: a block whose bit
// goes from set to clear (inside the group's range) is no longer written.
func TestApplyBitmapPerBitRule(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		const bpg = 8 * 1024
		e := &Engine{
			sb:      &layout.SuperBlock{FirstDataBlock: 0, BlocksPerGroup: bpg},
			blocks:  bpg + uint64(rng.IntN(bpg)) + 1, // the last group may be short
			written: blockSet{},
			bitmaps: map[uint64][]byte{},
			bitmapG: map[uint64]uint64{7: 1},
		}
		old := make([]byte, 1024)
		nb := make([]byte, 1024)
		for i := range old {
			if rng.IntN(8) == 0 { // mostly unchanged, some bytes differ
				old[i], nb[i] = byte(rng.Uint32()), byte(rng.Uint32())
			} else {
				old[i] = byte(rng.Uint32())
				nb[i] = old[i]
			}
		}
		e.bitmaps[7] = old
		want := blockSet{}
		for b := uint64(bpg); b < 2*bpg; b++ {
			e.written.Add(b, 1)
			want[b] = true
		}
		for n := uint64(0); n < bpg && bpg+n < e.blocks; n++ {
			if old[n/8]&^nb[n/8]&(1<<(n%8)) != 0 {
				delete(want, bpg+n)
			}
		}
		e.applyBitmap(7, nb)
		if !maps.Equal(e.written.(blockSet), want) {
			t.Fatalf("blocks %d: written differs from the per-bit rule", e.blocks)
		}
	}
}
