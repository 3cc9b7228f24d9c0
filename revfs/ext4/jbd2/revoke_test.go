package jbd2

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// revokeLog is a 128 MiB journal (4 KiB blocks, no 64bit) whose log from
// block 1 holds revoke blocks of tid 7, each full of distinct records (1020
// per block), with a commit block of tid 7 at commitAt; copies lists home
// blocks logged by a descriptor right after block 1. Blocks are made on
// demand into one buffer, so the test itself allocates nothing per read.
type revokeLog struct {
	sb       *Superblock
	commitAt uint32
	copies   []uint64
	buf      []byte
}

func newRevokeLog(t testing.TB, commitAt uint32, copies ...uint64) *revokeLog {
	j := newJournal(t, journalOpts{bs: 4096, maxLen: 1 << 15, incompat: FeatureIncompatRevoke})
	return &revokeLog{sb: j.sb, commitAt: commitAt, copies: copies, buf: make([]byte, 4096)}
}

func (l *revokeLog) read(jb uint32) ([]byte, error) {
	b := l.buf
	clear(b)
	be.PutUint32(b, JournalMagic)
	be.PutUint32(b[8:], 7)
	n := uint32(len(l.copies))
	switch {
	case jb == l.commitAt:
		be.PutUint32(b[4:], BlockTypeCommit)
	case jb > l.commitAt:
		clear(b) // past the commit block the log ends
	case jb == 2 && n > 0:
		be.PutUint32(b[4:], BlockTypeDescriptor)
		for i, h := range l.copies {
			r := b[HeaderSize+8*i:]
			be.PutUint32(r, uint32(h))
			fl := TagFlagSameUUID
			if i == len(l.copies)-1 {
				fl |= TagFlagLastTag
			}
			be.PutUint16(r[6:], uint16(fl))
		}
	case jb > 2 && jb <= 2+n:
		clear(b) // a copy
	default:
		be.PutUint32(b[4:], BlockTypeRevoke)
		be.PutUint32(b[HeaderSize:], uint32(len(b)))
		for off := RevokeHeaderSize; off+4 <= len(b); off += 4 {
			// Distinct in the whole log, and naming the logged homes too.
			be.PutUint32(b[off:], jb<<10|uint32(off/4))
		}
	}
	return b, nil
}

// A revoke block holds up to blocksize/4 records; a log full of them used
// to cost 8 bytes of memory per record, twice the log's own size (1.8 GB
// for one scan of a 128 MiB journal). A record only matters when it can
// cancel a copy, so a scan's memory stays within a small multiple of 16
// bytes per journal block whatever the revoke blocks hold.
func TestScanRevokeMemoryBounded(t *testing.T) {
	const maxLen = 1 << 15
	bound := uint64(maxLen * 16)
	for _, tc := range []struct {
		name   string
		copies []uint64
		want   int // records kept
		replay []uint64
	}{
		{"only revoke blocks", nil, 0, nil},
		// One transaction: block 1 revokes a home before its copy, block
		// 100 another after its copy; each cancels a copy (the kernel
		// replays neither) and is kept, once.
		{"copies among the revokes", []uint64{1<<10 | 5, 100<<10 | 7, 9}, 2, []uint64{9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newRevokeLog(t, maxLen-2, tc.copies...)
			var txs []Transaction
			var err error
			n := testenv.BytesAllocated(func() { txs, _, _, err = Scan(l.sb, 1, 7, l.read, maxLen) })
			if err != nil || len(txs) != 1 {
				t.Fatalf("%d txs, err %v", len(txs), err)
			}
			if got := len(txs[0].Revoked); got != tc.want {
				t.Errorf("%d revoke records kept, want %d", got, tc.want)
			}
			plan := ReplayPlan(txs)
			if len(plan) != len(tc.replay) {
				t.Errorf("replay plan %v, want the copies of %v", plan, tc.replay)
			}
			for _, h := range tc.replay {
				if _, ok := plan[h]; !ok {
					t.Errorf("replay plan %v, want the copies of %v", plan, tc.replay)
				}
			}
			revokeBlocks := l.commitAt - 1
			if len(tc.copies) > 0 {
				revokeBlocks -= 1 + uint32(len(tc.copies))
			}
			t.Logf("scan of %d revoke blocks allocated %d KiB (bound %d KiB)", revokeBlocks, n>>10, bound>>10)
			if n > bound {
				t.Fatalf("a scan allocated %d bytes, more than %d (16 per journal block)", n, bound)
			}
		})
	}
}

// revokeRef applies a list of transactions' revoke records the way the
// engine's journal.versions and discard's replayCopies do: in log order, a
// revoke drops the copies of earlier transactions.
func revokeRef(txs []Transaction) map[uint64]LoggedBlock {
	latest := map[uint64]LoggedBlock{}
	for _, tx := range txs {
		for _, r := range tx.Revoked {
			delete(latest, r)
		}
		for _, lb := range tx.Blocks {
			latest[lb.Home] = lb
		}
	}
	return latest
}

