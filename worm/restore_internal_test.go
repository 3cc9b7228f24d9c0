package worm

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// Indicators a host makes fast enough to be counted only, in one
// "suppressed" line, still trip and freeze after a restart: the line names
// their response and files. It named neither, so a host could unfreeze a
// honeypot file by a restart after a burst.
func TestSuppressedIndicatorsRestore(t *testing.T) {
	for _, resp := range []Response{ResponseHoneypot, ResponseReadOnly} {
		t.Run(string(resp), func(t *testing.T) {
			s := &memSealer{logs: map[uint64][]byte{}}
			l := newTestEventLog(s)
			at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
			// The first maxEventsPerSecond are recorded one by one (file
			// 12); the rest of the second's, for file 14, are counted only.
			for i := range maxEventsPerSecond + 10 {
				ino := uint64(12)
				if i >= maxEventsPerSecond {
					ino = 14
				}
				l.record(Event{Time: at, Kind: "data-changed", Op: "write", Inode: ino, Response: string(resp)})
			}
			if err := l.flush(); err != nil {
				t.Fatal(err)
			}
			var tl tally
			for _, line := range bytes.Split(bytes.TrimSpace(s.get(EventLogID)), []byte("\n")) {
				var e Event
				if err := json.Unmarshal(line, &e); err != nil {
					t.Fatal(err)
				}
				tl.add(e)
			}
			if tl.Total != maxEventsPerSecond+10 {
				t.Errorf("total %d, want %d", tl.Total, maxEventsPerSecond+10)
			}
			switch resp {
			case ResponseHoneypot:
				if !slices.Equal(tl.Frozen, []uint64{12, 14}) {
					t.Errorf("frozen %v, want [12 14] (14 only in the suppressed line)", tl.Frozen)
				}
			case ResponseReadOnly:
				if tl.Tripped == nil {
					t.Error("not tripped")
				}
			}
			if !slices.Equal(l.sealed.Frozen, tl.Frozen) || l.sealed.Total != tl.Total || (l.sealed.Tripped == nil) != (tl.Tripped == nil) {
				t.Errorf("the log's own tally %+v differs from the replay's %+v", l.sealed, tl)
			}
		})
	}
	// A suppressed line alone trips, as the indicators it stands for did.
	var tl tally
	tl.add(Event{Kind: "suppressed", Dropped: 5, Response: string(ResponseReadOnly)})
	if tl.Tripped == nil || tl.Total != 5 {
		t.Errorf("a suppressed readonly line: %+v", tl)
	}
}

// A resume is neither an indicator nor a notice, live or replayed.
func TestResumeCountsAsNothing(t *testing.T) {
	s := &memSealer{logs: map[uint64][]byte{}}
	l := newTestEventLog(s)
	l.queue(Event{Kind: KindResumed, Response: "-"})
	if l.total != 0 || l.notices != 0 {
		t.Errorf("live: %d indicators, %d notices", l.total, l.notices)
	}
	if err := l.flush(); err != nil {
		t.Fatal(err)
	}
	if l.sealed.Total != 0 || l.sealed.Notices != 0 || len(l.sealed.Recent) != 1 {
		t.Errorf("sealed: %+v", l.sealed)
	}
}
