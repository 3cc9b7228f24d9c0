package worm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/revfs"
)

// scriptedEngine is a minimal revfs.Engine for testing the device core's
// policy and scheduling in isolation: one protected file whose data lives in
// blocks [dataStart, dataStart+dataLen) of the image, whose size is set by the
// test, and whose committed bytes may not change. The real engines are tested
// against the kernel in their own packages and in tests/kernel.
type scriptedEngine struct {
	mu                       sync.Mutex
	img                      blockdev.Device
	dataStart, dataLen       int64
	size, coherent           int64
	committed                int64
	journalled, dataJournal  bool
	lastTouch                time.Time
	now                      func() time.Time
	wrote, discarded, flushd int
}

func (e *scriptedEngine) Watches(off, n int64) bool {
	return off < e.dataStart+e.dataLen && off+n > e.dataStart
}

func (e *scriptedEngine) CheckWrite(off int64, p []byte) []revfs.Violation {
	lo, hi := max(off, e.dataStart), min(off+int64(len(p)), e.dataStart+e.committed)
	if hi <= lo {
		return nil
	}
	old := make([]byte, hi-lo)
	e.img.ReadAt(old, lo)
	if bytes.Equal(old, p[lo-off:hi-off]) {
		return nil
	}
	return []revfs.Violation{{Kind: revfs.KindDataChanged, File: 12, Off: lo, Len: hi - lo, Detail: "test"}}
}

func (e *scriptedEngine) Wrote(off int64, p []byte) {
	e.wrote++
	if e.Watches(off, int64(len(p))) {
		e.lastTouch = e.now()
	}
}
func (e *scriptedEngine) CheckDiscard(off, n int64) []revfs.Violation {
	if off < e.dataStart+e.committed && off+n > e.dataStart {
		return []revfs.Violation{{Kind: revfs.KindDiscard, File: 12, Off: off, Len: n}}
	}
	return nil
}
func (e *scriptedEngine) Discarded(off, n int64) { e.discarded++ }
func (e *scriptedEngine) Flushed()               { e.flushd++ }
func (e *scriptedEngine) Files() []revfs.FileState {
	return []revfs.FileState{{ID: 12, Size: e.size, Coherent: e.coherent, Journalled: e.journalled,
		DataJournalled: e.dataJournal, LastTouch: e.lastTouch}}
}
func (e *scriptedEngine) ReadFile(id revfs.FileID, p []byte, off int64) error {
	if off+int64(len(p)) > e.coherent {
		return errors.New("beyond coherent")
	}
	_, err := e.img.ReadAt(p, e.dataStart+off)
	return err
}
func (e *scriptedEngine) SetCommitted(id revfs.FileID, n int64) { e.committed = n }

var _ revfs.Engine = (*scriptedEngine)(nil)

// memSealer keeps sealed bytes in memory and can be made to fail.
type memSealer struct {
	mu   sync.Mutex
	logs map[uint64][]byte
	fail error
}

func (s *memSealer) Append(id uint64, path string, off int64, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if int64(len(s.logs[id])) != off {
		return fmt.Errorf("append at %d, watermark %d", off, len(s.logs[id]))
	}
	s.logs[id] = append(s.logs[id], data...)
	return nil
}

func (s *memSealer) Watermark(id uint64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.logs[id]))
}

func (s *memSealer) get(id uint64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.logs[id]...)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type rig struct {
	dev    *Device
	eng    *scriptedEngine
	sealer *memSealer
	clk    *clock
	img    *blockdev.File
}

func newRig(t *testing.T, resp Response) *rig { return newRigWith(t, resp, nil, nil) }

