package worm

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/revfs"
)

// stallEngine is the scripted engine with stalled ranges: while any is set,
// the coherent prefix stops at the first; taking the last one as found
// makes the whole size coherent.
type stallEngine struct {
	*scriptedEngine
	stalls []revfs.Stall
	taken  []revfs.Stall
	walks  int // calls of Stalls
}

func (e *stallEngine) Stalls(id revfs.FileID, most int) []revfs.Stall {
	e.walks++
	return append([]revfs.Stall(nil), e.stalls[:min(most, len(e.stalls))]...)
}

func (e *stallEngine) AcceptAsFound(id revfs.FileID, s revfs.Stall) bool {
	for i, c := range e.stalls {
		if c == s {
			e.stalls = append(e.stalls[:i], e.stalls[i+1:]...)
			e.taken = append(e.taken, s)
			if len(e.stalls) == 0 {
				e.coherent = e.size
			} else {
				e.coherent = e.stalls[0].Off
			}
			return true
		}
	}
	return false
}

var _ revfs.StallReporter = (*stallEngine)(nil)

func newStallRig(t *testing.T, lostAfter time.Duration) (*rig, *stallEngine) {
	var se *stallEngine
	r := newRigWith(t, ResponseReadOnly, func(e *scriptedEngine) revfs.Engine {
		se = &stallEngine{scriptedEngine: e}
		e.journalled, e.dataJournal = true, true // seal as soon as coherent
		return se
	}, func(c *Config) { c.Commit.LostAfter = Duration{lostAfter} })
	return r, se
}

// stall has the host's size run past a range it never wrote.
func (r *rig) stall(se *stallEngine, grow int64, stalls ...revfs.Stall) {
	r.dev.mu.Lock()
	defer r.dev.mu.Unlock()
	r.eng.size += grow
	se.stalls = stalls
	r.eng.coherent = stalls[0].Off
}

// wantNotTaken checks that no range was taken as found and that the first
// n bytes only are sealed.
func (r *rig) wantNotTaken(t *testing.T, se *stallEngine, n int, what string) {
	t.Helper()
	if len(se.taken) != 0 || len(r.sealer.get(12)) != n {
		t.Fatalf("%s: taken %v, sealed %d bytes; want nothing taken, %d sealed", what, se.taken, len(r.sealer.get(12)), n)
	}
}

// wantStalledFor checks that status shows one stalled range, waiting for d.
func (r *rig) wantStalledFor(t *testing.T, d time.Duration) {
	t.Helper()
	if f, _ := r.fileStatus(t); len(f.Stalls) != 1 || f.Stalls[0].ForMillis != d.Milliseconds() {
		t.Fatalf("status stalls %+v, want one range stalled for %v", f.Stalls, d)
	}
}

func (r *rig) fileStatus(t *testing.T) (FileStatus, Status) {
	t.Helper()
	st := r.dev.Status()
	if len(st.Files) != 1 {
		t.Fatalf("status has %d files", len(st.Files))
	}
	return st.Files[0], st
}

// A range the host never wrote is sealed as found only once it has stayed
// unchanged for commit.lost_after; a change starts the window again; the
// device records a lost-write notice, not an indicator.
func TestStalledRangeSealedAsFoundAfterWindow(t *testing.T) {
	r, se := newStallRig(t, 10*time.Minute)
	r.appendBytes(t, []byte("hello\n"))
	waitSealed(t, r, 6)
	first := revfs.Stall{Kind: revfs.StallNotWritten, Off: 6, Len: 4090, Device: 65536 + 6}
	r.stall(se, 4096+10, first)
	r.waitPass(t)
	if f, _ := r.fileStatus(t); len(f.Stalls) != 0 {
		t.Fatalf("status stalls %+v: a range stalled for moments is not shown", f.Stalls)
	}
	r.clk.add(stallShowAfter)
	r.waitPass(t)
	if f, _ := r.fileStatus(t); len(f.Stalls) != 1 || f.Stalls[0].Off != 6 || f.Stalls[0].Kind != "not-written" {
		t.Fatalf("status stalls %+v, want the one range", f.Stalls)
	}

	r.clk.add(9*time.Minute - stallShowAfter)
	r.waitPass(t)
	r.wantNotTaken(t, se, 6, "before the window ended")
	r.wantStalledFor(t, 9*time.Minute)

	// The host wrote part of it: what is left is a new range, with a new window.
	second := revfs.Stall{Kind: revfs.StallNotWritten, Off: 4096, Len: 10, Device: 65536 + 4096}
	r.dev.mu.Lock()
	se.stalls = []revfs.Stall{second}
	r.eng.coherent = 4096
	r.dev.mu.Unlock()
	r.clk.add(2 * time.Second)
	r.waitPass(t)
	r.clk.add(2 * time.Minute) // the first range's window would have ended
	r.waitPass(t)
	if len(se.taken) != 0 {
		t.Fatalf("taken %v: a changed range kept its old window", se.taken)
	}

	r.clk.add(8 * time.Minute)
	waitSealed(t, r, 6+4096+10)
	if len(se.taken) != 1 || se.taken[0] != second {
		t.Fatalf("taken %v, want [%v]", se.taken, second)
	}
	f, st := r.fileStatus(t)
	if len(f.Stalls) != 0 || st.Notices != 1 || st.Indicators != 0 || st.ReadOnly {
		t.Fatalf("after: stalls %+v, notices %d, indicators %d, read-only %v", f.Stalls, st.Notices, st.Indicators, st.ReadOnly)
	}
	// The notice is sealed in the event log, with the file range.
	deadline := time.Now().Add(5 * time.Second)
	for len(r.sealer.get(EventLogID)) == 0 && time.Now().Before(deadline) {
		r.waitPass(t)
	}
	var ev Event
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(r.sealer.get(EventLogID)))), &ev); err != nil {
		t.Fatalf("event log %q: %v", r.sealer.get(EventLogID), err)
	}
	if ev.Kind != "lost-write" || ev.Response != "sealed-as-found" || ev.File != "app.log" || ev.FileOff != 4096 || ev.FileLen != 10 ||
		ev.Off != 65536+4096 || !strings.Contains(ev.Detail, "10m0s") {
		t.Fatalf("event %+v", ev)
	}
}

