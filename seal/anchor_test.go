package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recordStore makes a closed store whose side records are two map records,
// several time records and a repair record, and returns it with the records
// as they lie in the file.
func recordStore(t *testing.T) (*testStore, []Record) {
	t.Helper()
	ts := newTestStore(t, 4096, tamperNR)
	now := time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := ts.open(t, Options{Now: clock})
	for i := range 4 {
		fill(t, s, twoFiles, 1)
		_ = i
		now = now.Add(2 * time.Minute) // a time record with each round
	}
	// A crash with debris, so that the next Open seals a repair record.
	app := filepath.Join(ts.store, "var/log/app.log")
	f, err := os.OpenFile(app, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("unacknowledged\n"))
	f.Close()
	s.closeFiles()
	s = ts.open(t, Options{Now: clock})
	if s.Recovery() == nil {
		t.Fatal("no repair after the crash")
	}
	now = now.Add(2 * time.Minute)
	fill(t, s, twoFiles, 2)
	ts.closeVerified(t, s)
	return ts, readRecords(t, ts)
}

func readRecords(t *testing.T, ts *testStore) []Record {
	t.Helper()
	rb, err := os.ReadFile(filepath.Join(ts.store, RecordsName))
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := ParseRecords(rb)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// rewriteRecords replaces the side-record file with edit's result.
func rewriteRecords(t *testing.T, ts *testStore, edit func(b []byte) []byte) {
	t.Helper()
	p := filepath.Join(ts.store, RecordsName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, edit(b), 0o640); err != nil {
		t.Fatal(err)
	}
}

func recordEnd(r Record) int64 { return r.Off + int64(len(r.Raw)) + KeySize }

// Each side record is anchored by an entry of its own, so removing,
// duplicating or moving one is found, where before only a record whose loss
// hid a real log (a map record) was: a deleted time record re-dated the
// entries after it, a deleted repair record hid a crash repair.
func TestTamperSideRecords(t *testing.T) {
	_, recs := recordStore(t)
	var times []int
	var repair, lastMap = -1, -1
	for i, r := range recs {
		switch r.Type {
		case RecordTime:
			times = append(times, i)
		case RecordRepair:
			repair = i
		case RecordMap:
			lastMap = i
		}
	}
	if len(times) < 4 || repair < 0 || lastMap < 0 {
		t.Fatalf("store has %d time records, repair at %d, maps up to %d", len(times), repair, lastMap)
	}
	cut := func(i int) func(b []byte) []byte {
		return func(b []byte) []byte {
			r := recs[i]
			return append(append([]byte{}, b[:r.Off]...), b[recordEnd(r):]...)
		}
	}
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"a time record deleted", cut(times[1])},
		{"the repair record deleted", cut(repair)},
		{"the last record deleted", cut(len(recs) - 1)},
		{"a time record duplicated", func(b []byte) []byte {
			r := recs[times[1]]
			out := append([]byte{}, b[:recordEnd(r)]...)
			out = append(out, b[r.Off:recordEnd(r)]...)
			return append(out, b[recordEnd(r):]...)
		}},
		{"two time records swapped", func(b []byte) []byte {
			a, c := recs[times[1]], recs[times[2]]
			if recordEnd(a) != c.Off {
				t.Fatalf("time records %d and %d are not adjacent", times[1], times[2])
			}
			out := append([]byte{}, b[:a.Off]...)
			out = append(out, b[c.Off:recordEnd(c)]...)
			out = append(out, b[a.Off:recordEnd(a)]...)
			return append(out, b[recordEnd(c):]...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, _ := recordStore(t)
			rewriteRecords(t, ts, tc.edit)
			sum, ps := ts.verify(t, VerifyOptions{})
			if sum.OK() || kinds(ps)[ProblemRecord] == 0 {
				t.Fatalf("not caught: %v %v", sum, ps)
			}
			for _, p := range ps {
				if p.Kind != ProblemRecord {
					t.Errorf("a records-only change reported as %v", p)
				}
			}
		})
	}

	// A damaged record does not blind the verifier to those after it: the
	// next anchor says where to read on.
	t.Run("a map record garbled", func(t *testing.T) {
		ts, recs := recordStore(t)
		first := recs[0]
		if first.Type != RecordMap || first.Path != "var/log/app.log" {
			t.Fatalf("first record %v %q", first.Type, first.Path)
		}
		rewriteRecords(t, ts, func(b []byte) []byte { b[first.Off+6] ^= 1; return b }) // a reserved byte
		_, ps := ts.verify(t, VerifyOptions{})
		if kinds(ps)[ProblemRecord] == 0 {
			t.Fatalf("garbled record not reported: %v", ps)
		}
		for _, p := range ps {
			if strings.Contains(p.File, "auth.log") || strings.Contains(p.Msg, "file 13") {
				t.Errorf("auth.log's records come after the garbled one and are intact: %v", p)
			}
		}
	})
}