// newRigWith builds a rig whose engine is wrap(the scripted engine) when
// wrap is set, with tune applied to the configuration.
func newRigWith(t *testing.T, resp Response, wrap func(*scriptedEngine) revfs.Engine, tune func(*Config)) *rig {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	os.WriteFile(p, nil, 0o600)
	os.Truncate(p, 1<<20)
	img, err := blockdev.OpenFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := OpenWrittenSet(filepath.Join(dir, "written"), 256)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Unix(1700000000, 0)}
	eng := &scriptedEngine{img: img, dataStart: 65536, dataLen: 65536, now: clk.now, lastTouch: clk.now()}
	s := &memSealer{logs: map[uint64][]byte{}}
	cfg := DefaultConfig()
	cfg.OnViolation = resp
	cfg.Protected = []Protected{{Path: "app.log", Inode: 12}}
	if tune != nil {
		tune(&cfg)
	}
	var served revfs.Engine = eng
	if wrap != nil {
		served = wrap(eng)
	}
	d := New(img, served, s, ws, cfg, Options{Now: clk.now, Tick: time.Millisecond})
	t.Cleanup(func() { d.Close(); ws.Close(); img.Close() })
	return &rig{dev: d, eng: eng, sealer: s, clk: clk, img: img}
}

// appendBytes simulates the host appending: data lands, then the engine
// learns the size; it then waits until the device has sealed it.
func (r *rig) appendBytes(t *testing.T, data []byte) {
	t.Helper()
	r.dev.mu.Lock()
	off := r.eng.size
	r.dev.mu.Unlock()
	if _, err := r.dev.WriteAt(data, r.eng.dataStart+off); err != nil {
		t.Fatal(err)
	}
	r.dev.mu.Lock()
	r.eng.size += int64(len(data))
	r.eng.coherent = r.eng.size
	r.dev.mu.Unlock()
}

// waitPass pokes the scheduler and returns once a whole pass has run
// after the call: what the device knew at the call has been noted.
func (r *rig) waitPass(t *testing.T) {
	t.Helper()
	want := r.dev.passes.Load() + 2 // a pass under way may predate the call
	deadline := time.Now().Add(5 * time.Second)
	for r.dev.passes.Load() < want {
		if time.Now().After(deadline) {
			t.Fatal("the scheduler ran no pass in 5 s")
		}
		r.dev.poke()
		time.Sleep(time.Millisecond)
	}
}

