package jbd2

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func FuzzParseSuperblock(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		f.Add(fx.raw[:fx.bs])
	}
	j := newJournal(f, journalOpts{incompat: FeatureIncompatFastCommit | FeatureIncompatCsumV2, numFC: 7, maxLen: 2000})
	f.Add(j.blocks[0])
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := ParseSuperblock(b)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			return
		}
		// A superblock that parses must describe a usable log.
		if sb.First() == 0 || sb.First() >= sb.LogEnd() || sb.LogEnd() > sb.MaxLen() ||
			sb.BlockSize() < 1024 || sb.TagBytes() < 8 || sb.TagBytes() > 16 {
			t.Fatalf("accepted an unusable superblock: %v", sb)
		}
		if start, _ := sb.ScanFrom(); start < sb.First() || start >= sb.LogEnd() {
			t.Fatalf("ScanFrom %d outside the log: %v", start, sb)
		}
	})
}

// fuzzSuperblocks are the superblocks the block and scan fuzzers choose
// from by index: those of the kernel-written fixtures first, then one small
// synthetic journal (1030 blocks of 1 KiB, so scans wrap) per feature set.
// Fuzzing the superblock bytes as well would waste nearly every input on
// its checksum; FuzzParseSuperblock covers those.
func fuzzSuperblocks(f *testing.F) (sbs []*Superblock, fixtures []fixture) {
	fixtures = loadFixtures(f)
	for _, fx := range fixtures {
		sb, err := ParseSuperblock(fx.raw)
		if err != nil {
			f.Fatal(err)
		}
		sbs = append(sbs, sb)
	}
	for _, fs := range featureSets {
		sbs = append(sbs, newJournal(f, journalOpts{incompat: fs.incompat, compat: fs.compat, maxLen: 1030}).sb)
	}
	return sbs, fixtures
}

func pick(sbs []*Superblock, which uint8) *Superblock { return sbs[int(which)%len(sbs)] }

// FuzzParseDescriptor feeds one block to every log block parser, under one
// of the fuzzSuperblocks.
func FuzzParseDescriptor(f *testing.F) {
	sbs, fixtures := fuzzSuperblocks(f)
	for i, fx := range fixtures {
		for off := fx.bs; off+fx.bs <= len(fx.raw); off += fx.bs {
			if _, ok := ParseHeader(fx.raw[off:]); ok {
				f.Add(uint8(i), fx.raw[off:off+fx.bs])
			}
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		sb := pick(sbs, which)
		if tags, err := ParseDescriptor(sb, b); err == nil {
			if len(tags) == 0 || len(tags) > (sb.BlockSize()-HeaderSize)/sb.TagBytes() {
				t.Fatalf("%d tags in a %d-byte block", len(tags), sb.BlockSize())
			}
			for i, tg := range tags {
				if tg.Last() && i != len(tags)-1 {
					t.Fatalf("tags continue after LAST_TAG")
				}
				if !sb.Has64Bit() && tg.Home>>32 != 0 {
					t.Fatalf("64-bit home %d without 64bit", tg.Home)
				}
			}
		}
		if recs, err := ParseRevoke(sb, b); err == nil && len(recs) > sb.BlockSize()/4 {
			t.Fatalf("%d revoke records in a %d-byte block", len(recs), sb.BlockSize())
		}
		if c, err := ParseCommit(sb, b); err == nil && c.Sequence != be.Uint32(b[8:]) {
			t.Fatalf("commit sequence %d", c.Sequence)
		}
	})
}

