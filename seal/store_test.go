package seal

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testStore is a fresh store with its keys in a temporary directory.
type testStore struct {
	dir, store, dev, aud string
}

func newTestStore(t testing.TB, keyBytes int64, nratchet int) *testStore {
	t.Helper()
	d := t.TempDir()
	dev := filepath.Join(d, "device")
	os.MkdirAll(dev, 0o700)
	ts := &testStore{dir: d, store: filepath.Join(dev, "store"), dev: filepath.Join(dev, "device.key"), aud: filepath.Join(d, "auditor.key")}
	if err := Create(ts.store, ts.dev, ts.aud, keyBytes, CreateOptions{NRatchet: nratchet}); err != nil {
		t.Fatal(err)
	}
	return ts
}

func (ts *testStore) open(t testing.TB, o Options) *Store {
	t.Helper()
	s, err := Open(ts.store, ts.dev, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// closeVerified closes s and fails the test unless the store verifies.
func (ts *testStore) closeVerified(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if sum, ps := ts.verify(t, VerifyOptions{}); !sum.OK() {
		t.Fatal(sum, ps)
	}
}

// verify runs the verifier with both keys and returns the problems.
func (ts *testStore) verify(t testing.TB, o VerifyOptions) (*Summary, []Problem) {
	t.Helper()
	var probs []Problem
	o.AuditorKey = ts.aud
	if o.DeviceKey == "" {
		o.DeviceKey = ts.dev
	}
	o.OnProblem = func(p Problem) { probs = append(probs, p) }
	sum, err := Verify(ts.store, o)
	if err != nil {
		t.Fatal(err)
	}
	return sum, probs
}

func logLine(file string, i int) []byte {
	return []byte(fmt.Sprintf("%s line %05d: the quick brown fox\n", file, i))
}

// fill appends n lines to each file and returns the expected contents.
func fill(t testing.TB, s *Store, files []FileRef, n int) map[string][]byte {
	t.Helper()
	want := map[string][]byte{}
	for i := 0; i < n; i++ {
		for _, f := range files {
			b := logLine(f.Path, i)
			if err := s.Append(f, s.Watermark(f.ID), b); err != nil {
				t.Fatal(err)
			}
			want[f.Path] = append(want[f.Path], b...)
		}
	}
	return want
}

var twoFiles = []FileRef{{ID: 12, Path: "var/log/app.log"}, {ID: 13, Path: "auth.log"}}

func TestMACMatchesStdlib(t *testing.T) {
	var key [KeySize]byte
	copy(key[:], "0123456789abcdef0123456789abcdef")
	m := newMAC()
	e := Entry{RatchetOffset: 3, Inode: 12, Offset: 100, Count: 5, KeyOffset: 48}
	m.startEntry(&key, &e)
	m.Write([]byte("hello"))
	got := *m.final()
	h := hmac.New(sha256.New, key[:])
	b := e.AppendBinary(nil)[:40]
	h.Write(b)
	h.Write([]byte("hello"))
	if !bytes.Equal(got[:], h.Sum(nil)) {
		t.Fatal("entry MAC differs from crypto/hmac")
	}
	k2 := key
	m.ratchet(&k2, 7, 31)
	h = hmac.New(sha256.New, key[:])
	h.Write([]byte{7, 0, 0, 0, 0, 0, 0, 0, 31, 0, 0, 0, 0, 0, 0, 0})
	if !bytes.Equal(k2[:], h.Sum(nil)) {
		t.Fatal("ratchet differs from HMAC(key, le64(roff)||le64(n))")
	}
}

func TestAppendVerifyReopen(t *testing.T) {
	for _, nr := range []int{1, 2, 31} {
		t.Run(fmt.Sprint("nratchet=", nr), func(t *testing.T) {
			ts := newTestStore(t, 4096, nr)
			s := ts.open(t, Options{})
			want := fill(t, s, twoFiles, 20)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for p, b := range want {
				got, err := os.ReadFile(filepath.Join(ts.store, p))
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("%s: real log differs from appends (%v)", p, err)
				}
			}
			sum, probs := ts.verify(t, VerifyOptions{})
			if !sum.OK() || len(probs) != 0 {
				t.Fatalf("clean store: %v %v", sum, probs)
			}
			if sum.OpenBlock {
				t.Fatal("Close left the ratchet block open")
			}
			// Reopen and continue: watermarks survive.
			s = ts.open(t, Options{})
			if s.Recovery() != nil {
				t.Fatalf("clean reopen repaired: %+v", s.Recovery())
			}
			for _, f := range twoFiles {
				if got := s.Watermark(f.ID); got != int64(len(want[f.Path])) {
					t.Fatalf("watermark %d, want %d", got, len(want[f.Path]))
				}
			}
			fill(t, s, twoFiles, 3)
			s.Close()
			sum, probs = ts.verify(t, VerifyOptions{})
			if !sum.OK() {
				t.Fatalf("after reopen: %v %v", sum, probs)
			}
			if want := int64(46 * 2 / 2); sum.Intact < want {
				t.Fatalf("intact %d < %d", sum.Intact, want)
			}
		})
	}
}

func TestAppendRules(t *testing.T) {
	ts := newTestStore(t, 4096, 4)
	s := ts.open(t, Options{})
	defer s.Close()
	f := FileRef{ID: 7, Path: "a.log"}
	if err := s.Append(f, 0, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 2, 4, 100} {
		if err := s.Append(f, off, []byte("x")); !errors.Is(err, ErrOffset) {
			t.Errorf("append at %d: %v, want ErrOffset", off, err)
		}
	}
	if err := s.Append(FileRef{ID: 7, Path: "b.log"}, 3, []byte("x")); !errors.Is(err, ErrFileConflict) {
		t.Errorf("same ID, other path: %v", err)
	}
	if err := s.Append(FileRef{ID: 8, Path: "a.log"}, 0, []byte("x")); !errors.Is(err, ErrFileConflict) {
		t.Errorf("same path, other ID: %v", err)
	}
	for _, p := range []string{"", "/abs", "../up", "a/../b", ".SEALFS.LOG", ".indelible/seal/records", "a//b"} {
		if err := s.Append(FileRef{ID: 9, Path: p}, 0, []byte("x")); !errors.Is(err, ErrBadPath) {
			t.Errorf("path %q: %v, want ErrBadPath", p, err)
		}
	}
	if err := s.Append(FileRef{ID: 10, Path: ".indelible/events.log"}, 0, []byte("event\n")); err != nil {
		t.Errorf("device event log path refused: %v", err)
	}
	if got := s.Watermark(7); got != 3 {
		t.Fatalf("watermark %d after refused appends", got)
	}
}

func TestKeysExhausted(t *testing.T) {
	var logs bytes.Buffer
	ts := newTestStore(t, 5*KeySize, 2) // 5 keys: 10 entries, 2 of them the anchors of the map and time records
	s := ts.open(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	f := FileRef{ID: 5, Path: "x.log"}
	n := 0
	var err error
	for ; n < 20; n++ {
		if err = s.Append(f, s.Watermark(5), []byte("line\n")); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrKeysExhausted) || n != 8 {
		t.Fatalf("after %d appends: %v, want ErrKeysExhausted after 8", n, err)
	}
	if used, total := s.KeyUsage(); used != total || total != 5*KeySize {
		t.Fatalf("KeyUsage %d/%d", used, total)
	}
	if !strings.Contains(logs.String(), "keystream running out") {
		t.Fatalf("no 80%% warning logged:\n%s", logs.String())
	}
	fi, _ := os.Stat(filepath.Join(ts.store, "x.log"))
	if fi.Size() != 40 {
		t.Fatalf("real log has %d bytes; refused appends must write nothing", fi.Size())
	}
	s.Close()
	if sum, probs := ts.verify(t, VerifyOptions{}); !sum.OK() {
		t.Fatal(sum, probs)
	}
}

func TestConcurrentAppenders(t *testing.T) {
	for _, gc := range []bool{false, true} {
		ts := newTestStore(t, 1<<16, 31)
		o := Options{}
		if gc {
			o.GroupCommit = 2e6
		}
		s := ts.open(t, o)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				f := FileRef{ID: uint64(100 + g), Path: fmt.Sprintf("g%d.log", g)}
				for i := 0; i < 50; i++ {
					if err := s.Append(f, s.Watermark(f.ID), logLine(f.Path, i)); err != nil {
						t.Error(err)
						return
					}
				}
			}(g)
		}
		wg.Wait()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		sum, probs := ts.verify(t, VerifyOptions{})
		if !sum.OK() || sum.Intact < 400 {
			t.Fatalf("group=%v: %v %v", gc, sum, probs)
		}
	}
}

