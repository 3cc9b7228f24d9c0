package worm

import (
	"errors"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/revfs"
)

// laterEngine is a scriptedEngine whose writes at expensiveOff are
// expensive to record (the laterRecorder of revfs/ext4 commit blocks):
// recording one waits for release, then marks block 42 written, as
// recording a commit block marks the journalled data's home blocks.
type laterEngine struct {
	*scriptedEngine
	written      *WrittenSet
	expensiveOff int64
	checked      int64
	release      chan struct{}
	free, after  uint64 // free blocks now, and once the expensive write is recorded
	total        uint64
}

func (e *laterEngine) CheckWrite(off int64, p []byte) []revfs.Violation {
	e.checked = off
	return e.scriptedEngine.CheckWrite(off, p)
}

func (e *laterEngine) PendingRecord() (bool, uint64, uint64) {
	if e.checked == e.expensiveOff {
		return true, e.after, e.total
	}
	return false, e.free, e.total
}

func (e *laterEngine) Wrote(off int64, p []byte) {
	if off == e.expensiveOff {
		<-e.release
		e.written.Add(42, 1)
		e.free = e.after
	}
	e.scriptedEngine.Wrote(off, p)
}

func (e *laterEngine) FreeBlocks() (uint64, uint64) { return e.free, e.total }

func newLaterRig(t *testing.T, resp Response, after uint64) (*rig, *laterEngine) {
	t.Helper()
	var le *laterEngine
	r := newRigWith(t, resp, func(se *scriptedEngine) revfs.Engine {
		le = &laterEngine{scriptedEngine: se, expensiveOff: se.dataStart + 4096, checked: -1,
			release: make(chan struct{}), free: 500, after: after, total: 1000}
		return le
	}, func(c *Config) { c.VolumeFullPercent = 10 })
	le.written = r.dev.written
	return r, le
}

// writeAnsweredEarly writes at the expensive offset and fails unless the
// write is answered while its recording still waits for le.release.
func writeAnsweredEarly(t *testing.T, r *rig, le *laterEngine) {
	t.Helper()
	answered := make(chan error, 1)
	go func() {
		_, err := r.dev.WriteAt([]byte("commit"), le.expensiveOff)
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(le.release) // let the recording finish, so the rig can close
		t.Fatal("the expensive write was not answered before it was recorded")
	}
}

// A write that is expensive to record is answered before it is recorded;
// nothing else reaches the engine until it is, and the next FLUSH makes
// what recording it added to the written-block map durable (I6).
func TestExpensiveWriteAnsweredBeforeRecorded(t *testing.T) {
	r, le := newLaterRig(t, ResponseReadOnly, 400)
	writeAnsweredEarly(t, r, le)
	next := make(chan error, 1)
	go func() {
		_, err := r.dev.WriteAt([]byte("next"), le.dataStart+8192)
		next <- err
	}()
	flushed := make(chan error, 1)
	go func() { flushed <- r.dev.Flush() }()
	select {
	case <-next:
		t.Fatal("a watched write reached the engine while the previous one was being recorded")
	case <-flushed:
		t.Fatal("a FLUSH completed while a write was being recorded")
	case <-time.After(100 * time.Millisecond):
	}
	close(le.release)
	if err := <-next; err != nil {
		t.Fatal(err)
	}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if le.wrote != 2 {
		t.Fatalf("engine recorded %d writes, want 2", le.wrote)
	}
	ws, err := OpenWrittenSet(r.dev.written.f.Name(), 256)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if !ws.Contains(42, 1) {
		t.Fatal("the FLUSH after the write did not make the blocks its recording added durable")
	}
}

// Under readonly, a write whose recording takes free space under the
// volume-full threshold is recorded before it is answered, so that it
// fails as the readonly response says; otherwise it may be answered early.
func TestExpensiveWriteVolumeFullReadOnly(t *testing.T) {
	r, le := newLaterRig(t, ResponseReadOnly, 50) // 5 % free once recorded
	close(le.release)
	if _, err := r.dev.WriteAt([]byte("commit"), le.expensiveOff); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("crossing write: %v, want ErrRefused", err)
	}
	if !r.dev.Status().ReadOnly {
		t.Fatal("not read-only")
	}
	// Honeypot does not refuse the write: it may be answered early and
	// still raises the indicator once recorded.
	r, le = newLaterRig(t, ResponseHoneypot, 50)
	writeAnsweredEarly(t, r, le)
	close(le.release)
	if st := r.dev.Status(); st.Indicators != 1 || st.Recent[0].Kind != "volume-full" {
		t.Fatalf("honeypot: %+v", st)
	}
}
