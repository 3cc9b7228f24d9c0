package jbd2

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

func homesOf(tx Transaction) []uint64 {
	var h []uint64
	for _, b := range tx.Blocks {
		h = append(h, b.Home)
	}
	return h
}

func TestScanConsecutive(t *testing.T) {
	for _, fs := range featureSets {
		t.Run(fs.name, func(t *testing.T) {
			j := newJournal(t, journalOpts{incompat: fs.incompat, compat: fs.compat})
			s1 := j.tx(10, 100, 101)
			j.revoke(11, []uint64{100})
			j.descriptor(11, []uint64{200}, [][]byte{j.dataBlock(200, 11)}, false)
			j.descriptor(11, []uint64{201, 202}, [][]byte{j.dataBlock(201, 11), j.dataBlock(202, 11)}, false)
			c2 := j.commit(11)
			s3 := j.tx(12, 101)
			end := j.pos
			j.tx(99, 5) // a stale transaction: wrong sequence ends the log

			txs, next, nextSeq, err := Scan(j.sb, s1, 10, j.read, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(txs) != 3 || next != end || nextSeq != 13 {
				t.Fatalf("%d txs, next %d seq %d; want 3, %d, 13", len(txs), next, nextSeq, end)
			}
			if txs[0].Start != s1 || txs[0].End != s1+3 || txs[0].Sequence != 10 || txs[0].Commit.Sec != 1700000010 {
				t.Errorf("tx0 %+v", txs[0])
			}
			if !slices.Equal(homesOf(txs[1]), []uint64{200, 201, 202}) || txs[1].End != c2 ||
				!slices.Equal(txs[1].Revoked, []uint64{100}) || txs[1].Blocks[1].JBlock != txs[1].Start+4 {
				t.Errorf("tx1 %+v", txs[1])
			}
			if txs[2].Start != s3 || txs[2].Blocks[0].Home != 101 {
				t.Errorf("tx2 %+v", txs[2])
			}
			// Each copy read back through JBlock is the block that was logged.
			for _, tx := range txs {
				for _, lb := range tx.Blocks {
					if got, _ := j.read(lb.JBlock); be.Uint64(got[8:]) != lb.Home {
						t.Errorf("copy of %d at %d holds %d", lb.Home, lb.JBlock, be.Uint64(got[8:]))
					}
				}
			}
			plan := ReplayPlan(txs)
			if _, ok := plan[100]; ok {
				t.Error("revoked block 100 in replay plan")
			}
			if lb := plan[101]; lb.JBlock != txs[2].Blocks[0].JBlock {
				t.Errorf("block 101 replays from %d, want the later copy %d", lb.JBlock, txs[2].Blocks[0].JBlock)
			}
			if len(plan) != 4 {
				t.Errorf("plan %v", plan)
			}
		})
	}
}

func TestScanWrapAround(t *testing.T) {
	j := newJournal(t, journalOpts{incompat: FeatureIncompatCsumV3 | FeatureIncompat64Bit, maxLen: 1100, first: 3,
		numFC: 50})
	// numFC counts only with the fast-commit feature, so LogEnd is 1100:
	// tx 40 takes 1097 (descriptor), 1098-1099 (copies) and wraps its
	// commit to block 3 (First); tx 41 follows at 4.
	j.pos = 1097
	s := j.tx(40, 1, 2)
	s2 := j.tx(41, 3, 4, 5)
	if s != 1097 || s2 != 4 {
		t.Fatalf("layout: %d %d", s, s2)
	}
	txs, next, nextSeq, err := Scan(j.sb, s, 40, j.read, 100)
	if err != nil || len(txs) != 2 || nextSeq != 42 || next != j.pos {
		t.Fatalf("txs %d next %d seq %d err %v", len(txs), next, nextSeq, err)
	}
	if txs[0].End != 3 || txs[0].Blocks[1].JBlock != 1099 || txs[1].Start != 4 {
		t.Errorf("tx %+v / %+v", txs[0], txs[1])
	}

	// With fast commit the circular log ends numFC blocks earlier.
	fc := newJournal(t, journalOpts{incompat: FeatureIncompatFastCommit, maxLen: 1100, numFC: 50})
	fc.pos = 1048
	s = fc.tx(7, 9)
	if fc.pos != 2 {
		t.Fatalf("fast-commit layout: pos %d", fc.pos)
	}
	txs, next, _, err = Scan(fc.sb, s, 7, fc.read, 100)
	if err != nil || len(txs) != 1 || txs[0].End != 1 || next != 2 {
		t.Fatalf("fast commit wrap: %+v next %d err %v", txs, next, err)
	}
}

func TestScanStops(t *testing.T) {
	feats := FeatureIncompatCsumV3 | FeatureIncompat64Bit
	for _, c := range []struct {
		name string
		// build lays out tx 1 (complete) then damages or truncates tx 2.
		build func(j *journal)
		// wantSkipped is set when tx 2 survives with a skipped copy.
		wantTx2Skipped bool
	}{
		{"missing-commit", func(j *journal) {
			j.descriptor(2, []uint64{8}, [][]byte{j.dataBlock(8, 2)}, false)
		}, false},
		{"commit-bad-checksum", func(j *journal) {
			j.descriptor(2, []uint64{8}, [][]byte{j.dataBlock(8, 2)}, false)
			b := j.commitBlock(2, 5)
			b[100] = 1
			j.put(b)
		}, false},
		{"descriptor-bad-checksum", func(j *journal) {
			j.descriptor(2, []uint64{8}, [][]byte{j.dataBlock(8, 2)}, false)
			j.blocks[j.pos-2][30] ^= 1
			j.commit(2)
		}, false},
		{"revoke-bad-checksum", func(j *journal) {
			j.revoke(2, []uint64{5})
			j.blocks[j.pos-1][HeaderSize+3] ^= 4 // r_count changed, tail now stale
			j.commit(2)
		}, false},
		{"commit-of-other-tid", func(j *journal) {
			j.descriptor(2, []uint64{8}, [][]byte{j.dataBlock(8, 2)}, false)
			j.commit(3)
		}, false},
		{"superblock-type", func(j *journal) {
			j.put(j.header(BlockTypeSuperblockV2, 2))
		}, false},
		{"copy-bad-checksum", func(j *journal) {
			j.descriptor(2, []uint64{8, 9}, [][]byte{j.dataBlock(8, 2), j.dataBlock(9, 2)}, false)
			j.blocks[j.pos-1][500] ^= 1 // damage the copy of 9
			j.commit(2)
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := newJournal(t, journalOpts{incompat: feats})
			j.tx(1, 7)
			tx2 := j.pos
			c.build(j)
			txs, next, nextSeq, err := Scan(j.sb, j.sb.First(), 1, j.read, 100)
			if err != nil {
				t.Fatal(err)
			}
			if c.wantTx2Skipped {
				if len(txs) != 2 || !slices.Equal(homesOf(txs[1]), []uint64{8}) || len(txs[1].Skipped) != 1 || txs[1].Skipped[0].Home != 9 {
					t.Fatalf("txs %+v", txs)
				}
				return
			}
			if len(txs) != 1 || next != tx2 || nextSeq != 2 {
				t.Fatalf("%d txs, next %d seq %d; want 1, %d, 2", len(txs), next, nextSeq, tx2)
			}
		})
	}
}

func TestScanChecksumV1(t *testing.T) {
	j := newJournal(t, journalOpts{compat: FeatureCompatChecksum})
	j.tx(1, 7, 8)
	tx2 := j.tx(2, 9)
	j.tx(3, 10)
	j.blocks[tx2+1][10] ^= 1 // copy of 9 damaged: tx 2's crc32_be no longer matches
	txs, next, _, err := Scan(j.sb, 1, 1, j.read, 100)
	if err != nil || len(txs) != 1 || next != tx2 {
		t.Fatalf("txs %d next %d err %v", len(txs), next, err)
	}
	// A commit that says it carries no checksum is accepted, as the kernel does.
	j.blocks[tx2+1][10] ^= 1
	cb := j.blocks[tx2+2]
	cb[0xC], cb[0xD] = 0, 0
	be.PutUint32(cb[commitChecksumOff:], 0)
	if txs, _, _, err = Scan(j.sb, 1, 1, j.read, 100); err != nil || len(txs) != 3 {
		t.Fatalf("unused v1 checksum: %d txs, err %v", len(txs), err)
	}
}

func TestScanEscaped(t *testing.T) {
	j := newJournal(t, journalOpts{incompat: FeatureIncompatCsumV3})
	data := j.dataBlock(55, 1)
	be.PutUint32(data, JournalMagic)
	j.descriptor(1, []uint64{55}, [][]byte{data}, false)
	j.commit(1)
	txs, _, _, err := Scan(j.sb, 1, 1, j.read, 10)
	if err != nil || len(txs) != 1 || !txs[0].Blocks[0].Escaped {
		t.Fatalf("txs %+v err %v", txs, err)
	}
	stored, _ := j.read(txs[0].Blocks[0].JBlock)
	cp := append([]byte(nil), stored...)
	if be.Uint32(cp) != 0 {
		t.Fatalf("escaped copy starts % x", cp[:4])
	}
	Unescape(cp)
	if !slices.Equal(cp, data) {
		t.Error("unescaped copy differs from the original block")
	}
}

func TestScanBudgetAndResume(t *testing.T) {
	j := newJournal(t, journalOpts{incompat: FeatureIncompat64Bit})
	for seq := uint32(1); seq <= 5; seq++ {
		j.tx(seq, uint64(seq), uint64(seq)+100) // 4 blocks each
	}
	txs, next, nextSeq, err := Scan(j.sb, 1, 1, j.read, 10)
	if !errors.Is(err, ErrTooLong) || len(txs) != 2 || next != 9 || nextSeq != 3 {
		t.Fatalf("budget: %d txs next %d seq %d err %v", len(txs), next, nextSeq, err)
	}
	more, next, nextSeq, err := Scan(j.sb, next, nextSeq, j.read, 100)
	if err != nil || len(more) != 3 || more[0].Sequence != 3 || next != 21 || nextSeq != 6 {
		t.Fatalf("resume: %d txs next %d seq %d err %v", len(more), next, nextSeq, err)
	}
}

// A log that never ends (descriptors of one tid all the way round) must
// stop after one lap, whatever the budget.
func TestScanEndlessLog(t *testing.T) {
	j := newJournal(t, journalOpts{})
	for i := 0; i < (1024-1)/2; i++ {
		j.descriptor(1, []uint64{uint64(i)}, [][]byte{j.dataBlock(uint64(i), 1)}, false)
	}
	j.put(j.header(BlockTypeRevoke, 1)) // fill the odd last block; r_count 0 is valid
	if j.pos != 1 {
		t.Fatalf("log not full: pos %d", j.pos)
	}
	txs, next, _, err := Scan(j.sb, 1, 1, j.read, 1<<20)
	if !errors.Is(err, ErrCorrupt) || len(txs) != 0 || next != 1 {
		t.Fatalf("endless log: %d txs next %d err %v", len(txs), next, err)
	}
}

func TestScanBadArgs(t *testing.T) {
	j := newJournal(t, journalOpts{})
	for _, start := range []uint32{0, 1024, 5000} {
		if _, _, _, err := Scan(j.sb, start, 1, j.read, 10); !errors.Is(err, ErrCorrupt) {
			t.Errorf("start %d: err %v", start, err)
		}
	}
	short := func(uint32) ([]byte, error) { return make([]byte, 100), nil }
	if _, _, _, err := Scan(j.sb, 1, 1, short, 10); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short read: err %v", err)
	}
	boom := errors.New("boom")
	failing := func(uint32) ([]byte, error) { return nil, boom }
	if _, _, _, err := Scan(j.sb, 1, 1, failing, 10); !errors.Is(err, boom) {
		t.Errorf("read error: err %v", err)
	}
	// An empty log is not an error.
	txs, next, seq, err := Scan(j.sb, 1, 1, j.read, 10)
	if err != nil || len(txs) != 0 || next != 1 || seq != 1 {
		t.Errorf("empty log: %d %d %d %v", len(txs), next, seq, err)
	}
}

