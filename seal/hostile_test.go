package seal

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// A tampered log whose entries are nearly all bad keeps what waits for
// queued MACs bounded: one genuine entry, then all-zero entries, each a
// problem that used to wait for the next MAC (there is none) until the
// end: memory about ten times the log.
func TestVerifyBoundsWaitingReports(t *testing.T) {
	if !vectorMAC {
		t.Skip("MACs are queued only for the 16-lane kernel, which this CPU lacks")
	}
	ts := newTestStore(t, 1<<20, 31)
	s := ts.open(t, Options{})
	fill(t, s, twoFiles[:1], 1)
	s.Close()
	f, err := os.OpenFile(filepath.Join(ts.store, LogName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3 * maxLater
	if _, err := f.Write(make([]byte, n*EntrySize)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	problems := 0
	v := &verifier{dir: ts.store, m: newMAC(), files: map[uint64]*vfile{}, paths: map[string]uint64{},
		o: VerifyOptions{AuditorKey: ts.aud, OnProblem: func(Problem) { problems++ }}}
	most := 0
	v.o.Progress = func(done, total int64) { most = max(most, len(v.later)) }
	v.o.OnEntry = func(EntryResult) { most = max(most, len(v.later)) }
	sum, err := v.run()
	v.closeFiles()
	if err != nil {
		t.Fatal(err)
	}
	if most > maxLater {
		t.Errorf("%d reports waited at once (bound %d)", most, maxLater)
	}
	if problems < n || sum.Problems() < n {
		t.Errorf("%d problems streamed, %d counted, for %d bad entries", problems, sum.Problems(), n)
	}
}

// A FIFO where a real log should be is reported as a missing file at once:
// opening it used to wait for a writer forever.
func TestVerifyRefusesFIFO(t *testing.T) {
	ts := newTestStore(t, 1<<16, 31)
	s := ts.open(t, Options{})
	fill(t, s, twoFiles[:1], 2)
	s.Close()
	p := filepath.Join(ts.store, "var/log/app.log")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan *Summary, 1)
	go func() {
		sum, _ := Verify(ts.store, VerifyOptions{AuditorKey: ts.aud})
		done <- sum
	}()
	select {
	case sum := <-done:
		if sum == nil || sum.OK() {
			t.Fatalf("a FIFO for a real log verified: %+v", sum)
		}
	case <-time.After(10 * time.Second):
		// Let the blocked open return so that the test can end.
		if w, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		t.Fatal("Verify waited 10 s opening a FIFO")
	}
}

// Hint files (params, the device key's ratchet state) are read up to the
// size they may have, not whole: two 1 GiB sparse files used to make Verify
// allocate 4 GiB. Oversized, they are ignored like missing ones.
func TestVerifyBoundsHintFiles(t *testing.T) {
	ts := newTestStore(t, 1<<16, 31)
	s := ts.open(t, Options{})
	fill(t, s, twoFiles[:1], 2)
	s.Close()
	for _, p := range []string{filepath.Join(ts.store, ParamsName), ts.dev + StateSuffix} {
		if err := os.Truncate(p, 1<<30); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	sum, err := Verify(ts.store, VerifyOptions{AuditorKey: ts.aud, DeviceKey: ts.dev})
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
		t.Errorf("Verify allocated %d MiB", n>>20)
	}
	// Both are hints: without them the ratchet parameter comes from the log
	// and truncation from the burnt keys, and the sealed bytes still verify.
	if err != nil || !sum.OK() {
		t.Errorf("Verify: %v, %+v", err, sum)
	}
}

// Entry counts that add up past 2^63 for one file are corruption: the
// running total used to wrap, and Open cut the real log to what was left
// (here 5 bytes, reported as a crash repair).
func TestOpenRefusesWrappingWatermark(t *testing.T) {
	defer func(n uint64) { maxEntryCount = n }(maxEntryCount)
	maxEntryCount = 1 << 62 // so that four entries wrap to 0
	const nr = 31
	ts := newTestStore(t, 1<<16, nr)
	s := ts.open(t, Options{})
	fill(t, s, twoFiles[:1], 1) // the map record of file 12, bound to entry 0
	s.Close()
	var log []byte
	var wm uint64
	const n = 5
	for i, count := range []uint64{1 << 62, 1 << 62, 1 << 62, 1 << 62, 5} {
		roff, koff := expectedPlace(int64(i), nr)
		e := Entry{RatchetOffset: roff, Inode: 12, Offset: wm, Count: count, KeyOffset: koff}
		log = e.AppendBinary(log)
		wm += count
	}
	lf, err := os.OpenFile(filepath.Join(ts.store, LogName), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lf.WriteAt(log, LogHeaderSize); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	// A device that agrees: keys burnt for n entries, n committed.
	burnt := (&Store{nratchet: nr}).keysFor(n)
	kf, err := os.OpenFile(ts.dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hb [KeyHeaderSize]byte
	if _, err := kf.ReadAt(hb[:], 0); err != nil {
		t.Fatal(err)
	}
	magic := binary.LittleEndian.Uint64(hb[:])
	for off := int64(KeyHeaderSize); off < burnt; off += KeySize {
		k := burntKey(magic, (off-KeyHeaderSize)/KeySize)
		if _, err := kf.WriteAt(k[:], off); err != nil {
			t.Fatal(err)
		}
	}
	hdr, _ := KeyHeader{Magic: magic, Burnt: uint64(burnt)}.MarshalBinary()
	if _, err := kf.WriteAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	kf.Close()
	st := RatchetState{KeyMagic: magic, NRatchet: nr, Committed: n, Target: n, BurnFrom: burnt, Version: 2}
	if err := os.WriteFile(ts.dev+StateSuffix, st.marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(ts.store, ts.dev, Options{}); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open of entries summing past 2^63: %v, want ErrCorrupt", err)
	}
}
