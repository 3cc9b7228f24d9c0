package seal

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Each tamper test builds a closed store (two files, 20 lines each, four
// entries per key so ratchet blocks are short), changes it the way an
// attacker would, and checks the verifier reports exactly that.

const tamperNR = 4

func tamperStore(t *testing.T) (*testStore, map[string][]byte) {
	t.Helper()
	ts := newTestStore(t, 4096, tamperNR)
	s := ts.open(t, Options{})
	want := fill(t, s, twoFiles, 20)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return ts, want
}

// ofKind returns the problems of kind k, in order.
func ofKind(ps []Problem, k ProblemKind) []Problem {
	var out []Problem
	for _, p := range ps {
		if p.Kind == k {
			out = append(out, p)
		}
	}
	return out
}

func kinds(ps []Problem) map[ProblemKind]int {
	m := map[ProblemKind]int{}
	for _, p := range ps {
		m[p.Kind]++
	}
	return m
}

func expect(t *testing.T, sum *Summary, ps []Problem, want map[ProblemKind]int) {
	t.Helper()
	got := kinds(ps)
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%v problems: got %d, want %d", k, got[k], n)
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %d %v problems", n, k)
		}
	}
	if sum.OK() {
		t.Errorf("summary OK after tampering: %v", sum)
	}
	if t.Failed() {
		for _, p := range ps {
			t.Log(p)
		}
	}
}

