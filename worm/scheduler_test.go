package worm

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/seal"
)

// In data=ordered the margin runs from when a length became coherent, not
// from the file's last write: a host that never stops appending must still
// see its appends sealed (I3).
func TestOrderedMarginWhileHostKeepsAppending(t *testing.T) {
	r := newRig(t, ResponseReadOnly)
	r.dev.mu.Lock()
	r.eng.journalled = true
	r.dev.mu.Unlock()
	r.appendBytes(t, []byte("first\n"))
	r.waitPass(t) // the pass notes the coherent length
	for i := 0; i < 4; i++ {
		r.clk.add(40 * time.Millisecond)
		r.appendBytes(t, []byte("more\n")) // touches the file: idle stays 0
		r.waitPass(t)
	}
	// 160 ms since "first\n" became coherent, 0 since the last write.
	waitSealed(t, r, 6)
	if got := string(r.sealer.get(12)); !strings.HasPrefix(got, "first\n") {
		t.Fatalf("sealed %q", got)
	}
	// The later appends follow once they have been coherent for the margin.
	r.clk.add(150 * time.Millisecond)
	waitSealed(t, r, 6+4*5)
}

// A coherent length is never sealed before the margin has passed since the
// device first saw it, however long the file was quiet before.
func TestOrderedMarginCountsFromCoherence(t *testing.T) {
	r := newRig(t, ResponseReadOnly)
	r.dev.mu.Lock()
	r.eng.journalled = true
	r.dev.mu.Unlock()
	r.clk.add(10 * time.Second) // the file has been idle for long
	r.appendBytes(t, []byte("late\n"))
	r.waitPass(t)
	if n := len(r.sealer.get(12)); n != 0 {
		t.Fatalf("sealed %d bytes before the ordered margin", n)
	}
	r.clk.add(100 * time.Millisecond)
	waitSealed(t, r, 5)
}

