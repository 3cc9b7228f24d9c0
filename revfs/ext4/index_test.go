package ext4

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
)

// sortDataSpans sorts runs that come in any order, sorted or not, empty or
// not, into one list by physical block, the same as a plain sort.
func TestSortDataSpans(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var spare []dataSpan
	for round := range 300 {
		var data []dataSpan
		var runs []int
		for range rng.IntN(20) {
			runs = append(runs, len(data))
			n := rng.IntN(6)
			base := rng.Uint64N(1000)
			for k := range n {
				phys := base + uint64(k)*10
				if round%3 == 0 {
					phys = rng.Uint64N(1000) // a run out of order
				}
				data = append(data, dataSpan{phys: phys, n: 1, logical: uint64(k)})
			}
		}
		want := slices.Clone(data)
		slices.SortStableFunc(want, func(a, b dataSpan) int { return cmp.Compare(a.phys, b.phys) })
		var got []dataSpan
		got, spare = sortDataSpans(data, runs, spare)
		if len(got) != len(want) {
			t.Fatalf("round %d: %d spans, want %d", round, len(got), len(want))
		}
		for i := range got {
			if got[i].phys != want[i].phys {
				t.Fatalf("round %d: span %d at %d, want %d", round, i, got[i].phys, want[i].phys)
			}
		}
		// Same multiset: every (phys, logical) pair kept.
		key := func(d dataSpan) [2]uint64 { return [2]uint64{d.phys, d.logical} }
		count := map[[2]uint64]int{}
		for _, d := range want {
			count[key(d)]++
		}
		for _, d := range got {
			count[key(d)]--
		}
		for k, c := range count {
			if c != 0 {
				t.Fatalf("round %d: span %v count off by %d", round, k, c)
			}
		}
	}
}

// recordingSet records the calls made to a revfs.BlockSet.
type recordingSet struct{ adds [][2]uint64 }

func (s *recordingSet) Add(first, n uint64)           { s.adds = append(s.adds, [2]uint64{first, n}) }
func (s *recordingSet) Remove(first, n uint64)        {}
func (s *recordingSet) Contains(first, n uint64) bool { return false }

// addBlockRuns adds each run of consecutive blocks once, whatever the
// order and repeats it is given them in.
func TestAddBlockRuns(t *testing.T) {
	var s recordingSet
	addBlockRuns(&s, []uint64{12, 10, 11, 11, 20, 5, 21, 13, 40})
	want := [][2]uint64{{5, 1}, {10, 4}, {20, 2}, {40, 1}}
	if !slices.Equal(s.adds, want) {
		t.Fatalf("adds %v, want %v", s.adds, want)
	}
	s.adds = nil
	addBlockRuns(&s, nil)
	if len(s.adds) != 0 {
		t.Fatalf("adds %v for no blocks", s.adds)
	}
}