func logSize(t *testing.T, ts *testStore) int64 {
	fi, err := os.Stat(filepath.Join(ts.store, LogName))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func readEntry(t *testing.T, ts *testStore, i int64) []byte {
	b := make([]byte, EntrySize)
	f, _ := os.Open(filepath.Join(ts.store, LogName))
	defer f.Close()
	if _, err := f.ReadAt(b, entryPos(i)); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeAt(t *testing.T, p string, b []byte, off int64) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestTamperFlipByte(t *testing.T) {
	ts, want := tamperStore(t)
	p := filepath.Join(ts.store, "var/log/app.log")
	off := int64(len(want["var/log/app.log"]) / 2)
	b := want["var/log/app.log"][off : off+1]
	writeAt(t, p, []byte{b[0] ^ 0x20}, off)
	sum, ps := ts.verify(t, VerifyOptions{})
	expect(t, sum, ps, map[ProblemKind]int{ProblemAltered: 1})
	pr := ps[0]
	if pr.File != "var/log/app.log" || pr.Off > off || pr.Off+pr.Len <= off {
		t.Fatalf("problem %v does not cover offset %d", pr, off)
	}
	if sum.Intact != sum.Entries-1 {
		t.Fatalf("verification stopped early: %v", sum)
	}
	if !strings.Contains(sum.String(), "1 entry altered") {
		t.Fatalf("summary %q", sum)
	}
}

func TestTamperTruncateRealLog(t *testing.T) {
	ts, want := tamperStore(t)
	p := filepath.Join(ts.store, "auth.log")
	line := int64(len(logLine("auth.log", 0)))
	cut := int64(len(want["auth.log"])) - 3*line - 5
	if err := os.Truncate(p, cut); err != nil {
		t.Fatal(err)
	}
	sum, ps := ts.verify(t, VerifyOptions{})
	expect(t, sum, ps, map[ProblemKind]int{ProblemTruncated: 4})
	for _, p := range ps {
		if p.File != "auth.log" || p.Off+p.Len <= cut {
			t.Errorf("bad report %v", p)
		}
	}
}

func TestTamperDeleteLastEntries(t *testing.T) {
	for _, n := range []int64{1, 4, 9} {
		ts, _ := tamperStore(t)
		size := logSize(t, ts)
		if err := os.Truncate(filepath.Join(ts.store, LogName), size-n*EntrySize); err != nil {
			t.Fatal(err)
		}
		// With the device keystream the cut is measured from burnt keys;
		// the real logs also keep bytes that no entry seals any more.
		sum, ps := ts.verify(t, VerifyOptions{})
		got := kinds(ps)
		// Close appended 0-3 fillers, so the last entries cut may be fillers only.
		if got[ProblemTruncated] == 0 && n >= tamperNR {
			t.Errorf("cut of %d entries: no truncation reported: %v", n, ps)
		}
		if got[ProblemTruncated] == 0 && got[ProblemUnsealed] == 0 && !sum.OpenBlock {
			t.Errorf("cut of %d entries went unnoticed: %v %v", n, sum, ps)
		}
		if sum.OK() {
			t.Errorf("cut of %d entries verified OK", n)
		}
	}
}

func TestTamperReorderEntries(t *testing.T) {
	ts, _ := tamperStore(t)
	a, b := readEntry(t, ts, 5), readEntry(t, ts, 10)
	lp := filepath.Join(ts.store, LogName)
	writeAt(t, lp, b, entryPos(5))
	writeAt(t, lp, a, entryPos(10))
	sum, ps := ts.verify(t, VerifyOptions{})
	if kinds(ps)[ProblemMisplaced] != 2 {
		t.Fatalf("swap not reported as two misplaced entries: %v", ps)
	}
	if sum.OK() {
		t.Fatal("OK after reorder")
	}
}

func TestTamperCopiedEntry(t *testing.T) {
	ts, _ := tamperStore(t)
	lp := filepath.Join(ts.store, LogName)
	// Entry 6 replaced by entry 2 (same file, other position).
	writeAt(t, lp, readEntry(t, ts, 2), entryPos(6))
	sum, ps := ts.verify(t, VerifyOptions{})
	if kinds(ps)[ProblemMisplaced] != 1 || ps[0].Entry != 6 {
		t.Fatalf("copied entry not reported at 6: %v", ps)
	}
	if sum.OK() {
		t.Fatal("OK after replacing an entry")
	}
}

func TestTamperRenameAndDeleteRealLog(t *testing.T) {
	ts, _ := tamperStore(t)
	if err := os.Rename(filepath.Join(ts.store, "auth.log"), filepath.Join(ts.store, "auth.log.1")); err != nil {
		t.Fatal(err)
	}
	sum, ps := ts.verify(t, VerifyOptions{})
	expect(t, sum, ps, map[ProblemKind]int{ProblemMissingFile: 1, ProblemUnknownFile: 1})

	ts, _ = tamperStore(t)
	os.Remove(filepath.Join(ts.store, "var/log/app.log"))
	sum, ps = ts.verify(t, VerifyOptions{})
	expect(t, sum, ps, map[ProblemKind]int{ProblemMissingFile: 1})
}

func TestTamperZeroLogTail(t *testing.T) {
	ts, _ := tamperStore(t)
	size := logSize(t, ts)
	writeAt(t, filepath.Join(ts.store, LogName), make([]byte, 3*EntrySize), size-3*EntrySize)
	sum, ps := ts.verify(t, VerifyOptions{})
	// One problem for the run of zeroed entries, naming them all.
	first := (size-LogHeaderSize)/EntrySize - 3
	run := ofKind(ps, ProblemStructure)
	if len(run) != 1 || run[0].Entry != first || run[0].Off != size-3*EntrySize || run[0].Len != 3*EntrySize {
		t.Fatalf("zeroed tail: want one structure problem for entries %d to %d: %v", first, first+2, ps)
	}
	if sum.OK() {
		t.Fatal("OK after zeroing")
	}
}

// Entries zeroed in the middle of the log, from inside one ratchet block
// to inside another: one problem for the run, and the entries after it
// still verify (their keys are rebuilt from their block's first key: the
// run's entries are neither keyed nor MACed).
func TestTamperZeroedEntriesMidLog(t *testing.T) {
	ts, _ := tamperStore(t)
	n := (logSize(t, ts) - LogHeaderSize) / EntrySize
	const from, count = 9, 5 // entries 9..13: blocks 2 and 3 (nratchet 4)
	writeAt(t, filepath.Join(ts.store, LogName), make([]byte, count*EntrySize), entryPos(from))
	sum, ps := ts.verify(t, VerifyOptions{})
	run := ofKind(ps, ProblemStructure)
	if len(run) != 1 || run[0].Entry != from || run[0].Len != count*EntrySize {
		t.Fatalf("want one structure problem for entries %d to %d: %v", from, from+count-1, ps)
	}
	if kinds(ps)[ProblemAltered] != 0 || kinds(ps)[ProblemMisplaced] != 0 {
		t.Fatalf("entries after the zeroed ones failed their seals: %v", ps)
	}
	if sum.Intact != n-count {
		t.Fatalf("%d entries intact, want %d", sum.Intact, n-count)
	}
}

// A log extended sparsely within the keystream's reach is a million
// all-zero entries: one problem for them all, not one each (which took
// seconds and held a problem per entry in memory; hours for a large
// keystream).
func TestTamperSparseLogHole(t *testing.T) {
	ts := newTestStore(t, 1<<20, tamperNR) // 32768 keys: 131072 entries
	s := ts.open(t, Options{})
	fill(t, s, twoFiles, 20)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lp := filepath.Join(ts.store, LogName)
	size := logSize(t, ts)
	n := (size - LogHeaderSize) / EntrySize
	hole := 100000 - n
	if err := os.Truncate(lp, size+hole*EntrySize); err != nil {
		t.Fatal(err)
	}
	sum, ps := ts.verify(t, VerifyOptions{})
	run := ofKind(ps, ProblemStructure)
	if len(run) != 1 || run[0].Entry != n || run[0].Len != hole*EntrySize {
		t.Fatalf("want one structure problem for entries %d to %d, got %d problems (first: %v)", n, n+hole-1, len(ps), ps[:min(len(ps), 3)])
	}
	if sum.OK() || sum.Intact != n {
		t.Fatalf("summary %+v: want not OK, %d entries intact", sum, n)
	}
}

func TestTamperForgedRecord(t *testing.T) {
	ts, _ := tamperStore(t)
	// Point auth.log's map record at another path: the record's seal breaks.
	rp := filepath.Join(ts.store, RecordsName)
	b, _ := os.ReadFile(rp)
	i := strings.Index(string(b), "auth.log")
	copy(b[i:], "auth.lug")
	os.WriteFile(rp, b, 0o640)
	os.Rename(filepath.Join(ts.store, "auth.log"), filepath.Join(ts.store, "auth.lug"))
	sum, ps := ts.verify(t, VerifyOptions{})
	got := kinds(ps)
	if got[ProblemRecord] != 1 || got[ProblemUnknownFile] == 0 {
		t.Fatalf("forged map record: %v", ps)
	}
	if sum.OK() {
		t.Fatal("OK after forging a record")
	}
}

// TestAttackerResealsWithDeviceKeys plays an attacker holding everything
// left on the device (store, device keystream, ratchet state) after N
// appends: they rewrite an earlier line and re-seal its entry with the keys
// still there. The auditor's key catches it.
func TestAttackerResealsWithDeviceKeys(t *testing.T) {
	for _, closed := range []bool{true, false} {
		ts := newTestStore(t, 4096, tamperNR)
		s := ts.open(t, Options{})
		want := fill(t, s, twoFiles, 10)
		if closed {
			s.Close()
		} else {
			defer s.Close()
		}
		// The attacker's keys: the ratchet state's next key if a block is
		// open, else the first unburnt keystream key.
		var key [KeySize]byte
		stb, _ := os.ReadFile(ts.dev + StateSuffix)
		st, err := ParseRatchetState(stb)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := os.ReadFile(ts.dev)
		hdr, _ := ParseKeyHeader(kb, int64(len(kb)))
		if st.Committed%tamperNR != 0 {
			key = st.NextKey
		} else {
			copy(key[:], kb[hdr.Burnt:])
		}
		// Rewrite line 3 of app.log with new text.
		var target int64
		var e Entry
		for seen := 0; seen < 3; target++ {
			if e, _ = ParseEntry(readEntry(t, ts, target)); e.Inode == 12 {
				seen++
			}
		}
		target--
		forged := []byte(strings.Replace(string(want["var/log/app.log"][e.Offset:e.Offset+e.Count]), "quick", "QUICK", 1))
		writeAt(t, filepath.Join(ts.store, "var/log/app.log"), forged, int64(e.Offset))
		m := newMAC()
		m.startEntry(&key, &e)
		m.Write(forged)
		e.MAC = *m.final()
		writeAt(t, filepath.Join(ts.store, LogName), e.AppendBinary(nil), entryPos(target))
		sum, ps := ts.verify(t, VerifyOptions{})
		if kinds(ps)[ProblemAltered] != 1 || ps[0].Entry != target {
			t.Fatalf("closed=%v: re-sealed entry not caught: %v", closed, ps)
		}
		if sum.OK() {
			t.Fatal("OK after re-sealing")
		}
	}
}

// TestVerifyCopiedStore checks that verification relies on the sealed map,
// not on inode numbers: a copy with new inodes verifies.
func TestVerifyCopiedStore(t *testing.T) {
	ts, _ := tamperStore(t)
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(dst, os.DirFS(ts.store)); err != nil {
		t.Fatal(err)
	}
	var ps []Problem
	sum, err := Verify(dst, VerifyOptions{AuditorKey: ts.aud, OnProblem: func(p Problem) { ps = append(ps, p) }})
	if err != nil || !sum.OK() {
		t.Fatalf("copied store: %v %v %v", sum, err, ps)
	}
}

func TestVerifyWithoutKeyNeverOK(t *testing.T) {
	ts, _ := tamperStore(t)
	sum, err := Verify(ts.store, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.OK() || sum.Keyed || sum.Problems() != 0 {
		t.Fatalf("structure-only check: %+v", sum)
	}
	if !strings.Contains(sum.String(), "no key") {
		t.Fatalf("summary does not say it is unkeyed: %s", sum)
	}
}

func TestVerifyFileAndRange(t *testing.T) {
	ts, want := tamperStore(t)
	writeAt(t, filepath.Join(ts.store, "auth.log"), []byte("X"), 10)
	sum, ps := ts.verify(t, VerifyOptions{File: "var/log/app.log"})
	if !sum.OK() || len(ps) != 0 || sum.Intact != 20 {
		t.Fatalf("app.log alone: %v %v", sum, ps)
	}
	sum, ps = ts.verify(t, VerifyOptions{File: "auth.log", Range: &Range{Off: 0, Len: 5}})
	if kinds(ps)[ProblemAltered] != 1 || sum.Entries != 1 {
		t.Fatalf("auth.log [0,5): %v %v", sum, ps)
	}
	n := int64(len(want["auth.log"]))
	sum, ps = ts.verify(t, VerifyOptions{File: "auth.log", Range: &Range{Off: n - 5, Len: 5}})
	if !sum.OK() || sum.Entries != 1 {
		t.Fatalf("auth.log tail: %v %v", sum, ps)
	}
}

// cutStore builds a closed store of appends one-line appends to one real
// log, nr entries per key, and cuts it as an attacker holding the device
// would: .SEALFS.LOG to its first keep entries and the real log to their
// end, so that the store alone looks whole.
func cutStore(t *testing.T, nr, appends int, keep int64) *testStore {
	t.Helper()
	ts := newTestStore(t, 4096, nr)
	s := ts.open(t, Options{StampEvery: -1}) // one entry per append, after the map record's anchor
	f := FileRef{ID: 12, Path: "app.log"}
	ends := []int64{0} // the real log's size when the log holds k entries
	for i := range appends {
		if err := s.Append(f, s.Watermark(f.ID), logLine(f.Path, i)); err != nil {
			t.Fatal(err)
		}
		for int64(len(ends)) <= s.next {
			ends = append(ends, s.Watermark(f.ID))
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(ts.store, LogName), entryPos(keep)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(ts.store, f.Path), ends[keep]); err != nil {
		t.Fatal(err)
	}
	return ts
}

// cutDeviceKeys lowers the device keystream's burnt offset to blocks keys
// and cuts the file right after them: no unburnt key is left to compare.
func cutDeviceKeys(t *testing.T, ts *testStore, blocks int64) {
	t.Helper()
	kb, err := os.ReadFile(ts.dev)
	if err != nil {
		t.Fatal(err)
	}
	burnt := KeyHeaderSize + blocks*KeySize
	binary.LittleEndian.PutUint64(kb[8:], uint64(burnt))
	if err := os.WriteFile(ts.dev, kb[:burnt], 0o600); err != nil {
		t.Fatal(err)
	}
}

// editState rewrites the ratchet state with a valid checksum, which needs
// no key.
func editState(t *testing.T, ts *testStore, edit func(*RatchetState)) {
	t.Helper()
	b, err := os.ReadFile(ts.dev + StateSuffix)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseRatchetState(b)
	if err != nil {
		t.Fatal(err)
	}
	edit(&st)
	if err := os.WriteFile(ts.dev+StateSuffix, st.marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// An attacker who cuts the log's tail also holds the device keystream and
// the ratchet state, and covers the cut there: by lowering the burnt
// offset and cutting the keystream (whole ratchet blocks cut), or by
// deleting or rewriting the state (a cut inside the last block, which the
// burnt keys do not reveal). The auditor's keystream exposes each.
func TestTamperCutTailAndDeviceFiles(t *testing.T) {
	setCount := func(c, target int64) func(*testing.T, *testStore) {
		return func(t *testing.T, ts *testStore) {
			editState(t, ts, func(st *RatchetState) {
				st.Committed, st.Target = c, target
				st.NextKey, st.TargetKey = [KeySize]byte{}, [KeySize]byte{}
			})
		}
	}
	removeState := func(t *testing.T, ts *testStore) {
		if err := os.Remove(ts.dev + StateSuffix); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name        string
		nr, appends int
		keep        int64
		cover       func(t *testing.T, ts *testStore)
		want        map[ProblemKind]int
		msgs        []string
	}{
		{"whole blocks, device keystream cut, state deleted", tamperNR, 20, 8,
			func(t *testing.T, ts *testStore) { cutDeviceKeys(t, ts, 2); removeState(t, ts) },
			map[ProblemKind]int{ProblemKeystream: 2}, []string{"device keystream was cut", "ratchet state"}},
		{"whole blocks, device keystream cut, state rewritten", tamperNR, 20, 8,
			func(t *testing.T, ts *testStore) { cutDeviceKeys(t, ts, 2); setCount(8, 8)(t, ts) },
			map[ProblemKind]int{ProblemKeystream: 1}, []string{"device keystream was cut"}},
		{"in a block, state deleted", tamperNR, 19, 18, removeState,
			map[ProblemKind]int{ProblemKeystream: 1}, []string{"ratchet state"}},
		{"in a block, state rewritten", tamperNR, 19, 18, setCount(18, 18),
			map[ProblemKind]int{ProblemKeystream: 1}, []string{"next key is not the key of entry 18"}},
		{"in a block, nratchet 31, state deleted", 31, 10, 3, removeState,
			map[ProblemKind]int{ProblemKeystream: 1}, []string{"ratchet state"}},
		{"in a block, nratchet 31, state rewritten", 31, 10, 3, setCount(3, 3),
			map[ProblemKind]int{ProblemKeystream: 1}, []string{"next key is not the key of entry 3"}},
		// At a block's start the state holds no key to check; the keys
		// burnt for the block it no longer counts give it away.
		{"in a block, count lowered to the block's start", tamperNR, 19, 18, setCount(16, 16),
			map[ProblemKind]int{ProblemKeystream: 1}, []string{"stale or forged"}},
		{"in a block, commit in flight", tamperNR, 19, 18, setCount(16, 18),
			map[ProblemKind]int{ProblemKeystream: 1}, []string{"target key is not the key of entry 18"}},
		{"in a block, state of another keystream", tamperNR, 19, 18,
			func(t *testing.T, ts *testStore) { editState(t, ts, func(st *RatchetState) { st.KeyMagic++ }) },
			map[ProblemKind]int{ProblemKeystream: 1}, []string{"belongs to keystream"}},
		{"in a block, state garbled", tamperNR, 19, 18,
			func(t *testing.T, ts *testStore) { writeAt(t, ts.dev+StateSuffix, []byte("garbage!"), 0) },
			map[ProblemKind]int{ProblemKeystream: 1}, []string{"bad magic"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := cutStore(t, tc.nr, tc.appends, tc.keep)
			tc.cover(t, ts)
			sum, ps := ts.verify(t, VerifyOptions{})
			expect(t, sum, ps, tc.want)
			for _, m := range tc.msgs {
				if !slices.ContainsFunc(ps, func(p Problem) bool { return strings.Contains(p.Msg, m) }) {
					t.Errorf("no problem says %q: %v", m, ps)
				}
			}
		})
	}
}

// The checks of the device's files hold no false alarm for a store that is
// running (an open ratchet block, its key in the state) or that SealFS made
// (no ratchet state, no side records or params).
func TestVerifyDeviceFilesUntampered(t *testing.T) {
	ts := newTestStore(t, 4096, tamperNR)
	s := ts.open(t, Options{})
	fill(t, s, twoFiles, 9) // 18 entries: inside a ratchet block
	defer s.Close()
	sum, ps := ts.verify(t, VerifyOptions{})
	if !sum.OK() || !sum.OpenBlock || len(ps) != 0 {
		t.Fatalf("running store: %v open block %v, %v", sum, sum.OpenBlock, ps)
	}

	// SealFS's own verify needs no more; this one reports the missing
	// side records, but not the state.
	ts = cutStore(t, tamperNR, 8, 8) // a closed store, cut by no one
	os.Remove(ts.dev + StateSuffix)
	os.RemoveAll(filepath.Join(ts.store, MetaDir))
	_, ps = ts.verify(t, VerifyOptions{})
	for _, p := range ps {
		if strings.Contains(p.Msg, "ratchet state") {
			t.Errorf("SealFS-made store: %v", p)
		}
	}
}

// Entries planted past what the device acknowledged wait until the verifier
// knows whether the device was sealing them (settleUnacked). A hostile log
// can plant millions: at most maxHeldUnacked problems are kept one by one,
// the rest are counted by kind and reported as one problem, and the
// summary still counts them all.
func TestTamperManyPlantedEntries(t *testing.T) {
	ts := newTestStore(t, 1<<20, tamperNR) // 131072 entries' keys: all planted ones are keyed
	s := ts.open(t, Options{})
	fill(t, s, twoFiles, 20)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	const planted = maxHeldUnacked + 2000
	e0 := readEntry(t, ts, 0) // valid at 0, misplaced anywhere else
	f, err := os.OpenFile(filepath.Join(ts.store, LogName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat(e0, planted)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sum, ps := ts.verify(t, VerifyOptions{})
	misplaced := kinds(ps)[ProblemMisplaced]
	if misplaced != maxHeldUnacked+1 {
		t.Fatalf("%d misplaced problems reported for %d planted entries, want the first %d and one for the rest", misplaced, planted, maxHeldUnacked)
	}
	if !slices.ContainsFunc(ps, func(p Problem) bool { return strings.Contains(p.Msg, "2000 more misplaced problems") }) {
		t.Fatal("no problem counts the misplaced entries past the first ones")
	}
	if kinds(ps)[ProblemKeystream] != 1 {
		t.Fatalf("want the one keystream problem (keys the device has not burnt) as it is: %v", ps[len(ps)-3:])
	}
	if sum.Altered != planted || sum.OK() {
		t.Fatalf("summary counts %d altered or misplaced entries (OK %v), want %d", sum.Altered, sum.OK(), planted)
	}
}

// A real log, a directory of real logs, or the log of entries replaced by
// a symbolic link is not followed: a link to a genuine copy kept elsewhere
// would otherwise verify as intact, and one to any other file would be read
// from the verifying machine.
func TestTamperSymlinks(t *testing.T) {
	t.Run("real log", func(t *testing.T) {
		ts, _ := tamperStore(t)
		moveAndLink(t, filepath.Join(ts.store, "auth.log"), filepath.Join(ts.dir, "genuine-auth.log"))
		sum, ps := ts.verify(t, VerifyOptions{})
		expect(t, sum, ps, map[ProblemKind]int{ProblemMissingFile: 1, ProblemUnknownFile: 1})
	})
	t.Run("directory", func(t *testing.T) {
		ts, _ := tamperStore(t)
		moveAndLink(t, filepath.Join(ts.store, "var"), filepath.Join(ts.dir, "var-elsewhere"))
		sum, ps := ts.verify(t, VerifyOptions{})
		expect(t, sum, ps, map[ProblemKind]int{ProblemMissingFile: 1, ProblemUnknownFile: 1})
	})
	t.Run(LogName, func(t *testing.T) {
		ts, _ := tamperStore(t)
		moveAndLink(t, filepath.Join(ts.store, LogName), filepath.Join(ts.dir, "genuine.log"))
		if _, err := Verify(ts.store, VerifyOptions{AuditorKey: ts.aud, DeviceKey: ts.dev}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("Verify with %s a link: %v, want an error naming the link", LogName, err)
		}
	})
}

// moveAndLink moves p to to and leaves a symbolic link to it at p.
func moveAndLink(t *testing.T, p, to string) {
	t.Helper()
	if err := os.Rename(p, to); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(to, p); err != nil {
		t.Fatal(err)
	}
}

// An entry whose count or offset passes 2^63 is reported as changed, with
// nothing else: its range would break the coverage arithmetic (a negative
// length, and a false gap after it).
func TestTamperImpossibleEntryRange(t *testing.T) {
	for name, field := range map[string]int{"count": 24, "offset": 16} {
		t.Run(name, func(t *testing.T) {
			ts, _ := tamperStore(t)
			i := int64(4) // a data entry in the middle of a real log
			for e, _ := ParseEntry(readEntry(t, ts, i)); e.Inode == FakeInode; e, _ = ParseEntry(readEntry(t, ts, i)) {
				i++
			}
			e := readEntry(t, ts, i)
			binary.LittleEndian.PutUint64(e[field:], 1<<64-1)
			writeAt(t, filepath.Join(ts.store, LogName), e, entryPos(i))
			sum, ps := ts.verify(t, VerifyOptions{})
			expect(t, sum, ps, map[ProblemKind]int{ProblemAltered: 1, ProblemGap: 1})
			for _, p := range ps {
				if p.Len < 0 || p.Off < 0 {
					t.Errorf("problem with a negative range: %v", p)
				}
			}
		})
	}
}