// A copy's checksum from its BlockSum equals the one computed over its
// bytes, for every journal block size and any seed and tid.
func TestDataChecksumFromSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for bs := 1024; bs <= 65536; bs *= 2 {
		b := make([]byte, bs)
		for range 20 {
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			sb := &Superblock{seed: rng.Uint32()}
			sb.Disk.BlockSize = uint32(bs)
			seq := rng.Uint32()
			if got, want := sb.dataChecksumBase(seq)^BlockSum(b), sb.DataChecksum(seq, b); got != want {
				t.Fatalf("bs %d: from sum %#x, over the bytes %#x", bs, got, want)
			}
		}
	}
}

// ScanWithSums checks summed copies against their sums without reading them:
// a wrong sum skips the copy, and right sums give Scan's result.
func TestScanWithSums(t *testing.T) {
	j := newJournal(t, journalOpts{incompat: FeatureIncompatCsumV3})
	s1 := j.tx(10, 100, 101)
	want, _, _, err := Scan(j.sb, s1, 10, j.read, 100)
	if err != nil || len(want) != 1 || len(want[0].Blocks) != 2 {
		t.Fatalf("plain scan: %+v %v", want, err)
	}
	copies := map[uint32]bool{}
	for _, lb := range want[0].Blocks {
		copies[lb.JBlock] = true
	}
	read := func(jb uint32) ([]byte, error) {
		if copies[jb] {
			t.Errorf("copy at %d read although summed", jb)
		}
		return j.read(jb)
	}
	right := func(jb uint32) (uint32, bool) {
		b, _ := j.read(jb)
		return BlockSum(b), true
	}
	got, _, _, err := ScanWithSums(j.sb, s1, 10, read, right, nil, 100)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("with sums: %+v %v, want %+v", got, err, want)
	}
	wrong := func(jb uint32) (uint32, bool) {
		s, ok := right(jb)
		if jb == want[0].Blocks[1].JBlock {
			s ^= 1
		}
		return s, ok
	}
	got, _, _, err = ScanWithSums(j.sb, s1, 10, read, wrong, nil, 100)
	if err != nil || len(got) != 1 || len(got[0].Blocks) != 1 || len(got[0].Skipped) != 1 || got[0].Skipped[0] != want[0].Blocks[1] {
		t.Fatalf("a wrong sum: %+v %v", got, err)
	}
}
