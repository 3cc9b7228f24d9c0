//go:build linux

package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The watch retires a mark when the store's write reaches it, including a
// real log whose directory the store creates after the watch started, and
// a mark the real log already covers when it is added.
func TestWatchRetiresMarks(t *testing.T) {
	store := t.TempDir()
	tr := newLagTracker(store, []string{"log/a.log", "b.log"})
	w, err := newRealLogWatch(tr)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()

	tr.add(0, 10, time.Now())
	tr.add(1, 3, time.Now())
	waitFor := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for tr.left() != want && time.Now().Before(deadline) {
			if err := w.wait(100 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		if got := tr.left(); got != want {
			t.Fatalf("%d marks pending, want %d", got, want)
		}
	}
	appendTo := func(p, data string) {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(store, p), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}

	appendTo("b.log", "abc")
	waitFor(1)
	if err := os.Mkdir(filepath.Join(store, "log"), 0o755); err != nil {
		t.Fatal(err)
	}
	appendTo("log/a.log", "12345")
	w.wait(50 * time.Millisecond)
	if tr.left() != 1 {
		t.Fatalf("a mark past the real log's end was retired")
	}
	appendTo("log/a.log", "67890")
	waitFor(0)
	if len(tr.lags) != 2 {
		t.Fatalf("%d lags, want 2", len(tr.lags))
	}

	tr.add(1, 2, time.Now()) // already covered: retired without a write
	if tr.left() != 0 || len(tr.lags) != 3 {
		t.Fatalf("covered mark: %d pending, %d lags", tr.left(), len(tr.lags))
	}
}