// overlayRef applies transactions to held copies the way the engine's
// journal.apply does: a revoke drops a held copy of the same or an earlier
// tid, and every copy becomes held.
func overlayRef(txs []Transaction, held map[uint64]bool) map[uint64]uint32 {
	o := map[uint64]uint32{}
	for h := range held {
		o[h] = 0 // taken from a scan before these
	}
	for _, tx := range txs {
		for _, r := range tx.Revoked {
			if s, ok := o[r]; ok && s <= tx.Sequence {
				delete(o, r)
			}
		}
		for _, lb := range tx.Blocks {
			o[lb.Home] = tx.Sequence
		}
	}
	return o
}

// Scan leaves out only revoke records that cancel nothing: for every run
// of consecutive transactions it returns, the replay (ReplayPlan), the
// engine's reading of the run (versions, replayCopies) and what it does to
// copies held from earlier scans are what every record gives. Random logs
// over a few home blocks, with revoke blocks before, between and after the
// descriptors, and records repeated.
func TestScanRevokeKeepsMeaning(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, fs := range featureSets {
		t.Run(fs.name, func(t *testing.T) {
			for iter := 0; iter < 500; iter++ {
				j := newJournal(t, journalOpts{incompat: fs.incompat | FeatureIncompatRevoke, compat: fs.compat, maxLen: 1 << 12})
				home := func() uint64 { return 1 + rng.Uint64N(8) }
				held := map[uint64]bool{}
				for h := uint64(1); h <= 8; h++ {
					if rng.IntN(4) == 0 {
						held[h] = true
					}
				}
				var all [][]uint64 // every record of each transaction
				ntx := 1 + rng.IntN(8)
				for k := range ntx {
					seq := uint32(50 + k)
					var recs []uint64
					revoke := func() {
						r := make([]uint64, rng.IntN(6))
						for i := range r {
							r[i] = home()
						}
						recs = append(recs, r...)
						j.revoke(seq, r)
					}
					for range rng.IntN(3) {
						switch rng.IntN(3) {
						case 0:
							revoke()
						default:
							hs := make([]uint64, 1+rng.IntN(3))
							ds := make([][]byte, len(hs))
							for i := range hs {
								hs[i] = home()
								ds[i] = j.dataBlock(hs[i], seq)
							}
							j.descriptor(seq, hs, ds, false)
						}
					}
					if rng.IntN(2) == 0 {
						revoke()
					}
					j.commit(seq)
					all = append(all, recs)
				}
				isHeld := func(h uint64) bool { return held[h] }
				got, _, _, err := ScanWithSums(j.sb, j.sb.First(), 50, j.read, nil, isHeld, 1<<12)
				if err != nil || len(got) != ntx {
					t.Fatalf("iteration %d: %d of %d txs, err %v", iter, len(got), ntx, err)
				}
				full := make([]Transaction, len(got))
				for i, tx := range got {
					full[i] = tx
					full[i].Revoked = all[i]
					if len(tx.Revoked) > len(all[i]) {
						t.Fatalf("iteration %d tx %d: %d records kept of %d", iter, i, len(tx.Revoked), len(all[i]))
					}
				}
				for a := range got {
					for b := a + 1; b <= len(got); b++ {
						if w, g := ReplayPlan(full[a:b]), ReplayPlan(got[a:b]); !reflect.DeepEqual(w, g) {
							t.Fatalf("iteration %d txs [%d,%d): replay plan %v, want %v\nkept %v\nall %v", iter, a, b, g, w, got, all)
						}
						if w, g := revokeRef(full[a:b]), revokeRef(got[a:b]); !reflect.DeepEqual(w, g) {
							t.Fatalf("iteration %d txs [%d,%d): latest copies %v, want %v", iter, a, b, g, w)
						}
					}
					if w, g := overlayRef(full[:a+1], held), overlayRef(got[:a+1], held); !reflect.DeepEqual(w, g) {
						t.Fatalf("iteration %d txs [0,%d]: held copies %v, want %v", iter, a, g, w)
					}
				}
			}
		})
	}
}

// A revoke record of a block whose only copy failed its checksum is kept:
// whether it cancels that copy decides whether the kernel's recovery fails
// (a failing copy not revoked fails it, -EFSBADCRC).
func TestRevokeOfSkippedCopyKept(t *testing.T) {
	j := newJournal(t, journalOpts{incompat: FeatureIncompatCsumV3})
	s1 := j.tx(10, 100, 101)
	first, _, _, err := Scan(j.sb, s1, 10, j.read, 100)
	if err != nil || len(first) != 1 || len(first[0].Blocks) != 2 {
		t.Fatalf("plain scan: %+v %v", first, err)
	}
	j.blocks[first[0].Blocks[1].JBlock][100] ^= 1 // the copy of 101 no longer matches its tag
	j.revoke(11, []uint64{101})
	j.commit(11)
	txs, _, _, err := Scan(j.sb, s1, 10, j.read, 100)
	if err != nil || len(txs) != 2 {
		t.Fatalf("scan: %+v %v", txs, err)
	}
	if len(txs[0].Skipped) != 1 || txs[0].Skipped[0].Home != 101 {
		t.Fatalf("tx 10 skipped %+v, want the copy of 101", txs[0].Skipped)
	}
	if !slices.Contains(txs[1].Revoked, 101) {
		t.Fatalf("tx 11 revoked %v, want 101 (it cancels the failing copy)", txs[1].Revoked)
	}
}
