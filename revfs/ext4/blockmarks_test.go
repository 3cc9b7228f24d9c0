package ext4

import (
	"math/rand/v2"
	"testing"
)

// blockMarks answers as a map from block to mark would, through sets,
// clears and prunes in any order, with the chunk of the latest access held
// across them.
func TestBlockMarksLikeAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b blockMarks
	want := map[uint64]writeMark{}
	check := func(step int) {
		t.Helper()
		if b.len() != len(want) {
			t.Fatalf("step %d: %d marks, want %d", step, b.len(), len(want))
		}
		for pb, w := range want {
			if got, ok := b.get(pb); !ok || got != w {
				t.Fatalf("step %d: block %d: %v %v, want %v", step, pb, got, ok, w)
			}
		}
		for range 50 {
			pb := rng.Uint64N(4096)
			got, ok := b.get(pb)
			if w, in := want[pb]; ok != in || got != w {
				t.Fatalf("step %d: block %d: %v %v, want %v %v", step, pb, got, ok, w, in)
			}
		}
	}
	for step := range 3000 {
		pb := rng.Uint64N(4096)
		switch r := rng.IntN(10); {
		case r < 6:
			w := writeMark{seq: uint64(step) + 1, epoch: rng.Uint64N(3)}
			b.set(pb, w)
			want[pb] = w
		case r < 9:
			b.set(pb, writeMark{})
			delete(want, pb)
		default:
			lo, hi := rng.Uint64N(4096), rng.Uint64N(4096)
			b.keepOnly(func(pb uint64) bool { return pb >= lo && pb < hi })
			for pb := range want {
				if pb < lo || pb >= hi {
					delete(want, pb)
				}
			}
			if b.pruneAt != 2*b.slots() {
				t.Fatalf("step %d: next prune at %d slots, with %d left", step, b.pruneAt, b.slots())
			}
		}
		check(step)
	}
}

// A prune lets go of the chunks it empties, and keeps the marks of the
// others whole.
func TestBlockMarksPruneFreesChunks(t *testing.T) {
	var b blockMarks
	for pb := uint64(0); pb < 100*marksPerChunk; pb++ {
		b.set(pb, writeMark{seq: pb + 1, epoch: 1})
	}
	b.keepOnly(func(pb uint64) bool { return pb%(10*marksPerChunk) == 3 })
	if b.len() != 10 || b.slots() != 10*marksPerChunk {
		t.Fatalf("kept %d marks in %d slots, want 10 in %d", b.len(), b.slots(), 10*marksPerChunk)
	}
	if w, ok := b.get(3); !ok || w.seq != 4 {
		t.Fatalf("block 3: %v %v", w, ok)
	}
	if _, ok := b.get(4); ok {
		t.Fatal("block 4's mark survived the prune")
	}
}

// A mark set right after a prune emptied the chunk of the latest access
// lands in the marks, not in the chunk let go.
func TestBlockMarksSetAfterPrune(t *testing.T) {
	var b blockMarks
	b.set(5, writeMark{seq: 1, epoch: 1})
	b.keepOnly(func(uint64) bool { return false })
	b.set(6, writeMark{seq: 2, epoch: 1})
	b.set(10*marksPerChunk, writeMark{seq: 3, epoch: 1}) // another chunk
	if w, ok := b.get(6); !ok || w.seq != 2 {
		t.Fatalf("block 6: %v %v, want the mark set after the prune", w, ok)
	}
	if b.len() != 2 || b.slots() != 2*marksPerChunk {
		t.Fatalf("%d marks in %d slots, want 2 in %d", b.len(), b.slots(), 2*marksPerChunk)
	}
}