// Records bound to acknowledged entries were synced before the entries were
// acknowledged: Open refuses a store where one is damaged or missing rather
// than cut it away with everything after it, as it once did.
func TestOpenRefusesDamagedRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(recs []Record) func(b []byte) []byte
	}{
		{"a reserved byte flipped", func(recs []Record) func(b []byte) []byte {
			return func(b []byte) []byte { b[recs[0].Off+6] ^= 1; return b }
		}},
		{"cut inside the acknowledged records", func(recs []Record) func(b []byte) []byte {
			return func(b []byte) []byte { return b[:recs[len(recs)-1].Off+10] }
		}},
		{"a record deleted", func(recs []Record) func(b []byte) []byte {
			return func(b []byte) []byte {
				r := recs[1]
				return append(append([]byte{}, b[:r.Off]...), b[recordEnd(r):]...)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, recs := recordStore(t)
			rewriteRecords(t, ts, tc.edit(recs))
			p := filepath.Join(ts.store, RecordsName)
			before, _ := os.ReadFile(p)
			s, err := Open(ts.store, ts.dev, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open accepted damaged side records")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
			if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
				t.Fatalf("Open changed the damaged records file (%d -> %d bytes)", len(before), len(after))
			}
		})
	}
	// A torn record after the acknowledged ones is a crash artefact: cut.
	t.Run("torn unacknowledged tail", func(t *testing.T) {
		ts, recs := recordStore(t)
		last := recs[len(recs)-1]
		rewriteRecords(t, ts, func(b []byte) []byte { return append(b, b[last.Off:last.Off+30]...) })
		s := ts.open(t, Options{})
		if rep := s.Recovery(); rep == nil {
			t.Error("torn tail cut without a repair record")
		}
		ts.closeVerified(t, s)
	})
}

