package seal

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCommitPowerLoss checks the commit protocol (Store.commit) against
// power loss: for a sequence of commits that start zero, one or several
// ratchet blocks, it captures the files as they are after the previous
// acknowledgement (P), after round 1 (A) and after round 2 (B), and builds
// every store a power loss in round 1 or round 2 could leave (each file
// old or new independently; in round 2 the keystream header and each burnt
// key independently too). Each must open, keep every acknowledged byte,
// hold no live key of an acknowledged entry, and verify after more appends.
func TestCommitPowerLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("power-loss combinations skipped with -short")
	}
	for _, nr := range []int{1, 4} {
		t.Run(fmt.Sprintf("nratchet%d", nr), func(t *testing.T) { testCommitPowerLoss(t, nr) })
	}
}

type snapshot map[string][]byte // path relative to the device dir → bytes

func takeSnapshot(t *testing.T, dir string) snapshot {
	t.Helper()
	sn := snapshot{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		sn[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

func (sn snapshot) clone() snapshot {
	c := snapshot{}
	for k, v := range sn {
		c[k] = v
	}
	return c
}

func (sn snapshot) write(t *testing.T, dir string) {
	t.Helper()
	for rel, b := range sn {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o750)
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

func testCommitPowerLoss(t *testing.T, nr int) {
	ts := newTestStore(t, 1<<14, nr)
	devDir := filepath.Dir(ts.store)
	rel := func(p string) string { r, _ := filepath.Rel(devDir, p); return r }
	keyRel, stateRel := rel(ts.dev), rel(ts.dev+StateSuffix)
	aud, err := os.ReadFile(ts.aud)
	if err != nil {
		t.Fatal(err)
	}
	s := ts.open(t, Options{})
	defer func() { s.Close() }()
	var snapA, snapB snapshot
	var burned bool
	s.hook = func(st commitStage, burn bool) {
		switch st {
		case stageRound1:
			snapA, burned = takeSnapshot(t, devDir), burn
		case stageRound2:
			snapB = takeSnapshot(t, devDir)
		}
	}
	want := map[string][]byte{}
	acked := map[uint64]int64{}
	// Batch sizes chosen so commits start at and inside ratchet blocks and
	// start no block, one block or several.
	batches := []int{2, 1, 3, 6, 1, 2, 9}
	line := 0
	combos := 0
	for bi, k := range batches {
		snapP := takeSnapshot(t, devDir)
		var ops []AppendOp
		wm := map[uint64]int64{}
		for i := 0; i < k; i++ {
			f := twoFiles[(line+i)%2]
			if _, ok := wm[f.ID]; !ok {
				wm[f.ID] = s.Watermark(f.ID)
			}
			b := logLine(f.Path, line+i)
			ops = append(ops, AppendOp{File: f, Off: wm[f.ID], Data: b})
			wm[f.ID] += int64(len(b))
			want[f.Path] = append(want[f.Path], b...)
		}
		line += k
		snapA, snapB = nil, nil
		if err := s.AppendBatch(ops); err != nil {
			t.Fatal(err)
		}
		if snapA == nil || snapB == nil {
			t.Fatalf("batch %d: commit stages not seen", bi)
		}
		check := func(name string, sn snapshot, canFinish bool) {
			t.Helper()
			combos++
			d := filepath.Join(t.TempDir(), "device")
			sn.write(t, d)
			store, dev := filepath.Join(d, rel(ts.store)), filepath.Join(d, keyRel)
			// Verified as the crash left it, the store may hold an
			// unacknowledged tail, but nothing the crash cannot explain:
			// no forged ratchet state, no acknowledged entry cut.
			Verify(store, VerifyOptions{AuditorKey: ts.aud, DeviceKey: dev, OnProblem: func(p Problem) {
				if strings.Contains(p.Msg, "ratchet state") || strings.Contains(p.Msg, "tail deleted") || strings.Contains(p.Msg, "keystream was cut") {
					t.Errorf("batch %d, %s: before recovery: %v", bi, name, p)
				}
			}})
			s2, err := Open(store, dev, Options{})
			if err != nil {
				t.Fatalf("batch %d, %s: open: %v", bi, name, err)
			}
			committed := s2.durable
			for _, f := range twoFiles {
				w := s2.Watermark(f.ID)
				if w < acked[f.ID] || w > int64(len(want[f.Path])) || (!canFinish && w > acked[f.ID]) {
					t.Fatalf("batch %d, %s: %s watermark %d, acknowledged %d", bi, name, f.Path, w, acked[f.ID])
				}
				// A real log whose map record was lost with the crash is
				// not the store's yet (its first append recreates it); one
				// whose record survived, cut with its entry, is removed.
				got, rerr := os.ReadFile(filepath.Join(store, f.Path))
				if s2.files[f.ID] == nil {
					if rerr == nil && hasMapRecord(sn[rel(filepath.Join(ts.store, RecordsName))], f.ID) {
						t.Fatalf("batch %d, %s: %s left behind though its map record was on disk", bi, name, f.Path)
					}
				} else if !bytes.Equal(got, want[f.Path][:w]) {
					t.Fatalf("batch %d, %s: %s is not the %d-byte prefix", bi, name, f.Path, w)
				}
			}
			// No live key for a sealed entry may remain in the keystream.
			kb, _ := os.ReadFile(dev)
			for off := int64(KeyHeaderSize); off < s2.keysFor(committed); off += KeySize {
				if bytes.Equal(kb[off:off+KeySize], aud[off:off+KeySize]) {
					t.Fatalf("batch %d, %s: key at %d still live with %d entries sealed", bi, name, off, committed)
				}
			}
			for _, f := range twoFiles {
				if err := s2.Append(f, s2.Watermark(f.ID), []byte("after the crash\n")); err != nil {
					t.Fatalf("batch %d, %s: append after recovery: %v", bi, name, err)
				}
			}
			if err := s2.Close(); err != nil {
				t.Fatal(err)
			}
			sum, err := Verify(store, VerifyOptions{AuditorKey: ts.aud, DeviceKey: dev})
			if err != nil || !sum.OK() {
				var ps []Problem
				Verify(store, VerifyOptions{AuditorKey: ts.aud, DeviceKey: dev, OnProblem: func(p Problem) { ps = append(ps, p) }})
				t.Fatalf("batch %d, %s: recovered store does not verify: %v %v", bi, name, sum, ps)
			}
		}
		// Power loss in round 1: each file written in round 1 old or new.
		var round1 []string
		for p := range snapA {
			if !bytes.Equal(snapA[p], snapP[p]) {
				round1 = append(round1, p)
			}
		}
		if !bytes.Equal(snapA[keyRel], snapP[keyRel]) {
			t.Fatalf("batch %d: round 1 changed the keystream", bi)
		}
		for mask := 0; mask < 1<<len(round1); mask++ {
			sn := snapP.clone()
			for i, p := range round1 {
				if mask&(1<<i) != 0 {
					sn[p] = snapA[p]
				}
			}
			check(fmt.Sprintf("round 1 mask %b of %v", mask, round1), sn, false)
		}
		// Power loss in round 2: round 1 durable; the state, the keystream
		// header and each burnt key old or new.
		var parts []func(sn snapshot)
		parts = append(parts, func(sn snapshot) { sn[stateRel] = snapB[stateRel] })
		if burned {
			parts = append(parts, func(sn snapshot) { sn[keyRel] = splice(sn[keyRel], snapB[keyRel], 0, KeyHeaderSize) })
			from := int64(binary.LittleEndian.Uint64(snapA[keyRel][8:]))
			to := int64(binary.LittleEndian.Uint64(snapB[keyRel][8:]))
			// The first keys one by one, the rest together (2^parts states).
			for off := from; off < to; off += KeySize {
				hi := off + KeySize
				if off >= from+3*KeySize {
					hi = to
				}
				parts = append(parts, func(sn snapshot) { sn[keyRel] = splice(sn[keyRel], snapB[keyRel], off, hi) })
				if hi == to {
					break
				}
			}
		} else if !bytes.Equal(snapA[keyRel], snapB[keyRel]) {
			t.Fatalf("batch %d: keystream changed by a commit that burns nothing", bi)
		}
		for mask := 0; mask < 1<<len(parts); mask++ {
			sn := snapA.clone()
			sn[keyRel] = bytes.Clone(sn[keyRel])
			for i, f := range parts {
				if mask&(1<<i) != 0 {
					f(sn)
				}
			}
			check(fmt.Sprintf("round 2 mask %b of %d parts", mask, len(parts)), sn, true)
		}
		for f, w := range wm {
			acked[f] = w
		}
	}
	t.Logf("nratchet %d: %d power-loss states recovered and verified", nr, combos)
}

func hasMapRecord(b []byte, id uint64) bool {
	recs, _, _ := ParseRecords(b)
	for _, r := range recs {
		if r.Type == RecordMap && r.ID == id {
			return true
		}
	}
	return false
}

// splice returns dst with bytes [lo, hi) taken from src.
func splice(dst, src []byte, lo, hi int64) []byte {
	out := bytes.Clone(dst)
	copy(out[lo:hi], src[lo:hi])
	return out
}

// TestOpenVersion1State opens a store whose ratchet state is in the
// version 1 layout (96 bytes, written before commit intents existed).
func TestOpenVersion1State(t *testing.T) {
	ts := newTestStore(t, 4096, 4)
	s := ts.open(t, Options{})
	want := fill(t, s, twoFiles, 3)
	st := RatchetState{KeyMagic: s.magic, NRatchet: 4, Committed: s.durable, NextKey: s.ackKey}
	s.closeFiles() // a crash-free stop in the middle of a block
	b := marshalStateV1(&st)
	if err := os.WriteFile(ts.dev+StateSuffix, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ParseRatchetState(b)
	if err != nil || got.Version != 1 || got.Committed != st.Committed || got.Target != st.Committed {
		t.Fatalf("version 1 state: %+v %v", got, err)
	}
	s2 := ts.open(t, Options{})
	if s2.Recovery() != nil {
		t.Fatalf("clean version 1 state needed repair: %+v", s2.Recovery())
	}
	more := fill(t, s2, twoFiles, 2)
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	for p, b := range more {
		want[p] = append(want[p], b...)
	}
	if sum, ps := ts.verify(t, VerifyOptions{}); !sum.OK() {
		t.Fatal(sum, ps)
	}
	nb, _ := os.ReadFile(ts.dev + StateSuffix)
	if st2, err := ParseRatchetState(nb); err != nil || st2.Version != 2 {
		t.Fatalf("state not rewritten as version 2: %+v %v", st2, err)
	}
}

// marshalStateV1 writes st in the version 1 layout (96 bytes).
func marshalStateV1(st *RatchetState) []byte {
	b := make([]byte, 0, stateSizeV1)
	b = append(b, stateMagicV1...)
	b = binary.LittleEndian.AppendUint64(b, st.KeyMagic)
	b = binary.LittleEndian.AppendUint64(b, uint64(st.NRatchet))
	b = binary.LittleEndian.AppendUint64(b, uint64(st.Committed))
	b = append(b, st.NextKey[:]...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// TestAppendBatchParallel seals batches large enough for AppendBatch to
// compute MACs side by side (on the vector unit, where there is one) or on
// several goroutines, one of them failing half way: the ops before the
// failure are sealed and durable, and everything verifies.
func TestAppendBatchParallel(t *testing.T) { bothMACPaths(t, testAppendBatchParallel) }

// bothMACPaths runs test with large batches' MACs computed side by side on
// the 16-lane kernel (skipped where the CPU has none) and on goroutines.
func bothMACPaths(t *testing.T, test func(*testing.T)) {
	for _, vec := range []bool{true, false} {
		t.Run(fmt.Sprintf("vector=%v", vec), func(t *testing.T) {
			if vec && !vectorMAC {
				t.Skip("no 16-lane SHA-256 kernel on this CPU")
			}
			defer func(old bool) { vectorMAC = old }(vectorMAC)
			vectorMAC = vec
			test(t)
		})
	}
}

func testAppendBatchParallel(t *testing.T) {
	ts := newTestStore(t, 1<<16, 4)
	s := ts.open(t, Options{})
	files := []FileRef{{ID: 31, Path: "p/a.log"}, {ID: 32, Path: "p/b.log"}, {ID: 33, Path: "c.log"}}
	want := map[string][]byte{}
	chunk := func(f FileRef, i int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("%s chunk %d\n", f.Path, i)), 4000)
	}
	for round := 0; round < 3; round++ {
		var ops []AppendOp
		wm := map[uint64]int64{}
		for i := 0; i < 9; i++ {
			f := files[i%3]
			if _, ok := wm[f.ID]; !ok {
				wm[f.ID] = s.Watermark(f.ID)
			}
			b := chunk(f, round*9+i)
			ops = append(ops, AppendOp{File: f, Off: wm[f.ID], Data: b})
			wm[f.ID] += int64(len(b))
		}
		if round == 1 {
			ops[5].Off++ // not the watermark: ops 5… fail, 0…4 are sealed
		}
		err := s.AppendBatch(ops)
		if round == 1 {
			if !errors.Is(err, ErrOffset) {
				t.Fatalf("batch with a bad offset: %v", err)
			}
			ops = ops[:5]
		} else if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			want[op.File.Path] = append(want[op.File.Path], op.Data...)
		}
		for _, f := range files {
			if s.Watermark(f.ID) != int64(len(want[f.Path])) {
				t.Fatalf("round %d: %s watermark %d, want %d", round, f.Path, s.Watermark(f.ID), len(want[f.Path]))
			}
		}
	}
	ts.closeVerified(t, s)
	for _, f := range files {
		got, _ := os.ReadFile(filepath.Join(ts.store, f.Path))
		if !bytes.Equal(got, want[f.Path]) {
			t.Fatalf("%s differs", f.Path)
		}
	}
}

// TestAppendBatchWriteFails makes the data write of one op of a large batch
// fail (on the 16-lane path its entries, and the later ops', are then
// already reserved: the data is written beside the batch's MACs): the ops
// before it are sealed and durable when AppendBatch returns, that op and the
// later ones leave no trace (no entry, side record or time stamp; a real log
// the batch created is removed), and the store goes on sealing with the same
// keys and verifies.
func TestAppendBatchWriteFails(t *testing.T) { bothMACPaths(t, testAppendBatchWriteFails) }

func testAppendBatchWriteFails(t *testing.T) {
	ts := newTestStore(t, 1<<16, 4)
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	now := t0
	s := ts.open(t, Options{Now: func() time.Time { return now }, StampEvery: time.Minute})

	errInjected := errors.New("injected write failure")
	failPath := ""         // writes to this file fail…
	failAfter := 0         // …after this many
	firstNext := int64(-1) // the entries reserved when the batch's first data write starts
	recordsPath := filepath.Join(ts.store, RecordsName)
	real := storeWriteAt
	defer func() { storeWriteAt = real }()
	storeWriteAt = func(f *os.File, b []byte, off int64) (int, error) {
		if firstNext < 0 && f.Name() != recordsPath {
			firstNext = s.next // the batch's goroutine, which holds mu
		}
		if failPath != "" && filepath.ToSlash(f.Name()) == filepath.ToSlash(failPath) {
			if failAfter == 0 {
				return 0, errInjected
			}
			failAfter--
		}
		return real(f, b, off)
	}

	a, b, c := FileRef{ID: 51, Path: "p/a.log"}, FileRef{ID: 52, Path: "p/b.log"}, FileRef{ID: 53, Path: "c.log"}
	d := FileRef{ID: 54, Path: "q/d.log"} // first appended in round 1, sealed in round 3
	e := FileRef{ID: 55, Path: "r/e.log"} // created by an op after a failure, never sealed
	g := FileRef{ID: 56, Path: "g.log"}   // its first append's second side record fails
	all := []FileRef{a, b, c, d, e, g}
	want := map[string][]byte{}
	n := 0
	rounds := []struct {
		files     []FileRef
		fail      string // the path whose writes fail
		failAfter int    // after this many
		failOp    int    // the first op that then fails
		same      bool   // at the previous round's time (two minutes later otherwise)
	}{
		{files: []FileRef{a, b, c}},
		{files: []FileRef{a, b, c, d}, fail: d.Path, failOp: 3},      // a real log the batch creates
		{files: []FileRef{a, b, c, d}, fail: b.Path, failOp: 1},      // an existing one; d created again
		{files: []FileRef{c, a, d, b}, fail: b.Path, failOp: 3},      // a later op; d is sealed
		{files: []FileRef{a, b, e}, fail: b.Path, failOp: 1},         // e is created after the failure
		{files: []FileRef{b, a, c}, fail: b.Path, failOp: 0},         // the first op, which stamps the time
		{files: []FileRef{a, b, c, d}, same: true},                   // so this one must stamp it
		{files: []FileRef{g, a, b}, fail: RecordsName, failAfter: 1}, // g's map record is written, its time record fails
		{files: []FileRef{a, b, c, d}, same: true},                   // the time record again
	}
	for r, round := range rounds {
		if r > 0 && !round.same {
			now = now.Add(2 * time.Minute)
		}
		var ops []AppendOp
		wm := map[uint64]int64{}
		for i := 0; i < 3*len(round.files); i++ {
			f := round.files[i%len(round.files)]
			if _, ok := wm[f.ID]; !ok {
				wm[f.ID] = s.Watermark(f.ID)
			}
			n++
			data := bytes.Repeat([]byte(fmt.Sprintf("%s append %d\n", f.Path, n)), 3000)
			ops = append(ops, AppendOp{File: f, Off: wm[f.ID], Data: data})
			wm[f.ID] += int64(len(data))
		}
		failPath, failAfter = "", round.failAfter
		if round.fail != "" {
			failPath = filepath.Join(ts.store, filepath.FromSlash(round.fail))
		}
		before, recsBefore := s.next, countRecords(t, ts)
		firstNext = -1
		err := s.AppendBatch(ops)
		// On the 16-lane path with a second core every op's entry is
		// reserved before the first data write; otherwise only the
		// anchors of the first op's side records (map, time) are.
		reserved := firstNext - before
		deferred := reserved >= int64(len(ops))
		// (A failure of the first op's side records stops the batch
		// before any data is written.)
		noWrite := firstNext < 0 && round.fail == RecordsName && round.failOp == 0
		if wantDeferred := vectorMAC && runtime.GOMAXPROCS(0) > 1; !noWrite && (deferred != wantDeferred || !deferred && reserved > 2) {
			t.Fatalf("round %d: %d entries reserved at the first write (%d before, %d ops): want the data written beside the MACs: %v", r, firstNext-before, before, len(ops), wantDeferred)
		}
		if round.fail == "" {
			if err != nil {
				t.Fatalf("round %d: %v", r, err)
			}
		} else {
			wantMsg := fmt.Sprintf("batch op %d (%s)", round.failOp, ops[round.failOp].File.Path)
			if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), wantMsg) {
				t.Fatalf("round %d: got %v, want the injected failure of %s", r, err, wantMsg)
			}
			ops = ops[:round.failOp]
		}
		s.mu.Lock()
		durableN, next := s.durable, s.next
		s.mu.Unlock()
		// One entry per op kept, and one anchor per side record kept (those
		// of the undone ops are cut with them).
		wantN := before + int64(len(ops)) + countRecords(t, ts) - recsBefore
		if durableN != next || next != wantN {
			t.Fatalf("round %d: %d entries durable, %d sealed, want %d and %d", r, durableN, next, wantN, wantN)
		}
		for _, op := range ops {
			want[op.File.Path] = append(want[op.File.Path], op.Data...)
		}
		for _, f := range all {
			if got := s.Watermark(f.ID); got != int64(len(want[f.Path])) {
				t.Fatalf("round %d: %s watermark %d, want %d", r, f.Path, got, len(want[f.Path]))
			}
		}
	}
	failPath = ""
	ts.closeVerified(t, s)
	for _, f := range all {
		got, err := os.ReadFile(filepath.Join(ts.store, f.Path))
		if f == e || f == g {
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s, created by an undone append: %v, want it removed", f.Path, err)
			}
			continue
		}
		if !bytes.Equal(got, want[f.Path]) {
			t.Fatalf("%s: %d bytes, want %d", f.Path, len(got), len(want[f.Path]))
		}
	}
	// The side records name each sealed real log once and date the last
	// round: those of the undone appends never reached the file.
	maps, lastTime := map[uint64]int{}, 0
	for _, rec := range readRecords(t, ts) {
		switch {
		case rec.Type == RecordMap:
			maps[rec.ID]++
		case rec.Type == RecordTime && rec.Time.Equal(now):
			lastTime++
		}
	}
	for _, f := range all {
		if w := min(1, len(want[f.Path])); maps[f.ID] != w {
			t.Errorf("%s: %d map records, want %d", f.Path, maps[f.ID], w)
		}
	}
	if lastTime != 1 {
		t.Errorf("%d time records of the last round's time, want 1", lastTime)
	}
	// Reopened, the store holds the same and repairs nothing.
	s = ts.open(t, Options{})
	if rep := s.Recovery(); rep != nil {
		t.Errorf("reopen repaired %+v", rep)
	}
	for _, f := range all {
		if got := s.Watermark(f.ID); got != int64(len(want[f.Path])) {
			t.Fatalf("reopened: %s watermark %d, want %d", f.Path, got, len(want[f.Path]))
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLargeAppendSplit seals appends longer than maxEntryData: each becomes
// consecutive entries (MACs computed in parallel), all or none of them.
func TestLargeAppendSplit(t *testing.T) {
	ts := newTestStore(t, 1<<12, 4)
	s := ts.open(t, Options{})
	f := FileRef{ID: 41, Path: "big.log"}
	var want []byte
	for i, n := range []int{maxEntryData + 1, 3*maxEntryData - 5, 100} {
		b := bytes.Repeat([]byte{byte('a' + i)}, n)
		if err := s.Append(f, s.Watermark(f.ID), b); err != nil {
			t.Fatal(err)
		}
		want = append(want, b...)
	}
	if got := s.next; got < 6 {
		t.Fatalf("%d entries for three appends of which two are long", got)
	}
	// Too few keys left for a long append: nothing of it is sealed.
	s.mu.Lock()
	s.keySlots = (s.next + 1 + int64(s.nratchet) - 1) / int64(s.nratchet)
	s.mu.Unlock()
	wm := s.Watermark(f.ID)
	if err := s.Append(f, wm, bytes.Repeat([]byte{'z'}, 5*maxEntryData)); !errors.Is(err, ErrKeysExhausted) {
		t.Fatalf("long append beyond the keystream: %v", err)
	}
	if s.Watermark(f.ID) != wm {
		t.Fatal("part of a refused append was sealed")
	}
	s.keySlots = 1 << 12 / KeySize
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if sum, ps := ts.verify(t, VerifyOptions{}); !sum.OK() {
		t.Fatal(sum, ps)
	}
	got, _ := os.ReadFile(filepath.Join(ts.store, f.Path))
	if !bytes.Equal(got, want) {
		t.Fatal("real log differs")
	}
}

// A commit syncs the side-record file only when it changed (a file's first
// append, a time record): a sync of an unchanged file still costs a flush.
func TestCommitSyncsRecordsOnlyWhenChanged(t *testing.T) {
	ts := newTestStore(t, 1<<20, 4)
	s := ts.open(t, Options{StampEvery: -1})
	defer s.Close()
	var synced []string
	real := datasync
	datasync = func(f *os.File) error {
		synced = append(synced, filepath.Base(f.Name()))
		return real(f)
	}
	defer func() { datasync = real }()
	a := FileRef{ID: 12, Path: "a.log"}
	b := FileRef{ID: 13, Path: "b.log"}
	recordsSynced := func() bool { return slices.Contains(synced, filepath.Base(RecordsName)) }

	if err := s.Append(a, 0, []byte("first\n")); err != nil { // a's map record
		t.Fatal(err)
	}
	if !recordsSynced() {
		t.Fatalf("a file's first append: synced %v, want %s among them", synced, RecordsName)
	}
	synced = nil
	if err := s.Append(a, 6, []byte("second\n")); err != nil {
		t.Fatal(err)
	}
	if recordsSynced() || !slices.Contains(synced, "a.log") {
		t.Fatalf("a later append: synced %v, want a.log and not %s", synced, RecordsName)
	}
	synced = nil
	if err := s.AppendBatch([]AppendOp{{File: a, Off: 13, Data: []byte("third\n")}, {File: b, Off: 0, Data: []byte("new\n")}}); err != nil {
		t.Fatal(err)
	}
	if !recordsSynced() {
		t.Fatalf("a batch with a new file: synced %v, want %s among them", synced, RecordsName)
	}
}

// countRecords is the number of side records in ts's store.
func countRecords(t *testing.T, ts *testStore) int64 {
	t.Helper()
	return int64(len(readRecords(t, ts)))
}
