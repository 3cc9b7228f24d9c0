package seal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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

// The params and the device key's ratchet state are read up to the size
// they may have, not whole: two 1 GiB sparse files used to make Verify
// allocate 4 GiB. Oversized params are ignored like missing ones (a hint:
// nratchet then comes from the log); an oversized state is reported, as a
// missing one is in a store indelible made (it alone reveals a log cut
// inside the last ratchet block).
func TestVerifyBoundsHintFiles(t *testing.T) {
	ts := newTestStore(t, 1<<16, 31)
	s := ts.open(t, Options{})
	fill(t, s, twoFiles[:1], 2)
	s.Close()
	verify := func() (*Summary, []Problem) {
		t.Helper()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sum, ps := ts.verify(t, VerifyOptions{})
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
			t.Errorf("Verify allocated %d MiB", n>>20)
		}
		return sum, ps
	}
	if err := os.Truncate(filepath.Join(ts.store, ParamsName), 1<<30); err != nil {
		t.Fatal(err)
	}
	if sum, ps := verify(); !sum.OK() {
		t.Errorf("oversized params: %v %v", sum, ps)
	}
	if err := os.Truncate(ts.dev+StateSuffix, 1<<30); err != nil {
		t.Fatal(err)
	}
	if sum, ps := verify(); len(ps) != 1 || ps[0].Kind != ProblemKeystream || !strings.Contains(ps[0].Msg, "ratchet state") || sum.Intact != 31 {
		t.Errorf("oversized params and state: %v %v", sum, ps)
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

// A .SEALFS.LOG extended sparsely far past the auditor keystream counts,
// by its size, tens of millions of entries that no key seals: one problem
// covers them and they are not walked (the verifier used to examine each,
// for hours on a terabyte-sized log).
func TestVerifySparseLogBeyondKeystream(t *testing.T) {
	ts, _ := tamperStore(t)
	keyEntries := int64(4096 / KeySize * tamperNR) // what the keystream can seal
	const n = 1 << 26                              // entries: a 4.5 GiB log
	if err := os.Truncate(filepath.Join(ts.store, LogName), entryPos(n)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sum, ps := ts.verify(t, VerifyOptions{OnEntry: func(r EntryResult) {
		if r.Index >= keyEntries {
			t.Fatalf("entry %d beyond the keystream (%d entries) examined", r.Index, keyEntries)
		}
	}})
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Verify took %v", d)
	}
	var beyond []Problem
	for _, p := range ps {
		if strings.Contains(p.Msg, "beyond the auditor keystream") {
			beyond = append(beyond, p)
		}
	}
	if len(beyond) != 1 {
		t.Fatalf("%d problems say entries lie beyond the keystream, want 1: %v", len(beyond), beyond)
	}
	p := beyond[0]
	rest := n - keyEntries
	if p.Kind != ProblemKeystream || p.Entry != keyEntries || p.Off != entryPos(keyEntries) || p.Len != rest*EntrySize ||
		!strings.Contains(p.Msg, fmt.Sprint(keyEntries)) || !strings.Contains(p.Msg, fmt.Sprintf("(%d entries)", rest)) {
		t.Errorf("problem %v does not cover entries %d to %d", p, keyEntries, n-1)
	}
	if sum.OK() || sum.Entries != keyEntries {
		t.Errorf("summary %v, %d entries examined", sum, sum.Entries)
	}
}
