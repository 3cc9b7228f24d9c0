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
	ts := newTestStore(t, 5*KeySize, 2) // 5 keys: 10 entries
	s := ts.open(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	f := FileRef{ID: 5, Path: "x.log"}
	n := 0
	var err error
	for ; n < 20; n++ {
		if err = s.Append(f, s.Watermark(5), []byte("line\n")); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrKeysExhausted) || n != 10 {
		t.Fatalf("after %d appends: %v, want ErrKeysExhausted after 10", n, err)
	}
	if used, total := s.KeyUsage(); used != total || total != 5*KeySize {
		t.Fatalf("KeyUsage %d/%d", used, total)
	}
	if !strings.Contains(logs.String(), "keystream running out") {
		t.Fatalf("no 80%% warning logged:\n%s", logs.String())
	}
	fi, _ := os.Stat(filepath.Join(ts.store, "x.log"))
	if fi.Size() != 50 {
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