func waitSealed(t *testing.T, r *rig, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(r.sealer.get(12)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("sealed %d bytes, want %d", len(r.sealer.get(12)), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSchedulerWaitsForQuiescence(t *testing.T) {
	r := newRig(t, ResponseReadOnly)
	r.appendBytes(t, []byte("hello\n"))
	time.Sleep(50 * time.Millisecond) // many scheduler ticks, but the clock has not moved
	if got := r.sealer.get(12); len(got) != 0 {
		t.Fatalf("sealed %q before the quiescence window passed", got)
	}
	r.clk.add(1100 * time.Millisecond)
	waitSealed(t, r, 6)
	if got := r.sealer.get(12); string(got) != "hello\n" {
		t.Fatalf("sealed %q", got)
	}
}

func TestSchedulerJournalModes(t *testing.T) {
	r := newRig(t, ResponseReadOnly)
	r.dev.mu.Lock()
	r.eng.journalled, r.eng.dataJournal = true, true
	r.dev.mu.Unlock()
	r.appendBytes(t, []byte("journalled"))
	waitSealed(t, r, 10) // data=journal: no wait at all

	// The mode changes together with the append: a pass that saw the old
	// length in data=ordered first would start its margin there, and the
	// next length would get its mark only once the (test) clock moved.
	if _, err := r.dev.WriteAt([]byte("ordered"), r.eng.dataStart+10); err != nil {
		t.Fatal(err)
	}
	r.dev.mu.Lock()
	r.eng.dataJournal = false
	r.eng.size += 7
	r.eng.coherent = r.eng.size
	r.dev.mu.Unlock()
	r.waitPass(t) // the margin runs from the pass that first sees the length
	if n := len(r.sealer.get(12)); n != 10 {
		t.Fatalf("ordered append sealed before its margin: %d bytes", n)
	}
	r.clk.add(150 * time.Millisecond)
	waitSealed(t, r, 17)
}

func TestReadOnlyResponse(t *testing.T) {
	r := newRig(t, ResponseReadOnly)
	r.appendBytes(t, []byte("committed"))
	r.clk.add(2 * time.Second)
	waitSealed(t, r, 9)
	if _, err := r.dev.WriteAt([]byte("X"), r.eng.dataStart+2); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("overwrite of committed byte: %v, want ErrRefused", err)
	}
	// Every later write fails too, even harmless ones; reads keep working.
	if _, err := r.dev.WriteAt([]byte("ok"), 0); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("write after trip: %v", err)
	}
	buf := make([]byte, 9)
	if _, err := r.dev.ReadAt(buf, r.eng.dataStart); err != nil || string(buf) != "committed" {
		t.Fatalf("read after trip: %q %v", buf, err)
	}
	st := r.dev.Status()
	if !st.ReadOnly || st.Indicators != 1 || st.Recent[0].Kind != "data-changed" {
		t.Fatalf("status: %+v", st)
	}
	waitEvents(t, r, 1)
}

func waitEvents(t *testing.T, r *rig, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for bytes.Count(r.sealer.get(EventLogID), []byte("\n")) < n {
		if time.Now().After(deadline) {
			t.Fatalf("event log has %q, want %d lines", r.sealer.get(EventLogID), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDiscardResponseKeepsProtectedBytes(t *testing.T) {
	r := newRig(t, ResponseDiscard)
	r.appendBytes(t, []byte("committed"))
	r.clk.add(2 * time.Second)
	waitSealed(t, r, 9)
	// One write covering committed bytes and fresh space after them.
	w := []byte("XXXXXXXXXand more")
	if _, err := r.dev.WriteAt(w, r.eng.dataStart); err != nil {
		t.Fatalf("discard must answer success: %v", err)
	}
	got := make([]byte, len(w))
	r.img.ReadAt(got, r.eng.dataStart)
	if string(got) != "committedand more" {
		t.Fatalf("image holds %q", got)
	}
	waitEvents(t, r, 1)
	if ev := r.sealer.get(EventLogID); !bytes.Contains(ev, []byte(`"response":"discard"`)) {
		t.Fatalf("event: %s", ev)
	}
	// Not tripped: normal writes continue.
	if _, err := r.dev.WriteAt([]byte("fine"), 0); err != nil {
		t.Fatal(err)
	}
}

func TestHoneypotResponseFreezesFile(t *testing.T) {
	r := newRig(t, ResponseHoneypot)
	r.appendBytes(t, []byte("committed"))
	r.clk.add(2 * time.Second)
	waitSealed(t, r, 9)
	if _, err := r.dev.WriteAt([]byte("HIDDEN!!!"), r.eng.dataStart); err != nil {
		t.Fatalf("honeypot must answer success: %v", err)
	}
	got := make([]byte, 9)
	r.img.ReadAt(got, r.eng.dataStart)
	if string(got) != "HIDDEN!!!" {
		t.Fatalf("honeypot write did not land: %q", got)
	}
	r.appendBytes(t, []byte("after"))
	r.clk.add(2 * time.Second)
	time.Sleep(50 * time.Millisecond)
	if got := r.sealer.get(12); string(got) != "committed" {
		t.Fatalf("frozen file took appends: %q", got)
	}
	waitEvents(t, r, 1)
}

func TestTrimOverCommittedData(t *testing.T) {
	r := newRig(t, ResponseReadOnly)
	r.appendBytes(t, []byte("committed"))
	r.clk.add(2 * time.Second)
	waitSealed(t, r, 9)
	if err := r.dev.Trim(0, 4096); err != nil {
		t.Fatalf("trim of unprotected range: %v", err)
	}
	if err := r.dev.WriteZeroes(r.eng.dataStart, 4096, true); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("zeroing committed data: %v", err)
	}
}

func TestSealFailureRetries(t *testing.T) {
	r := newRig(t, ResponseReadOnly)
	r.sealer.mu.Lock()
	r.sealer.fail = errors.New("keys exhausted")
	r.sealer.mu.Unlock()
	r.appendBytes(t, []byte("abc"))
	r.clk.add(2 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for r.dev.Status().SealError == "" {
		if time.Now().After(deadline) {
			t.Fatal("seal error never reported")
		}
		time.Sleep(time.Millisecond)
	}
	r.sealer.mu.Lock()
	r.sealer.fail = nil
	r.sealer.mu.Unlock()
	waitSealed(t, r, 3)
	if got := r.sealer.get(12); string(got) != "abc" {
		t.Fatalf("after retry: %q", got)
	}
}

// gatedImage is an image whose Flush (or Trim) waits, after saying so on
// entered, until the test closes gate.
type gatedImage struct {
	blockdev.Device
	op      blockdev.Op
	entered chan struct{}
	gate    chan struct{}
}

// newGatedRig is a rig (discard response) whose device sees its image
// through a gatedImage that holds op.
func newGatedRig(t *testing.T, op blockdev.Op) (*rig, *gatedImage) {
	r := newRig(t, ResponseDiscard)
	g := &gatedImage{Device: r.img, op: op, entered: make(chan struct{}, 4), gate: make(chan struct{})}
	r.dev.img = g
	return r, g
}

func (g *gatedImage) wait(op blockdev.Op) {
	if op == g.op {
		g.entered <- struct{}{}
		<-g.gate
	}
}

func (g *gatedImage) Flush() error {
	g.wait(blockdev.OpFlush)
	return g.Device.Flush()
}

func (g *gatedImage) Trim(off, n int64) error {
	g.wait(blockdev.OpTrim)
	return g.Device.Trim(off, n)
}

// writeWhileGated writes to the protected file's data (a watched write)
// while g holds a request in its gate, and fails the test unless the write
// completes without waiting for that request.
func writeWhileGated(t *testing.T, r *rig, g *gatedImage, what string) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatalf("the %s never reached the image", what)
	}
	other := make(chan error, 1)
	go func() {
		_, err := r.dev.WriteAt([]byte(" next"), r.eng.dataStart+7)
		other <- err
	}()
	select {
	case err := <-other:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(g.gate)
		<-other
		t.Fatalf("a write waited for the %s: it ran under the device lock", what)
	}
}

// TestFUAWriteSyncsOutsideTheLock: a FUA write is answered only once its
// bytes are durable, but the other requests do not wait for its disk sync
// (the kernel's nbd client sends every jbd2 commit block with FUA).
func TestFUAWriteSyncsOutsideTheLock(t *testing.T) {
	r, g := newGatedRig(t, blockdev.OpFlush)
	fua := make(chan error, 1)
	go func() {
		_, err := r.dev.WriteAtFUA([]byte("durable"), r.eng.dataStart) // a watched write
		fua <- err
	}()
	writeWhileGated(t, r, g, "FUA write's sync")
	select {
	case <-fua:
		t.Fatal("the FUA write was answered before its sync finished")
	default:
	}
	close(g.gate)
	if err := <-fua; err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 12)
	r.img.ReadAt(got, r.eng.dataStart)
	if string(got) != "durable next" {
		t.Fatalf("image holds %q", got)
	}
}

// TestUnwatchedTrimOutsideTheLock: a TRIM of free space (nothing watched)
// punches its hole without the device lock, and is still recorded.
func TestUnwatchedTrimOutsideTheLock(t *testing.T) {
	r, g := newGatedRig(t, blockdev.OpTrim)
	trim := make(chan error, 1)
	go func() { trim <- r.dev.Trim(0, 8192) }()
	writeWhileGated(t, r, g, "TRIM of free space")
	close(g.gate)
	if err := <-trim; err != nil {
		t.Fatal(err)
	}
	r.dev.mu.Lock()
	discarded := r.eng.discarded
	r.dev.mu.Unlock()
	if discarded != 1 {
		t.Fatalf("engine saw %d discards, want 1", discarded)
	}
}