// Files under .indelible/ that are not the store's own are reported like
// files planted anywhere else in the store.
func TestVerifyReportsFilesPlantedInMetaDir(t *testing.T) {
	ts, _ := recordStore(t)
	for _, p := range []string{".indelible/notes.log", ".indelible/seal/records.old"} {
		if err := os.WriteFile(filepath.Join(ts.store, filepath.FromSlash(p)), []byte("planted\n"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	sum, ps := ts.verify(t, VerifyOptions{})
	expect(t, sum, ps, map[ProblemKind]int{ProblemUnknownFile: 2})
}

// A real log replaced by a symbolic link to a file outside the store is not
// followed: recovery would otherwise cut the outside file to the real
// log's watermark.
func TestOpenStaysInsideStore(t *testing.T) {
	ts := newTestStore(t, 4096, tamperNR)
	s := ts.open(t, Options{})
	want := fill(t, s, twoFiles, 3)
	ts.closeVerified(t, s)
	outside := filepath.Join(ts.dir, "outside.txt")
	content := append(append([]byte{}, want["auth.log"]...), "not the device's to cut\n"...)
	if err := os.WriteFile(outside, content, 0o600); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(ts.store, "auth.log")
	if err := os.Remove(real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, real); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ts.store, ts.dev, Options{})
	if err == nil {
		s.Close()
	}
	got, _ := os.ReadFile(outside)
	if !bytes.Equal(got, content) {
		t.Fatalf("Open changed a file outside the store through a link (%d -> %d bytes; Open: %v)", len(content), len(got), err)
	}
	if err == nil {
		t.Fatal("Open accepted a real log that leads outside the store")
	}
}

// A new real log's map record is durable before the real log's name can
// be: a power cut can leave a map record with no real log (Open drops it
// with its unacknowledged entry) but never a real log with no map record,
// which Open could not tell from a planted file and verify would report.
func TestMapRecordDurableBeforeRealLog(t *testing.T) {
	ts := newTestStore(t, 4096, tamperNR)
	s := ts.open(t, Options{})
	defer s.Close()
	records := filepath.Join(ts.store, RecordsName)
	real := filepath.Join(ts.store, "var/log/app.log")
	var synced, existed bool
	old := datasync
	defer func() { datasync = old }()
	datasync = func(f *os.File) error {
		if f.Name() == records && !synced {
			synced = true
			b, _ := os.ReadFile(records)
			recs, _, _ := ParseRecords(b)
			if len(recs) == 0 || recs[0].Type != RecordMap {
				t.Errorf("first sync of the records file holds %d records, want the map record", len(recs))
			}
			_, err := os.Lstat(real)
			existed = err == nil
		}
		return old(f)
	}
	fill(t, s, twoFiles[:1], 1)
	if !synced || existed {
		t.Fatalf("records synced before the real log was created: %v (real log existed then: %v)", synced, existed)
	}
}

// A store written before anchors (version 1 records, testdata/v1store) goes
// on: Open accepts it, new records are anchored, and the mix verifies.
func TestVersion1StoreGoesOn(t *testing.T) {
	d := t.TempDir()
	if err := os.CopyFS(d, os.DirFS("testdata/v1store")); err != nil {
		t.Fatal(err)
	}
	ts := &testStore{dir: d, store: filepath.Join(d, "store"), dev: filepath.Join(d, "device.key"), aud: filepath.Join(d, "auditor.key")}
	if sum, ps := ts.verify(t, VerifyOptions{}); !sum.OK() {
		t.Fatalf("the fixture does not verify: %v %v", sum, ps)
	}
	s := ts.open(t, Options{})
	if s.Watermark(12) != 34 || s.Watermark(13) != 23 {
		t.Fatalf("watermarks %d %d, want 34 23", s.Watermark(12), s.Watermark(13))
	}
	fill(t, s, []FileRef{{ID: 12, Path: "var/log/app.log"}, {ID: 14, Path: "new.log"}}, 3)
	ts.closeVerified(t, s)
	versions := map[uint8]int{}
	for _, r := range readRecords(t, ts) {
		versions[r.Version]++
	}
	if versions[1] != 4 || versions[2] < 2 { // two maps and a time record per session; a map and a time record at least
		t.Fatalf("records by version: %v", versions)
	}
}

// Verifying a store while the device seals into it raises no false alarm:
// the device's burnt offset and state are read before the log (what they
// count is durable in it by then), and what was being sealed meanwhile is
// counted as in flight, not reported. Before, most such runs reported a
// deleted tail or an unsealed range.
func TestVerifyWhileSealing(t *testing.T) {
	ts := newTestStore(t, 1<<16, 31)
	s := ts.open(t, Options{})
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		f := FileRef{ID: 12, Path: "app.log"}
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := s.Append(f, s.Watermark(f.ID), logLine(f.Path, i)); err != nil {
				done <- err
				return
			}
		}
	}()
	live := 0
	for range 30 {
		sum, ps := ts.verify(t, VerifyOptions{})
		if len(ps) != 0 {
			close(stop)
			<-done
			t.Fatalf("verify of a running store: %v %v", sum, ps)
		}
		if sum.Live {
			live++
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ts.closeVerified(t, s)
	t.Logf("%d of 30 runs saw the device seal meanwhile", live)
}

// A store is open in one process at a time: a second Open would seal with
// the same keys. Verify sees the lock and treats the store as running.
func TestStoreOpenOnce(t *testing.T) {
	ts := newTestStore(t, 4096, tamperNR)
	s := ts.open(t, Options{})
	if s2, err := Open(ts.store, ts.dev, Options{}); !errors.Is(err, ErrInUse) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("second Open: %v, want %v", err, ErrInUse)
	}
	fill(t, s, twoFiles, 2)
	if sum, ps := ts.verify(t, VerifyOptions{}); !sum.Live || len(ps) != 0 {
		t.Fatalf("verify of an open store: live %v, %v %v", sum.Live, sum, ps)
	}
	ts.closeVerified(t, s)
	s = ts.open(t, Options{}) // free again once closed
	s.Close()
}

// A deleted side record shifts every later one; each record proves itself
// by its seal, not its place, so the later ones still apply: a file created
// after the deleted record is still checked, and its altered bytes found.
func TestDeletedRecordHidesNothingAfterIt(t *testing.T) {
	ts := newTestStore(t, 4096, tamperNR)
	now := time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
	s := ts.open(t, Options{Now: func() time.Time { return now }})
	a, b := FileRef{ID: 12, Path: "a.log"}, FileRef{ID: 13, Path: "b.log"}
	if err := s.Append(a, 0, []byte("first line of a\n")); err != nil { // map a, time, data
		t.Fatal(err)
	}
	if err := s.Append(b, 0, []byte("first line of b: transfer 100 EUR\n")); err != nil { // map b, data
		t.Fatal(err)
	}
	ts.closeVerified(t, s)
	recs := readRecords(t, ts)
	if len(recs) != 3 || recs[1].Type != RecordTime || recs[2].Type != RecordMap {
		t.Fatalf("records %+v", recs)
	}
	rewriteRecords(t, ts, func(bb []byte) []byte {
		r := recs[1]
		return append(append([]byte{}, bb[:r.Off]...), bb[recordEnd(r):]...)
	})
	p := filepath.Join(ts.store, "b.log")
	bb, _ := os.ReadFile(p)
	copy(bb[27:], "999")
	if err := os.WriteFile(p, bb, 0o640); err != nil {
		t.Fatal(err)
	}
	_, ps := ts.verify(t, VerifyOptions{})
	k := kinds(ps)
	if k[ProblemAltered] != 1 || k[ProblemRecord] == 0 || k[ProblemUnknownFile] != 0 {
		t.Fatalf("want the deleted record and b.log's altered entry, and no unknown file: %v", ps)
	}
}

// A hostile log of anchors and records that do not match costs the verifier
// a pass over each, not one over the records file per anchor: the problems
// it reports grow with the records and entries, not their product.
func TestVerifyHostileAnchorsLinear(t *testing.T) {
	const m, entries = 2000, 4000
	ts := newTestStore(t, 1<<20, 31)
	var rec []byte
	for range m {
		body, _ := encodeRecord(&Record{Type: RecordTime, Entry: 0, Time: time.Unix(0, 0)})
		rec = append(append(rec, body...), make([]byte, KeySize)...)
	}
	if err := os.WriteFile(filepath.Join(ts.store, RecordsName), rec, 0o640); err != nil {
		t.Fatal(err)
	}
	lb := make([]byte, LogHeaderSize)
	old, _ := os.ReadFile(filepath.Join(ts.store, LogName))
	copy(lb, old)
	for i := range entries {
		roff, koff := expectedPlace(int64(i), 31)
		e := Entry{RatchetOffset: roff, KeyOffset: koff, Inode: 7}
		if i%2 == 1 {
			e = Entry{RatchetOffset: roff, KeyOffset: koff, Inode: FakeInode, Offset: uint64(minRecordSize * (i/2 + 1)), Count: minRecordSize}
		}
		lb = e.AppendBinary(lb)
	}
	if err := os.WriteFile(filepath.Join(ts.store, LogName), lb, 0o640); err != nil {
		t.Fatal(err)
	}
	probs := 0
	if _, err := Verify(ts.store, VerifyOptions{AuditorKey: ts.aud, OnProblem: func(Problem) { probs++ }}); err != nil {
		t.Fatal(err)
	}
	if probs > 3*(m+entries) {
		t.Fatalf("%d problems for %d records and %d entries", probs, m, entries)
	}
	t.Logf("%d problems for %d records and %d entries", probs, m, entries)
}

// In a version 1 store a deleted record leaves no anchor behind, but one
// replaced by a copy of a later record of the same size (keeping every
// offset) shows as two records of a kind for one entry.
func TestVersion1DuplicateRecord(t *testing.T) {
	d := t.TempDir()
	if err := os.CopyFS(d, os.DirFS("testdata/v1store")); err != nil {
		t.Fatal(err)
	}
	ts := &testStore{dir: d, store: filepath.Join(d, "store"), dev: filepath.Join(d, "device.key"), aud: filepath.Join(d, "auditor.key")}
	recs := readRecords(t, ts)
	var times []Record
	for _, r := range recs {
		if r.Type == RecordTime {
			times = append(times, r)
		}
	}
	if len(times) != 2 || times[0].Entry == times[1].Entry {
		t.Fatalf("fixture time records %+v", times)
	}
	rewriteRecords(t, ts, func(b []byte) []byte {
		copy(b[times[0].Off:recordEnd(times[0])], b[times[1].Off:recordEnd(times[1])])
		return b
	})
	if sum, ps := ts.verify(t, VerifyOptions{}); sum.OK() || kinds(ps)[ProblemRecord] == 0 {
		t.Fatalf("a version 1 time record replaced by a copy of a later one: %v %v", sum, ps)
	}
}
