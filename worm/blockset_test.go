package worm

import (
	"math/rand"
	"path/filepath"
	"testing"
)

func TestWrittenSetPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "written")
	const nblocks = 1 << 28 // a 1 TiB filesystem of 4 KiB blocks
	s, err := OpenWrittenSet(path, nblocks)
	if err != nil {
		t.Fatal(err)
	}
	oracle := map[uint64]bool{}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		first := uint64(rng.Int63n(nblocks))
		if rng.Intn(4) == 0 {
			first = uint64(rng.Intn(300)) // dense region too
		}
		n := uint64(rng.Intn(200) + 1)
		if first+n > nblocks {
			n = nblocks - first
		}
		add := rng.Intn(3) != 0
		for b := first; b < first+n; b++ {
			oracle[b] = add
		}
		if add {
			s.Add(first, n)
		} else {
			s.Remove(first, n)
		}
	}
	check := func(s *WrittenSet) {
		t.Helper()
		var want uint64
		for b, in := range oracle {
			if in {
				want++
			}
			if s.Contains(b, 1) != in {
				t.Fatalf("block %d: Contains=%v want %v", b, !in, in)
			}
		}
		if got := s.Count(); got != want {
			t.Fatalf("Count=%d want %d", got, want)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenWrittenSet(path, nblocks)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2)
}

func TestWrittenSetRanges(t *testing.T) {
	s, err := OpenWrittenSet(filepath.Join(t.TempDir(), "w"), 100000)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Add(60, 70000)
	if !s.Contains(60, 70000) || s.Contains(59, 2) || s.Contains(70059, 2) {
		t.Fatal("range membership wrong")
	}
	if s.Contains(99999, 5) || s.Contains(1<<40, 1) {
		t.Fatal("out of range blocks must not count as written")
	}
	if !s.Contains(5, 0) {
		t.Fatal("empty range is trivially contained")
	}
	s.Remove(100, 1)
	if s.Contains(60, 70000) || !s.Contains(101, 1000) {
		t.Fatal("remove wrong")
	}
}

// Add and Remove over random ranges, across chunk boundaries and past the
// end, agree with a plain per-block model.
func TestWrittenSetAgreesWithModel(t *testing.T) {
	const limit = 3*chunkBlocks + 1000
	s, err := OpenWrittenSet(filepath.Join(t.TempDir(), "w"), limit)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	model := make([]bool, limit)
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		first := uint64(rng.Intn(limit + 100))
		n := uint64(rng.Intn(2 * chunkBlocks))
		if rng.Intn(8) == 0 {
			n = uint64(rng.Intn(70)) // within a word or two
		}
		add := rng.Intn(2) == 0
		if add {
			s.Add(first, n)
		} else {
			s.Remove(first, n)
		}
		for b := first; b < first+n && b < limit; b++ {
			model[b] = add
		}
		probe := uint64(rng.Intn(limit))
		if s.Contains(probe, 1) != model[probe] {
			t.Fatalf("step %d: block %d: set says %v, model %v", i, probe, s.Contains(probe, 1), model[probe])
		}
	}
	var want uint64
	for b := range model {
		if model[b] != s.Contains(uint64(b), 1) {
			t.Fatalf("block %d: set says %v, model %v", b, !model[b], model[b])
		}
		if model[b] {
			want++
		}
	}
	if got := s.Count(); got != want {
		t.Fatalf("Count %d, model %d", got, want)
	}
}
