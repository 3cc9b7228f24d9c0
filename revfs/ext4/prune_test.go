package ext4

import (
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// forgeTail appends unwritten extents to f's view past everything it maps:
// n extents of length each, from logical block lb, the ith at device block
// phys + i*step (forged extents may overlap on the device).
func forgeTail(f *tracked, lb uint64, n int, length, phys, step uint64) {
	maps := append([]layout.Mapping(nil), f.view.maps...)
	for i := range uint64(n) {
		maps = append(maps, layout.Mapping{Logical: lb + i*length, Physical: phys + i*step, Len: length, Unwritten: true})
	}
	f.view.maps = maps
}

// Forged extents can map 2^32 logical blocks past a file's watermark
// (here 8192 of 32767 blocks, 2^28). Pruning the write marks used to walk
// every block they map, minutes at a seal, under the device lock; it
// costs the number of marks and extents now, and keeps exactly the marks
// inside the tails.
func TestPruneForgedTailFast(t *testing.T) {
	const p = "var/log/app.log" // 5000 bytes: block 0 sealed, block 1 the tail
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), map[string]int64{p: 4096}, p)
	f := r.e.byIno[uint64(r.ids[p])]
	sealed, ok1 := f.view.lookup(0)
	tail, ok2 := f.view.lookup(1)
	if !ok1 || !ok2 {
		t.Fatalf("blocks 0 and 1 of %s not mapped", p)
	}
	forgeTail(f, 1<<20, 8192, 32767, 100, 0)
	want := map[uint64]writeMark{}
	mark := func(pb uint64, in bool) {
		w := writeMark{seq: pb, epoch: 1}
		r.e.lastWrite.set(pb, w)
		if in {
			want[pb] = w
		}
	}
	for b := uint64(0); b < 70000; b++ {
		mark(1<<30+b, false) // no file's block
	}
	mark(sealed.Physical+0-sealed.Logical, false)
	mark(tail.Physical+1-tail.Logical, true)
	mark(99, false)
	for pb := uint64(100); pb < 100+32767; pb += 1000 {
		mark(pb, true) // in the forged tail
	}
	mark(100+32767, false)

	const bound = 500 * time.Millisecond // milliseconds; minutes before
	start := time.Now()
	r.e.setCommitted(f, f.committed+1)
	if d := time.Since(start); d > bound {
		t.Fatalf("a seal with %d marks and 2^28 forged tail blocks took %v", r.e.lastWrite.len(), d)
	}
	start = time.Now()
	r.e.pruneLastWrite()
	d := time.Since(start)
	t.Logf("prune of %d marks over 2^28 forged tail blocks: %v", 70000+len(want)+3, d)
	if d > bound {
		t.Fatalf("pruning took %v", d)
	}
	if r.e.lastWrite.len() != len(want) {
		t.Fatalf("kept %d marks, want %d", r.e.lastWrite.len(), len(want))
	}
	for pb, w := range want {
		if got, _ := r.e.lastWrite.get(pb); got != w {
			t.Fatalf("block %d: mark %v, want %v", pb, got, w)
		}
	}
}

// A host that keeps more than minLastWritePrune marks inside the unsealed
// tails cannot make every seal walk (and copy) them all: after a prune,
// the next waits until the marks take twice the room, and then drops
// those outside every tail.
func TestPruneNotEverySeal(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), map[string]int64{p: 4096}, p)
	f := r.e.byIno[uint64(r.ids[p])]
	const inside = 70000 // forged tail blocks, each with a mark
	forgeTail(f, 1<<20, 3, 32767, 1<<20, 32767)
	f.view.maps[len(f.view.maps)-1].Len = inside - 2*32767
	for b := uint64(0); b < inside; b++ {
		r.e.lastWrite.set(1<<20+b, writeMark{seq: b, epoch: 1})
	}
	n := r.e.lastWrite.len()
	if n <= minLastWritePrune {
		t.Fatalf("%d marks: not past the threshold", n)
	}
	const seals = 20
	got := testenv.BytesAllocated(func() {
		for range seals {
			r.e.setCommitted(f, f.committed+1)
		}
	})
	t.Logf("%d seals with %d marks, all inside the tails: %d bytes allocated", seals, n, got)
	if got > seals*64<<10 || r.e.lastWrite.len() != n {
		t.Fatalf("%d seals allocated %d bytes and left %d of %d marks: they walked the marks", seals, got, r.e.lastWrite.len(), n)
	}

	// Marks outside every tail, more than the tails map blocks: the next
	// seal drops them.
	for b := uint64(0); b < 2*inside; b++ {
		r.e.lastWrite.set(1<<30+b, writeMark{seq: b, epoch: 1})
	}
	r.e.setCommitted(f, f.committed+1)
	if r.e.lastWrite.len() != n {
		t.Fatalf("after the seal %d marks, want the %d inside the tails", r.e.lastWrite.len(), n)
	}
}