func TestCreateRefusesOverwrite(t *testing.T) {
	ts := newTestStore(t, 1024, 0)
	if err := Create(ts.store, ts.dev+"2", ts.aud+"2", 1024, CreateOptions{}); err == nil {
		t.Fatal("Create reused a non-empty store")
	}
	if err := Create(filepath.Join(ts.dir, "s2"), ts.dev, ts.aud+"2", 1024, CreateOptions{}); err == nil {
		t.Fatal("Create overwrote a device keystream")
	}
	if w := KeyPlacementWarning(ts.store, ts.dev, filepath.Join(ts.store, "k")); w == "" {
		t.Fatal("no warning for an auditor key inside the store")
	}
	if w := KeyPlacementWarning(ts.store, ts.dev, ts.aud); w != "" {
		t.Fatalf("warning for a key elsewhere: %s", w)
	}
}

func TestAppendBatch(t *testing.T) {
	ts := newTestStore(t, 4096, 4)
	s := ts.open(t, Options{})
	a, b := FileRef{ID: 1, Path: "a"}, FileRef{ID: 2, Path: "b"}
	err := s.AppendBatch([]AppendOp{{a, 0, []byte("a1\n")}, {b, 0, []byte("b1\n")}, {a, 3, []byte("a2\n")}})
	if err != nil {
		t.Fatal(err)
	}
	err = s.AppendBatch([]AppendOp{{a, 6, []byte("a3\n")}, {b, 99, []byte("bad\n")}, {b, 3, []byte("b2\n")}})
	if !errors.Is(err, ErrOffset) || !strings.Contains(err.Error(), "op 1") {
		t.Fatalf("bad op: %v", err)
	}
	if s.Watermark(1) != 9 || s.Watermark(2) != 3 {
		t.Fatalf("watermarks %d %d: ops before the failure must stay sealed, after it not", s.Watermark(1), s.Watermark(2))
	}
	s.Close()
	if sum, ps := ts.verify(t, VerifyOptions{}); !sum.OK() || sum.Bytes != 12 {
		t.Fatal(sum, ps)
	}
}