func TestNoteCoherentHistory(t *testing.T) {
	d := &Device{coherence: map[revfs.FileID][]cohMark{}}
	d.cfg.Commit.OrderedMargin.Duration = 100 * time.Millisecond
	t0 := time.Unix(1700000000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	steps := []struct {
		ms        int
		coherent  int64
		wantLimit int64
	}{
		{0, 10, 0},
		{50, 20, 0},
		{99, 30, 0},
		{100, 30, 10},
		{149, 40, 10},
		{150, 40, 20},
		{199, 40, 30}, // 30 was first seen at 99
		{260, 5, 0},   // the prefix shrank: longer marks are void
		{360, 5, 5},
	}
	for _, s := range steps {
		if got := d.noteCoherent(7, s.coherent, at(s.ms)); got != s.wantLimit {
			t.Fatalf("at %d ms with %d coherent: limit %d, want %d", s.ms, s.coherent, got, s.wantLimit)
		}
	}
	// Continuous growth keeps the history bounded.
	for ms := 400; ms < 5000; ms++ {
		d.noteCoherent(7, int64(ms), at(ms))
		if n := len(d.coherence[7]); n > maxCohMarks {
			t.Fatalf("history grew to %d marks", n)
		}
	}
}

// storeSealer.AppendBatch reports how many ops are sealed when one fails,
// so that the scheduler retries exactly the rest.
func TestStoreSealerBatchPartialFailure(t *testing.T) {
	dir := t.TempDir()
	storeDir, devKey := filepath.Join(dir, "store"), filepath.Join(dir, "device.key")
	if err := seal.Create(storeDir, devKey, filepath.Join(dir, "auditor.key"), 1<<16, seal.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := seal.Open(storeDir, devKey, seal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := storeSealer{st}
	done, err := s.AppendBatch([]SealOp{
		{ID: 12, Path: "a.log", Off: 0, Data: []byte("aaaa")},
		{ID: 13, Path: "b.log", Off: 0, Data: []byte("bb")},
	})
	if err != nil || done != 2 {
		t.Fatalf("batch: done %d, err %v", done, err)
	}
	done, err = s.AppendBatch([]SealOp{
		{ID: 12, Path: "a.log", Off: 4, Data: []byte("AAAA")},
		{ID: 13, Path: "b.log", Off: 1, Data: []byte("BB")}, // not the watermark
		{ID: 14, Path: "c.log", Off: 0, Data: []byte("c")},
	})
	if !errors.Is(err, seal.ErrOffset) || done != 1 {
		t.Fatalf("batch with a bad op: done %d, err %v; want 1 and ErrOffset", done, err)
	}
	if a, b := st.Watermark(12), st.Watermark(13); a != 8 || b != 2 {
		t.Fatalf("watermarks after the partial batch: %d, %d; want 8, 2", a, b)
	}
}

// Seal batches start at most once per commit.seal_interval: bytes that
// become ready meanwhile wait for the interval (on the real clock) and are
// sealed together; with 0 they are sealed as soon as they are ready.
func TestSealInterval(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		held     bool // the second append must wait for the interval
	}{
		{400 * time.Millisecond, true},
		{0, false},
	} {
		t.Run(tc.interval.String(), func(t *testing.T) {
			r := newRigWith(t, ResponseReadOnly, nil, func(c *Config) { c.Commit.SealInterval.Duration = tc.interval })
			r.dev.mu.Lock()
			r.eng.journalled, r.eng.dataJournal = true, true // sealed as soon as coherent
			r.dev.mu.Unlock()
			start := time.Now()
			r.appendBytes(t, []byte("first\n"))
			waitSealed(t, r, 6) // the first batch does not wait
			r.appendBytes(t, []byte("second\n"))
			r.appendBytes(t, []byte("third\n"))
			if tc.held {
				time.Sleep(100 * time.Millisecond)
				if n := len(r.sealer.get(12)); n != 6 && time.Since(start) < tc.interval {
					t.Fatalf("%d bytes sealed within the seal interval, want 6", n)
				}
			}
			waitSealed(t, r, 19)
			took := time.Since(start)
			if tc.held && took < tc.interval {
				t.Fatalf("the second batch was sealed %v after the first began, before the %v interval", took, tc.interval)
			}
			if !tc.held && took > 2*time.Second {
				t.Fatalf("without an interval the second batch took %v", took)
			}
		})
	}
}

// A pass bounded by the read buffer leaves ready bytes behind; they are
// sealed as soon as its batch is done, not a seal interval later.
func TestSealBacklogSkipsInterval(t *testing.T) {
	chunk, pass := maxSealChunk, maxPassBytes
	maxSealChunk, maxPassBytes = 8, 8
	t.Cleanup(func() { maxSealChunk, maxPassBytes = chunk, pass })
	const interval = 400 * time.Millisecond
	r := newRigWith(t, ResponseReadOnly, nil, func(c *Config) { c.Commit.SealInterval.Duration = interval })
	r.dev.mu.Lock()
	r.eng.journalled, r.eng.dataJournal = true, true // sealed as soon as coherent
	r.dev.mu.Unlock()
	start := time.Now()
	r.appendBytes(t, []byte("0123456789abcdefghijklmnopqrstuvwxyz\n")) // five passes' worth
	waitSealed(t, r, 37)
	if took := time.Since(start); took >= interval {
		t.Fatalf("a backlog of five bounded passes took %v to seal: it waited for the %v interval", took, interval)
	}
}

// A seal interval over a second is refused: it would dominate every mode's
// seal lag.
func TestSealIntervalBound(t *testing.T) {
	c := DefaultConfig()
	c.Protected = []Protected{{Path: "a.log", Inode: 12}}
	if c.Commit.SealInterval.Duration != 50*time.Millisecond {
		t.Fatalf("default seal interval %v, want 50ms", c.Commit.SealInterval.Duration)
	}
	c.Commit.SealInterval.Duration = 2 * time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "seal_interval") {
		t.Fatalf("Validate: %v, want a seal_interval error", err)
	}
}
