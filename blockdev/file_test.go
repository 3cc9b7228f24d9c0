package blockdev

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

func newFile(t testing.TB, size int64) *File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestFileRoundTrip(t *testing.T) {
	d := newFile(t, 1<<20)
	if d.Size() != 1<<20 {
		t.Fatalf("size %d", d.Size())
	}
	want := bytes.Repeat([]byte("indelible"), 1000)
	if _, err := d.WriteAt(want, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteFUA(d, want[:10], 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
}

// Once the host flushes, writes of more than one block start their
// writeback at once, off the request path, the ranges that come together
// in one call; smaller ones (metadata the host rewrites) wait for the
// FLUSH; a backing file that refuses is not asked again, and the writes
// themselves never fail for it.
func TestFileStartsWritebackEarly(t *testing.T) {
	type call struct{ off, n int64 }
	var mu sync.Mutex
	var calls []call
	fail := false
	// While hold is set, the hook tells entered it was called, then waits
	// for hold to close.
	var hold, entered chan struct{}
	real := startWriteback
	startWriteback = func(f *os.File, off, n int64) error {
		mu.Lock()
		calls = append(calls, call{off, n})
		h, e, err := hold, entered, error(nil)
		if fail {
			err = errors.New("refused")
		}
		mu.Unlock()
		if h != nil {
			e <- struct{}{}
			<-h
		}
		return err
	}
	t.Cleanup(func() { startWriteback = real })
	d := newFile(t, 1<<20)
	write := func(n int, off int64) {
		t.Helper()
		if _, err := d.WriteAt(bytes.Repeat([]byte{'x'}, n), off); err != nil {
			t.Fatal(err)
		}
	}
	// got waits until every range queued so far has been handed over.
	got := func() []call {
		d.wb.settle()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(calls)
	}
	write(64<<10, 8192)
	if c := got(); len(c) != 0 {
		t.Fatalf("writeback started for %v before any FLUSH: a host that never flushes is served by the page cache", c)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	write(4096, 0)
	write(64<<10, 8192)
	write(100, 0)
	if c, want := got(), []call{{8192, 64 << 10}}; !slices.Equal(c, want) {
		t.Fatalf("writeback started for %v, want %v", c, want)
	}
	// Ranges queued while the goroutine is busy are written back by one
	// call spanning them, and the request never waits for it.
	h := make(chan struct{})
	mu.Lock()
	hold, entered = h, make(chan struct{})
	mu.Unlock()
	write(8192, 12*65536)
	<-entered
	mu.Lock()
	hold = nil
	mu.Unlock()
	write(8192, 3*65536)
	write(8192, 3*65536+8192)
	write(16384, 3*65536-16384)
	write(8192, 6*65536)
	close(h)
	want := []call{{8192, 64 << 10}, {12 * 65536, 8192}, {3*65536 - 16384, 3*65536 + 16384 + 8192}}
	if c := got(); !slices.Equal(c, want) {
		t.Fatalf("writeback started for %v, want %v", c, want)
	}
	n := len(got())
	d.lastFlush.Add(-int64(earlyWritebackWhile)) // the host stopped flushing
	write(64<<10, 8192)
	if c := got(); len(c) != n {
		t.Fatalf("writeback started %d times, want %d: %s after the last FLUSH it is the page cache's again", len(c), n, earlyWritebackWhile)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	write(8192, 0)
	got()
	write(8192, 65536)
	if c := got(); len(c) != n+1 {
		t.Fatalf("writeback asked %d times, want %d: a refusing file is asked again", len(c), n+1)
	}
	back := make([]byte, 8192)
	if _, err := d.ReadAt(back, 65536); err != nil || !bytes.Equal(back, bytes.Repeat([]byte{'x'}, 8192)) {
		t.Fatalf("read back after a refused writeback: %v", err)
	}
}

func TestFileZeroesAndTrim(t *testing.T) {
	for _, punch := range []bool{false, true} {
		d := newFile(t, 1<<20)
		ones := bytes.Repeat([]byte{0xff}, 64<<10)
		if _, err := d.WriteAt(ones, 0); err != nil {
			t.Fatal(err)
		}
		if err := d.WriteZeroes(4096, 8192, punch); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 64<<10)
		d.ReadAt(got, 0)
		for i, b := range got {
			want := byte(0xff)
			if i >= 4096 && i < 4096+8192 {
				want = 0
			}
			if b != want {
				t.Fatalf("punch=%v: byte %d = %#x, want %#x", punch, i, b, want)
			}
		}
		if err := d.Trim(0, 4096); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFileBounds(t *testing.T) {
	d := newFile(t, 8192)
	if _, err := d.WriteAt(make([]byte, 10), 8190); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("write past end: %v", err)
	}
	if _, err := d.ReadAt(make([]byte, 10), -1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("read at -1: %v", err)
	}
	if err := d.Trim(8000, 500); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("trim past end: %v", err)
	}
}

func TestFileReadOnly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ro")
	os.WriteFile(p, make([]byte, 4096), 0o600)
	d, err := OpenFile(p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write on read-only: %v", err)
	}
}

func TestFaultyInjects(t *testing.T) {
	d := &Faulty{Device: newFile(t, 8192), TornWrites: true}
	d.Fail = func(op Op, off, length int64) error {
		if op == OpWrite && off == 0 {
			return ErrInjected
		}
		return nil
	}
	if _, err := d.WriteAt([]byte{1, 2, 3, 4}, 0); !errors.Is(err, ErrInjected) {
		t.Fatalf("want injected fault, got %v", err)
	}
	got := make([]byte, 4)
	d.ReadAt(got, 0)
	if !bytes.Equal(got, []byte{1, 2, 0, 0}) {
		t.Fatalf("torn write left %v", got)
	}
	if d.Count(OpWrite) != 1 || d.Count(OpRead) != 1 {
		t.Fatalf("counts: write %d read %d", d.Count(OpWrite), d.Count(OpRead))
	}
}
