package worm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
)

func newTestEventLog(s Sealer) *eventLog {
	return &eventLog{sealer: s, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// sealedEvents decodes the sealed event log: the events recorded one by one
// and the sum of the "suppressed" counts.
func sealedEvents(t *testing.T, s *memSealer) (one, counted int) {
	t.Helper()
	for _, line := range bytes.Split(bytes.TrimSpace(s.get(EventLogID)), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		if e.Kind == "suppressed" {
			counted += e.Dropped
		} else {
			one++
		}
	}
	return one, counted
}

// While sealing fails, the events put back after each failed pass count
// against maxPendingEvents: the queue used to take another 4096 each pass.
// Nothing is lost from the count once sealing works again.
func TestEventsBoundedWhileSealingFails(t *testing.T) {
	s := &memSealer{logs: map[uint64][]byte{}, fail: errors.New("disk full")}
	l := newTestEventLog(s)
	at := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	recorded := 0
	for pass := 0; pass < 8; pass++ {
		for range maxPendingEvents {
			at = at.Add(time.Second / maxEventsPerSecond) // under the rate limit
			l.record(Event{Time: at, Kind: "size-decreased", Op: "write"})
			recorded++
		}
		if err := l.flush(); err == nil {
			t.Fatal("flush succeeded with a failing sealer")
		}
		l.mu.Lock()
		n := len(l.pending)
		l.mu.Unlock()
		if n > maxPendingEvents {
			t.Fatalf("pass %d: %d events queued (bound %d)", pass, n, maxPendingEvents)
		}
	}
	s.mu.Lock()
	s.fail = nil
	s.mu.Unlock()
	if err := l.flush(); err != nil {
		t.Fatal(err)
	}
	one, counted := sealedEvents(t, s)
	if one > maxPendingEvents || one+counted != recorded {
		t.Fatalf("sealed %d events one by one and %d counted, of %d recorded", one, counted, recorded)
	}
}

// A host repeating a refused write as fast as it can gets maxEventsPerSecond
// events recorded one by one each second, and the rest counted.
func TestEventsRateLimited(t *testing.T) {
	s := &memSealer{logs: map[uint64][]byte{}}
	l := newTestEventLog(s)
	at := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	const perSecond, seconds = 1000, 3
	for sec := range seconds {
		for i := range perSecond {
			l.record(Event{Time: at.Add(time.Duration(sec)*time.Second + time.Duration(i)*time.Millisecond/2), Kind: "size-decreased", Op: "write"})
		}
		if err := l.flush(); err != nil {
			t.Fatal(err)
		}
	}
	one, counted := sealedEvents(t, s)
	if one != seconds*maxEventsPerSecond || counted != seconds*(perSecond-maxEventsPerSecond) {
		t.Fatalf("%d events one by one and %d counted, want %d and %d", one, counted, seconds*maxEventsPerSecond, seconds*(perSecond-maxEventsPerSecond))
	}
	if ind, _, _ := l.stats(); ind != seconds*perSecond {
		t.Fatalf("status counts %d indicators, want %d", ind, seconds*perSecond)
	}
}

// Ranges whose end is past 2^63 are out of range: offset plus length
// wrapped, passed the check and were judged as huge requests (the NBD
// layer never sends one; a replayed trace could).
func TestRangesPastInt64OutOfRange(t *testing.T) {
	r := newRig(t, ResponseReadOnly)
	const huge = math.MaxInt64 - 100
	for name, err := range map[string]error{
		"trim":         r.dev.Trim(4096, huge),
		"write-zeroes": r.dev.WriteZeroes(4096, huge, true),
	} {
		if !errors.Is(err, blockdev.ErrOutOfRange) {
			t.Errorf("%s of %d bytes at 4096: %v", name, int64(huge), err)
		}
	}
	if st := r.dev.Status(); st.Indicators != 0 || st.ReadOnly {
		t.Fatalf("indicators %d, read-only %v", st.Indicators, st.ReadOnly)
	}
}
