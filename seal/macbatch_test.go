package seal

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMACBatchMatchesMAC(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	m := newMAC()
	var b macBatch
	for _, n := range []int{1, 8, 16, 17, 40} {
		jobs := make([]macJob, n)
		heads := make([][entryHeadSize]byte, n)
		for i := range jobs {
			for k := range jobs[i].key {
				jobs[i].key[k] = byte(r.Uint32())
			}
			e := Entry{RatchetOffset: r.Uint64(), Inode: r.Uint64(), Offset: r.Uint64(), Count: r.Uint64(), KeyOffset: r.Uint64()}
			jobs[i].head = entryHead(&heads[i], &e)
			jobs[i].data = make([]byte, []int{0, 1, 24, 25, 88, 4096, 5000, 70000}[r.IntN(8)])
			for k := range jobs[i].data {
				jobs[i].data[k] = byte(r.Uint32())
			}
		}
		want := make([][KeySize]byte, n)
		for i := range jobs {
			key := jobs[i].key
			m.reset(&key)
			m.Write(jobs[i].head)
			m.Write(jobs[i].data)
			want[i] = *m.final()
		}
		b.compute(jobs)
		for i := range jobs {
			if jobs[i].sum != want[i] {
				t.Fatalf("%d jobs: job %d (%d bytes): batch %x, mac %x", n, i, len(jobs[i].data), jobs[i].sum, want[i])
			}
		}
	}
}

// TestVerifySideBySideSameReport verifies one tampered store with entry
// MACs computed side by side and one at a time: both report the same
// problems and entries, in the order of the log, although the side-by-side
// verifier learns each MAC's outcome only when a batch is flushed.
func TestVerifySideBySideSameReport(t *testing.T) {
	ts := newTestStore(t, 4096, tamperNR)
	s := ts.open(t, Options{})
	want := fill(t, s, twoFiles, 150) // 300 appends: several flushes of 64
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lst, err := os.Stat(filepath.Join(ts.store, LogName))
	if err != nil {
		t.Fatal(err)
	}
	nEntries := int((lst.Size() - LogHeaderSize) / EntrySize) // the appends', the anchors' and a filler's
	app := filepath.Join(ts.store, "var/log/app.log")
	line := len(logLine("var/log/app.log", 0))
	// Line 50 of app.log is entry 103 (after 3 anchors, files alternate),
	// altered just before the moved entry below, in the same batch.
	for _, off := range []int{10, 50*line + 5, len(want["var/log/app.log"]) - 3} {
		writeAt(t, app, []byte{want["var/log/app.log"][off] ^ 1}, int64(off))
	}
	// A gap too: an entry of auth.log moved over (reported before its MAC).
	e := readEntry(t, ts, 104)
	writeAt(t, filepath.Join(ts.store, LogName), e, entryPos(106))

	type run struct {
		problems []string
		entries  []string
	}
	verify := func(vec bool, o VerifyOptions) run {
		defer func(old bool) { vectorMAC = old }(vectorMAC)
		vectorMAC = vec
		var r run
		o.OnEntry = func(res EntryResult) {
			r.entries = append(r.entries, fmt.Sprintf("%d ok=%v why=%q", res.Index, res.OK, res.Why))
		}
		sum, ps := ts.verify(t, o)
		for _, p := range ps {
			r.problems = append(r.problems, p.String())
		}
		r.problems = append(r.problems, sum.String())
		return r
	}
	if !vectorMAC {
		t.Skip("no 16-lane SHA-256 kernel on this CPU: there is only one way to verify")
	}
	same := func(t *testing.T, o VerifyOptions) run {
		one, many := verify(false, o), verify(true, o)
		if !slices.Equal(one.problems, many.problems) {
			t.Fatalf("problems differ:\none at a time: %q\nside by side: %q", one.problems, many.problems)
		}
		if !slices.Equal(one.entries, many.entries) {
			t.Fatalf("entries differ (%d vs %d reported)", len(one.entries), len(many.entries))
		}
		return many
	}
	t.Run("all", func(t *testing.T) {
		r := same(t, VerifyOptions{})
		if len(r.problems) < 4 {
			t.Fatalf("tampering found too little: %q", r.problems)
		}
		if len(r.entries) != nEntries {
			t.Fatalf("%d entries reported, want %d", len(r.entries), nEntries)
		}
		for i, s := range r.entries {
			if !strings.HasPrefix(s, fmt.Sprint(i)+" ") {
				t.Fatalf("entry %d reported as %q: out of order", i, s)
			}
		}
	})
	t.Run("range", func(t *testing.T) {
		r := same(t, VerifyOptions{File: "var/log/app.log", Range: &Range{Off: 40 * int64(line), Len: 30 * int64(line)}})
		if len(r.entries) != 30 {
			t.Fatalf("%d entries reported for 30 lines: %q", len(r.entries), r.entries)
		}
	})
	t.Run("short auditor key", func(t *testing.T) {
		// Keys for 25 ratchet blocks of 4 entries: entries from 100 on lie
		// beyond the auditor keystream.
		b, err := os.ReadFile(ts.aud)
		if err != nil {
			t.Fatal(err)
		}
		short := filepath.Join(t.TempDir(), "short.key")
		if err := os.WriteFile(short, b[:16+25*KeySize], 0o600); err != nil {
			t.Fatal(err)
		}
		defer func(old string) { ts.aud = old }(ts.aud)
		ts.aud = short
		r := same(t, VerifyOptions{})
		if !slices.ContainsFunc(r.problems, func(p string) bool { return strings.Contains(p, "entry 100") && strings.Contains(p, "keystream") }) {
			t.Fatalf("no keystream problem at entry 100: %q", r.problems)
		}
	})
}

// TestVerifyLogShrinksUnderVerifier truncates a real log while its entries
// are queued for side-by-side MACs (their bytes still mapped): reading them
// faults, and only that log's entries fail; the other log verifies.
func TestVerifyLogShrinksUnderVerifier(t *testing.T) {
	if !vectorMAC {
		t.Skip("no 16-lane SHA-256 kernel on this CPU")
	}
	ts := newTestStore(t, 4096, tamperNR)
	s := ts.open(t, Options{})
	fill(t, s, twoFiles, 150)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(ts.store, "var/log/app.log")
	bad := map[string]int{}
	truncated := false
	sum, ps := ts.verify(t, VerifyOptions{OnEntry: func(res EntryResult) {
		// Entries are reported when their batch of MACs is done; the
		// next batch is queued (and mapped) by then.
		if !truncated {
			if err := os.Truncate(app, 0); err != nil {
				t.Fatal(err)
			}
			truncated = true
		}
		if !res.OK {
			bad[res.Path]++
		}
	}})
	if bad["auth.log"] != 0 || bad["var/log/app.log"] == 0 {
		t.Fatalf("failed entries per log: %v; problems: %v", bad, ps)
	}
	if sum.OK() {
		t.Fatalf("summary OK after a real log was truncated: %v", sum)
	}
}