// With commit.lost_after = 0 (the default) a stalled range waits for the
// host for ever; status shows it.
func TestStalledRangeNeverSealedWhenDisabled(t *testing.T) {
	r, se := newStallRig(t, 0)
	r.appendBytes(t, []byte("hello\n"))
	waitSealed(t, r, 6)
	r.stall(se, 4096+100, revfs.Stall{Kind: revfs.StallHole, Off: 6, Len: 4090, Device: -1})
	r.waitPass(t)
	r.clk.add(24 * time.Hour)
	r.waitPass(t)
	r.wantNotTaken(t, se, 6, "lost_after 0")
	r.wantStalledFor(t, 24*time.Hour)
	if _, st := r.fileStatus(t); st.Notices != 0 || st.Indicators != 0 {
		t.Fatalf("notices %d, indicators %d with lost_after 0", st.Notices, st.Indicators)
	}
}

// Zeroes at the end of the file, with nothing appended after them, are
// shown in status but never taken as found, whatever the window.
func TestStalledTailNeverTaken(t *testing.T) {
	r, se := newStallRig(t, 10*time.Minute)
	r.appendBytes(t, []byte("hello\n"))
	waitSealed(t, r, 6)
	r.stall(se, 4096+100, revfs.Stall{Kind: revfs.StallTail, Off: 6, Len: 4090 + 100, Device: -1})
	r.waitPass(t)
	r.clk.add(24 * time.Hour)
	r.waitPass(t)
	r.wantNotTaken(t, se, 6, "a tail")
	f, st := r.fileStatus(t)
	if len(f.Stalls) != 1 || f.Stalls[0].Kind != "tail" || f.Stalls[0].ForMillis < (24*time.Hour).Milliseconds() {
		t.Fatalf("status stalls %+v, want the tail, for a day", f.Stalls)
	}
	if st.Notices != 0 || st.Indicators != 0 {
		t.Fatalf("notices %d, indicators %d for a tail", st.Notices, st.Indicators)
	}
}

// A file whose prefix trails its size for moments, again and again (every
// append does), is walked for stalled ranges at most once a second.
func TestStallWalksAtMostOncePerSecond(t *testing.T) {
	r, se := newStallRig(t, 10*time.Minute)
	r.appendBytes(t, []byte("hello\n"))
	waitSealed(t, r, 6)
	for i := 0; i < 20; i++ {
		r.stall(se, 10, revfs.Stall{Kind: revfs.StallNotWritten, Off: int64(6 + 10*i), Len: 10, Device: 65536})
		r.waitPass(t)
		r.dev.mu.Lock()
		se.stalls, r.eng.coherent = nil, r.eng.size // the data came
		r.dev.mu.Unlock()
		r.waitPass(t)
	}
	r.dev.mu.Lock()
	walks := se.walks
	r.dev.mu.Unlock()
	if walks != 1 {
		t.Fatalf("%d walks for stalled ranges within one second of the device's clock, want 1", walks)
	}
}

// A file whose block map lies under an extent tree block the host never
// writes raises an indicator once it stays so, also without lost_after
// (after defaultUnknownTreeAfter), and the scheduler wakes up for that
// deadline by itself: a host that stops writing must not keep it quiet.
func TestUnknownTreeDueWithoutLostAfter(t *testing.T) {
	r, se := newStallRig(t, 0)
	r.appendBytes(t, []byte("hello\n"))
	waitSealed(t, r, 6)
	start := r.clk.now()
	r.stall(se, 4096+100, revfs.Stall{Kind: revfs.StallUnknownTree, Off: 6, Len: 4090, Device: -1})
	r.waitPass(t)
	r.dev.mu.Lock()
	due := r.dev.nextDue
	r.dev.mu.Unlock()
	if due.IsZero() || due.Before(start.Add(defaultUnknownTreeAfter)) {
		t.Fatalf("next wake-up %v, want %v after %v", due, defaultUnknownTreeAfter, start)
	}
	if _, st := r.fileStatus(t); st.Indicators != 0 {
		t.Fatalf("%d indicators before the deadline", st.Indicators)
	}
	r.clk.add(defaultUnknownTreeAfter)
	r.waitPass(t)
	r.wantNotTaken(t, se, 6, "an unknown tree")
	if _, st := r.fileStatus(t); st.Indicators != 1 {
		t.Fatalf("%d indicators after the deadline, want 1", st.Indicators)
	}
}