// TestRecoveryRepairsAndRecords simulates what a crash leaves behind —
// unacknowledged real-log bytes, a partial entry, an unfinished burn — and
// checks that Open repairs it, seals a repair record, and refuses a store
// whose acknowledged entries are gone.
func TestRecoveryRepairsAndRecords(t *testing.T) {
	ts := newTestStore(t, 4096, 4)
	s := ts.open(t, Options{})
	fill(t, s, twoFiles, 3) // 9 entries (6 appends, 3 anchors): block 2 open, state holds the next key
	sealed := s.next
	// "Crash": the store is never closed. Leave debris of an unfinished append.
	app := filepath.Join(ts.store, "var/log/app.log")
	f, _ := os.OpenFile(app, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("unacknowledged bytes\n"))
	f.Close()
	lf, _ := os.OpenFile(filepath.Join(ts.store, LogName), os.O_WRONLY|os.O_APPEND, 0)
	lf.Write(make([]byte, EntrySize+13))
	lf.Close()
	// Undo the last burn, as if the crash came between state and burn.
	kb, _ := os.ReadFile(ts.dev)
	hdr, _ := ParseKeyHeader(kb, int64(len(kb)))
	hb, _ := KeyHeader{Magic: hdr.Magic, Burnt: hdr.Burnt - KeySize}.MarshalBinary()
	writeAt(t, ts.dev, hb, 0)
	wmBefore := s.Watermark(12)
	s.closeFiles() // drop descriptors without sealing anything more

	var logs bytes.Buffer
	s2, err := Open(ts.store, ts.dev, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	rep := s2.Recovery()
	if rep == nil || rep.Committed != sealed || rep.DroppedEntries != 1 || rep.BurnCompleted != 1 || len(rep.Files) != 1 || rep.Files[0].NewSize != wmBefore {
		t.Fatalf("repair %+v", rep)
	}
	if s2.Watermark(12) != wmBefore {
		t.Fatalf("watermark %d, want %d", s2.Watermark(12), wmBefore)
	}
	if !strings.Contains(logs.String(), "repaired store after a crash") || !strings.Contains(logs.String(), "watermark") {
		t.Fatalf("recovery not logged:\n%s", logs.String())
	}
	fill(t, s2, twoFiles[:1], 2)
	s2.Close()
	sum, ps := ts.verify(t, VerifyOptions{})
	if !sum.OK() {
		t.Fatal(sum, ps)
	}
	rb, _ := os.ReadFile(filepath.Join(ts.store, RecordsName))
	recs, _, err := ParseRecords(rb)
	var repairs int
	for _, r := range recs {
		if r.Type == RecordRepair {
			repairs++
		}
	}
	if err != nil || repairs != 1 {
		t.Fatalf("%d repair records (%v)", repairs, err)
	}

	// Acknowledged entries that vanished are not a crash: Open refuses.
	size := logSize(t, ts)
	os.Truncate(filepath.Join(ts.store, LogName), size-2*EntrySize)
	if _, err := Open(ts.store, ts.dev, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with acknowledged entries missing: %v", err)
	}
}

// TestLayoutSizes pins the on-disk sizes that docs/FORMAT.md and SealFS's
// sealfstypes.h give.
func TestLayoutSizes(t *testing.T) {
	var e Entry
	h, _ := KeyHeader{}.MarshalBinary()
	st := RatchetState{NRatchet: 1}
	for name, got := range map[string][2]int{
		"sealfs_logfile_entry":  {len(e.AppendBinary(nil)), 72},
		"EntrySize":             {EntrySize, 72},
		"sealfs_keyfile_header": {len(h), 16},
		"sealfs_logfile_header": {LogHeaderSize, 8},
		"ratchet state":         {len(st.marshal()), 144},
	} {
		if got[0] != got[1] {
			t.Errorf("%s is %d bytes, want %d", name, got[0], got[1])
		}
	}
}

func TestTimeRecords(t *testing.T) {
	ts := newTestStore(t, 4096, 4)
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	now := t0
	s := ts.open(t, Options{Now: func() time.Time { return now }})
	f := FileRef{ID: 3, Path: "t.log"}
	for _, dt := range []time.Duration{0, 30 * time.Second, 61 * time.Second, 62 * time.Second, 200 * time.Second} {
		now = t0.Add(dt)
		if err := s.Append(f, s.Watermark(3), []byte("x\n")); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	var times []time.Time
	sum, err := Verify(ts.store, VerifyOptions{AuditorKey: ts.aud, OnEntry: func(r EntryResult) {
		if r.Entry.Inode == 3 {
			times = append(times, r.Time)
		}
	}})
	if err != nil || !sum.OK() {
		t.Fatal(sum, err)
	}
	want := []time.Duration{0, 0, 61 * time.Second, 61 * time.Second, 200 * time.Second}
	for i, w := range want {
		if !times[i].Equal(t0.Add(w)) {
			t.Errorf("entry %d dated %v, want %v", i, times[i], t0.Add(w))
		}
	}
}

// auditorEntryKey derives the key of entry i from the auditor keystream,
// as the verifier does (docs/FORMAT.md §4).
func auditorEntryKey(t *testing.T, ts *testStore, nr int, i int64) [KeySize]byte {
	t.Helper()
	kb, err := os.ReadFile(ts.aud)
	if err != nil {
		t.Fatal(err)
	}
	var k [KeySize]byte
	copy(k[:], kb[KeyHeaderSize+i/int64(nr)*KeySize:])
	m := newMAC()
	if nr != 1 {
		m.ratchet(&k, 0, nr)
	}
	for r := int64(1); r <= i%int64(nr); r++ {
		m.ratchet(&k, uint64(r), nr)
	}
	return k
}

// macHoldsNoKey fails unless m holds nothing derived from a key: pads,
// last result and scratch zero, digests as new.
func macHoldsNoKey(t *testing.T, what string, m *mac) {
	t.Helper()
	fresh := sha256.Sum256(nil)
	if m.ipad != [sha256.BlockSize]byte{} || m.opad != [sha256.BlockSize]byte{} || m.sum != [KeySize]byte{} ||
		m.scratch != [entryHeadSize]byte{} || !bytes.Equal(m.inner.Sum(nil), fresh[:]) || !bytes.Equal(m.outer.Sum(nil), fresh[:]) {
		t.Errorf("%s: the MAC still holds key material", what)
	}
}

// An attacker who takes a running device reads its memory too: once an
// entry is acknowledged, no key that seals it (or its side records) may
// remain in the store's MACs, only the next entry's key. The MACs of the
// parallel sealers (sealJob.seal) are dropped: they must hold no key
// either.
func TestStoreForgetsKeys(t *testing.T) {
	const nr = 31
	ts := newTestStore(t, 1<<12, nr)
	s := ts.open(t, Options{StampEvery: time.Nanosecond}) // a time record with every append
	defer s.Close()
	for i := range 5 {
		f := twoFiles[i%2] // the first append of each file seals a map record too
		if err := s.Append(f, s.Watermark(f.ID), logLine(f.Path, i)); err != nil {
			t.Fatal(err)
		}
		last := s.durable - 1
		k := auditorEntryKey(t, ts, nr, last)
		var ik, ok [KeySize]byte
		for j := range ik {
			ik[j], ok[j] = s.m.ipad[j]^0x36, s.m.opad[j]^0x5c
		}
		if ik == k || ok == k {
			t.Errorf("append %d: the store's MAC holds the key of acknowledged entry %d", i, last)
		}
		macHoldsNoKey(t, fmt.Sprintf("append %d", i), s.m)
	}
	ops := make([]AppendOp, 16) // enough entries for the side-by-side MAC
	for i := range ops {
		f := twoFiles[i%2]
		ops[i] = AppendOp{File: f, Off: s.Watermark(f.ID) + int64(i/2*len(logLine(f.Path, 0))), Data: logLine(f.Path, i)}
	}
	if err := s.AppendBatch(ops); err != nil {
		t.Fatal(err)
	}
	macHoldsNoKey(t, "batch", s.m)

	j := sealJob{e: Entry{Inode: 12, Count: 3}, key: auditorEntryKey(t, ts, nr, 0), data: []byte("abc")}
	m := newMAC()
	j.seal(m)
	macHoldsNoKey(t, "sealJob.seal", m)
	if j.key != [KeySize]byte{} {
		t.Error("sealJob.seal kept the job's key")
	}
}