// FuzzScan scans hostile logs: the fuzzer picks one of the fuzzSuperblocks
// and controls every block the read callback returns (log is laid out
// circularly from journal block shift on, zeroes after it), where the scan
// starts and its budget. Scan must not panic, must respect the budget
// (read no more positions than it, each at most twice: a revoke block is
// read again when its transaction commits), and may only return
// consistent transactions.
func FuzzScan(f *testing.F) {
	sbs, fixtures := fuzzSuperblocks(f)
	for i, fx := range fixtures {
		f.Add(uint8(i), fx.raw, sbs[i].Start(), sbs[i].Sequence(), uint32(0), uint16(200))
	}
	// A csum v3 transaction wrapping from the end of a 1030-block journal.
	v3 := -1
	for i, fs := range featureSets {
		if fs.name == "csum-v3-32" {
			v3 = len(fixtures) + i
		}
	}
	j := newJournal(f, journalOpts{incompat: FeatureIncompatCsumV3, maxLen: 1030})
	j.pos = 1027
	j.tx(1, 5, 6, 7)
	var log []byte
	for _, jb := range []uint32{1027, 1028, 1029, 0, 1, 2, 3} { // block 0 only keeps the circular layout aligned
		b, _ := j.read(jb)
		log = append(log, b...)
	}
	f.Add(uint8(v3), log, uint32(1027), uint32(1), uint32(1027), uint16(50))
	// Revoke blocks before, between and after copies, records repeated
	// (plain32: the first synthetic superblock).
	j = newJournal(f, journalOpts{maxLen: 1030})
	j.tx(1, 5, 6)
	j.revoke(2, []uint64{5, 5, 9, 77})
	j.descriptor(2, []uint64{9, 5}, [][]byte{j.dataBlock(9, 2), j.dataBlock(5, 2)}, false)
	j.revoke(2, []uint64{9, 6, 6})
	j.commit(2)
	j.revoke(3, []uint64{5, 9, 6})
	j.commit(3)
	log = nil
	for jb := uint32(1); jb < j.pos; jb++ {
		b, _ := j.read(jb)
		log = append(log, b...)
	}
	f.Add(uint8(len(fixtures)), log, uint32(1), uint32(1), uint32(1), uint16(50))

	f.Fuzz(func(t *testing.T, which uint8, log []byte, start, seq, shift uint32, maxBlocks uint16) {
		sb := pick(sbs, which)
		bs := sb.BlockSize()
		nlog := uint32(len(log) / bs)
		zero := make([]byte, bs)
		reads := map[uint32]int{}
		read := func(jb uint32) ([]byte, error) {
			reads[jb]++
			if jb >= sb.MaxLen() {
				t.Fatalf("read of block %d past the journal (%d blocks)", jb, sb.MaxLen())
			}
			if i := (jb + sb.MaxLen() - shift%sb.MaxLen()) % sb.MaxLen(); i < nlog {
				return log[int(i)*bs : int(i+1)*bs], nil
			}
			return zero, nil
		}
		txs, next, nextSeq, err := Scan(sb, start, seq, read, int(maxBlocks))
		if len(reads) > int(maxBlocks) {
			t.Fatalf("%d positions read with a budget of %d", len(reads), maxBlocks)
		}
		for jb, n := range reads {
			if n > 2 {
				t.Fatalf("journal block %d read %d times", jb, n)
			}
		}
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLong) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if nextSeq != seq+uint32(len(txs)) {
			t.Fatalf("nextSeq %d after %d txs from %d", nextSeq, len(txs), seq)
		}
		if len(txs) > 0 && (next < sb.First() || next >= sb.LogEnd()) {
			t.Fatalf("next %d outside the log", next)
		}
		logged := map[uint64]bool{}
		for i, tx := range txs {
			if tx.Sequence != seq+uint32(i) || tx.Commit.Sequence != tx.Sequence {
				t.Fatalf("tx %d: sequence %d commit %d", i, tx.Sequence, tx.Commit.Sequence)
			}
			// Without held copies, a revoke record is kept only for a
			// block the scan logged by then, once per transaction.
			for _, lb := range tx.Blocks {
				logged[lb.Home] = true
			}
			kept := map[uint64]bool{}
			for _, r := range tx.Revoked {
				if !logged[r] || kept[r] {
					t.Fatalf("tx %d keeps a revoke of %d (logged %v, twice %v)", i, r, logged[r], kept[r])
				}
				kept[r] = true
			}
			for _, lb := range append(tx.Blocks, tx.Skipped...) {
				if lb.JBlock < sb.First() || lb.JBlock >= sb.LogEnd() {
					t.Fatalf("copy at %d outside the log", lb.JBlock)
				}
			}
		}
		_ = ReplayPlan(txs)

		// Summed copies (some, chosen by shift's bits) scan the same.
		sums := func(jb uint32) (uint32, bool) {
			if shift>>(jb%32)&1 == 0 {
				return 0, false
			}
			b, _ := read(jb)
			return BlockSum(b), true
		}
		txs2, next2, nextSeq2, err2 := ScanWithSums(sb, start, seq, read, sums, nil, int(maxBlocks))
		if !reflect.DeepEqual(txs, txs2) || next != next2 || nextSeq != nextSeq2 || fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Fatalf("with sums: %+v %d %d %v\nwithout: %+v %d %d %v", txs2, next2, nextSeq2, err2, txs, next, nextSeq, err)
		}
	})
}

// The wrapped seed of FuzzScan must really scan across the end of the log,
// or the fuzzer starts from nothing interesting.
func TestFuzzScanWrapSeed(t *testing.T) {
	j := newJournal(t, journalOpts{incompat: FeatureIncompatCsumV3, maxLen: 1030})
	j.pos = 1027
	j.tx(1, 5, 6, 7)
	txs, next, _, err := Scan(j.sb, 1027, 1, j.read, 50)
	if err != nil || len(txs) != 1 || txs[0].End != 2 || next != 3 || txs[0].Blocks[2].JBlock != 1 {
		t.Fatalf("txs %+v next %d err %v", txs, next, err)
	}
}
