package ext4

import (
	"encoding/binary"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// tornRig opens img with var/log/big.log (70000 bytes, 18 blocks)
// protected and nothing committed, has the host write all its blocks, and
// returns the rig and the file's extents ({logical, length, physical}),
// the last at least 8 blocks long.
func tornRig(t *testing.T, img string) (*rig, [][3]uint64) {
	t.Helper()
	const p = "var/log/big.log"
	r := openRig(t, loadImage(t, img), nil, p)
	var xs [][3]uint64
	for _, x := range rt2RootExtents(t, r, p) {
		xs = append(xs, [3]uint64{uint64(x.Block), uint64(x.Length()), x.Start()})
	}
	if len(xs) > 2 || xs[len(xs)-1][1] < 8 || r.bs != 4096 {
		t.Skipf("big.log's extents are %v", xs)
	}
	lbs := make([]uint64, 18)
	for i := range lbs {
		lbs[i] = uint64(i)
	}
	r.writeBlocks(p, lbs...)
	r.wantCoherent(p, 70000, "every block written")
	return r, xs
}

// writeExtents has the host write big.log's inode with extents xs
// ({logical, length, physical}) and size n.
func (r *rig) writeExtents(xs [][3]uint64, n uint32) []revfs.Violation {
	home, blk := r.inodeBlockWith("var/log/big.log", func(raw []byte) {
		rt2Extents(raw, xs)
		binary.LittleEndian.PutUint32(raw[4:], n)
	})
	return r.write(int64(home)*r.bs, blk)
}

// Without a journal the kernel may write an inode while it merges two of
// its extents: the first already covers the second, which is still there
// (ext4_ext_try_to_merge_right). Both map the shared blocks to the same
// place. The range waits as unknown, nothing is raised, and the whole
// copy that follows lets sealing go on. With a journal the copy is frozen:
// such an inode is a violation.
func TestTornExtentMergeWithoutJournal(t *testing.T) {
	const p = "var/log/big.log"
	r, xs := tornRig(t, "b4k-nojournal.img")
	last := xs[len(xs)-1] // {logical, length, physical}
	torn := append(slices.Clone(xs), [3]uint64{last[0] + 4, last[1] - 4, last[2] + 4})
	if vs := r.writeExtents(torn, 70000); len(vs) != 0 {
		t.Fatalf("a torn merge raised %v", vs)
	}
	if got := r.e.Stalls(r.ids[p], 4); len(got) == 0 || got[0].Kind != revfs.StallUnknownTree || got[0].Off != int64(last[0])*4096 {
		t.Fatalf("stalls %v, want the range under the overlap unknown", got)
	}
	if vs := r.writeExtents(xs, 70000); len(vs) != 0 {
		t.Fatalf("the whole copy raised %v", vs)
	}
	r.wantCoherent(p, 70000, "after the whole copy")
	if got := r.e.Stalls(r.ids[p], 4); len(got) != 0 {
		t.Fatalf("stalls %v after the whole copy", got)
	}

	// Overlapping extents that map a block to two places are forged:
	// the kernel's lookup and the device's could read different blocks.
	forged := append(slices.Clone(xs), [3]uint64{last[0] + 4, last[1] - 4, last[2] + 5})
	if vs := r.writeExtents(forged, 70000); !hasKind(vs, revfs.KindUnparseable) {
		t.Fatalf("overlapping extents that disagree raised %q", kinds(vs))
	}

	r, xs = tornRig(t, "b4k-journal.img")
	last = xs[len(xs)-1]
	torn = append(slices.Clone(xs), [3]uint64{last[0] + 4, last[1] - 4, last[2] + 4})
	if vs := r.writeExtents(torn, 70000); !hasKind(vs, revfs.KindUnparseable) {
		t.Fatalf("with a journal, overlapping extents raised %q", kinds(vs))
	}
}

// Without a journal an inode can arrive older than the data it maps, or
// joined to an older leaf: its view maps fewer blocks than the last one.
// The blocks it lacks were written by the host; when the next view maps
// them again where they were, they still count (they used to be
// forgotten, and sealing stalled there for good). Mapped anywhere else,
// they must be written again.
func TestDroppedBlocksKeptWhenMappedAgain(t *testing.T) {
	const p = "var/log/big.log"
	r, xs := tornRig(t, "b4k-nojournal.img")
	last := xs[len(xs)-1]
	short := slices.Clone(xs)
	short[len(short)-1][1] = 4 // the last extent, 4 blocks long
	if vs := r.writeExtents(short, 70000); len(vs) != 0 {
		t.Fatalf("an older inode raised %v", vs)
	}
	r.wantCoherent(p, int64(last[0]+4)*4096, "the older inode maps fewer blocks")
	if vs := r.writeExtents(xs, 70000); len(vs) != 0 {
		t.Fatalf("the newer inode raised %v", vs)
	}
	r.wantCoherent(p, 70000, "the blocks mapped again where they were")

	// Dropped, then mapped at other logical blocks: a new allocation.
	if vs := r.writeExtents(short, 70000); len(vs) != 0 {
		t.Fatalf("%v", vs)
	}
	moved := append(slices.Clone(short), [3]uint64{last[0] + last[1] + 2, last[1] - 4, last[2] + 4})
	if vs := r.writeExtents(moved, uint32(last[0]+2*last[1]-2)*4096); len(vs) != 0 {
		t.Fatalf("%v", vs)
	}
	for _, b := range []uint64{last[2] + 4, last[2] + last[1] - 1} {
		if r.e.written.Contains(b, 1) {
			t.Fatalf("block %d, dropped and mapped at another logical block, still counts as written", b)
		}
	}
	if !r.e.written.Contains(last[2], 4) {
		t.Fatal("the blocks the file kept lost their written state")
	}
}

// Engine.dropped is a sorted list of disjoint spans; the rule it
// implements is per block: the newest record of a block set aside, cut by
// a write, kept by a claim from the same place, forgotten (not written)
// by a claim from elsewhere. The test checks the spans against that rule
// on random drops, writes and claims.
func TestDroppedSpansPerBlockRule(t *testing.T) {
	type rec struct{ ino, logical uint64 }
	rng := rand.New(rand.NewPCG(5, 8))
	for range 300 {
		e := &Engine{bs: 4096, written: blockSet{}}
		model := map[uint64]rec{}
		written := map[uint64]bool{}
		for b := uint64(0); b < 200; b++ {
			e.written.Add(b, 1)
			written[b] = true
		}
		for range 60 {
			first, n := uint64(rng.IntN(180)), uint64(1+rng.IntN(20))
			ino, logical := uint64(1+rng.IntN(3)), uint64(rng.IntN(50))
			switch rng.IntN(3) {
			case 0:
				e.drop(droppedSpan{phys: first, n: n, logical: logical, ino: ino})
				for i := range n {
					model[first+i] = rec{ino, logical + i}
				}
			case 1:
				e.markWritten(first, n)
				for i := range n {
					delete(model, first+i)
					written[first+i] = true
				}
			case 2:
				e.claimDropped(&tracked{ino: ino}, &view{inode: &layout.Inode{}, maps: []layout.Mapping{{Logical: logical, Physical: first, Len: n}}})
				for i := range n {
					if r, ok := model[first+i]; ok {
						if r != (rec{ino, logical + i}) {
							delete(written, first+i)
						}
						delete(model, first+i)
					}
				}
			}
			if len(e.dropped) > maxDropped {
				t.Fatalf("%d spans", len(e.dropped))
			}
			got := map[uint64]rec{}
			for k, s := range e.dropped {
				if k > 0 && e.dropped[k-1].phys+e.dropped[k-1].n > s.phys {
					t.Fatalf("spans out of order or overlapping: %v", e.dropped)
				}
				for i := range s.n {
					got[s.phys+i] = rec{s.ino, s.logical + i}
				}
			}
			if !maps.Equal(got, model) {
				t.Fatalf("set aside %v, want %v", got, model)
			}
			if !maps.Equal(map[uint64]bool(e.written.(blockSet)), written) {
				t.Fatal("written set differs from the per-block rule")
			}
		}
	}
}

// An index node without entries: the kernel refuses it (invalid
// eh_entries), so the file cannot be read there; read as a hole, its range
// could be taken as found as zeroes. With a journal it is unparseable at
// once; without one, an unknown range (raised when it stays).
func TestEmptyIndexNode(t *testing.T) {
	const p = "var/log/big.log"
	for _, img := range []string{"b4k-nojournal.img", "b4k-journal.img"} {
		t.Run(img, func(t *testing.T) {
			r, _ := tornRig(t, img)
			home, blk := r.inodeBlockWith(p, func(raw []byte) {
				ib := raw[0x28 : 0x28+60]
				clear(ib)
				binary.LittleEndian.PutUint16(ib[0:], layout.ExtentMagic)
				binary.LittleEndian.PutUint16(ib[4:], 4)
				binary.LittleEndian.PutUint16(ib[6:], 1)
			})
			vs := r.write(int64(home)*r.bs, blk)
			if r.e.jnl != nil {
				if !hasKind(vs, revfs.KindUnparseable) {
					t.Fatalf("raised %q", kinds(vs))
				}
				return
			}
			if len(vs) != 0 {
				t.Fatalf("raised %v", vs)
			}
			if got := r.e.Stalls(r.ids[p], 4); len(got) == 0 || got[0].Kind != revfs.StallUnknownTree {
				t.Fatalf("stalls %v, want the file unknown", got)
			}
		})
	}
}
