package seal

import (
	"os"
	"path/filepath"
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
	if kinds(ps)[ProblemMisplaced] != 3 {
		t.Fatalf("zeroed tail: %v", ps)
	}
	if sum.OK() {
		t.Fatal("OK after zeroing")
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
		// Rewrite line 3 of app.log (entry 6: files alternate) with new text.
		target := int64(6)
		eb := readEntry(t, ts, target)
		e, _ := ParseEntry(eb)
		if e.Inode != 12 {
			t.Fatalf("entry %d is file %d", target, e.Inode)
		}
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
