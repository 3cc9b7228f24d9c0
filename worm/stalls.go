package worm

import (
	"fmt"
	"slices"
	"time"

	"github.com/indelible-worm/indelible/revfs"
)

// Data the host lost: sealing a stalled range as found.
//
// A file's coherent prefix stops at a range the host has not written since
// the metadata covering it arrived. After a crash of the host (or of the
// device, which forgets the writes of its last flush epoch) such a range
// may never be written: the host reads what the device holds there and
// appends after it. The engine reports these ranges (revfs.StallReporter);
// the device watches each one and, once it has stayed unchanged for
// commit.lost_after, has the engine take it as found, seals it with the
// rest, and records a lost-write notice in the sealed event log. A range
// that changes (the host wrote part of it, the size or map moved) starts
// its window again. Zeroes at the very end of the file (a StallTail range)
// are only shown in status: no appended data follows them.

// maxWatchedStalls bounds how many stalled ranges of one file are watched.
const maxWatchedStalls = 16

// stallCheckEvery is how often a file with a stalled range is re-examined:
// the windows are minutes long, and the walk is not free for a long tail.
const stallCheckEvery = time.Second

// stallWarnAfter is how long a range stays stalled before the device log
// says so (once per range) when it will not be sealed as found; status
// shows ranges stalled for stallShowAfter (a range the host's writeback
// is about to fill is stalled for moments, often).
const (
	stallWarnAfter = time.Minute
	stallShowAfter = 10 * time.Second
)

// stallWatch is what the device knows of one file's stalled ranges.
type stallWatch struct {
	checked time.Time
	marks   []stallMark
	// unknownDebt is how long the file has shown unknown-tree ranges,
	// less what the time it has shown none since paid back
	// (unknownPayBack; never below 0), as of
	// debtAt, when the last check saw them (debtUnknown) or not: a host
	// alternating between forged trees that hide the file at different
	// places, or hiding it most of the time and showing it now and then,
	// must not restart the clock. Honest unknown ranges last moments.
	unknownDebt   time.Duration
	debtAt        time.Time
	debtUnknown   bool
	unknownWarned bool
}

// unknownPayBack is how many times longer than the time it was seen with
// unknown ranges a file must be seen without any to pay it back: a host
// can hide it at most a fifth of the time without an indicator.
const unknownPayBack = 4

// account brings unknownDebt up to now, the state since the last check
// having been the one it saw, and records what this check sees.
func (w *stallWatch) account(now time.Time, unknown bool) {
	if !w.debtAt.IsZero() {
		if el := now.Sub(w.debtAt); w.debtUnknown {
			w.unknownDebt += el
		} else {
			w.unknownDebt = max(0, w.unknownDebt-el/unknownPayBack)
		}
	}
	w.debtAt, w.debtUnknown = now, unknown
	if w.unknownDebt == 0 {
		w.unknownWarned = false
	}
}

type stallMark struct {
	s      revfs.Stall
	since  time.Time
	warned bool
}

// watchStalls re-examines a file's stalled ranges and takes as found those
// that have been stalled for the whole window. It reports whether it took
// any (the file's coherent prefix moved). Called with mu held.
func (d *Device) watchStalls(st revfs.FileState, now time.Time) bool {
	sr, ok := d.eng.(revfs.StallReporter)
	window := d.cfg.Commit.LostAfter.Duration
	if !ok {
		return false
	}
	w := d.stalls[st.ID]
	if st.Coherent >= st.Size && !st.UnknownMap {
		// Caught up: nothing is stalled. The watch stays, with the time of
		// its last walk, so that a file whose prefix trails its size now
		// and then (every append, for moments) is walked once a second at
		// most, not at every pass.
		if w != nil {
			w.marks = nil
			w.account(now, false)
		}
		return false
	}
	if w == nil {
		w = &stallWatch{}
		d.stalls[st.ID] = w
	} else if now.Sub(w.checked) < stallCheckEvery {
		d.stallDue(w, window)
		return false
	}
	w.checked = now
	cur := sr.Stalls(st.ID, maxWatchedStalls)
	marks := make([]stallMark, 0, len(cur))
	took := false
	w.account(now, slices.ContainsFunc(cur, func(s revfs.Stall) bool { return s.Kind == revfs.StallUnknownTree }))
	for _, s := range cur {
		mark := stallMark{s: s, since: now}
		if s.Kind == revfs.StallUnknownTree {
			// Judged by the file's debt (stallWatch), whatever its place.
			mark.since = now.Add(-w.unknownDebt)
			if stalled := w.unknownDebt; stalled >= unknownTreeAfter(window) && !w.unknownWarned {
				w.unknownWarned = true
				d.unknownTree(st.ID, s, stalled)
			}
			mark.warned = w.unknownWarned
			marks = append(marks, mark)
			continue
		}
		for _, m := range w.marks {
			if m.s == s {
				mark = m
				break
			}
		}
		stalled := now.Sub(mark.since)
		if !s.Kind.TakenAsFound() {
			// A tail: shown in status only, nothing to warn about (no
			// data the host appended waits behind it).
			marks = append(marks, mark)
			continue
		}
		if window > 0 && stalled >= window && sr.AcceptAsFound(st.ID, s) {
			d.noteLostWrite(st.ID, s, stalled, now)
			took = true
			continue
		}
		if window <= 0 && stalled >= stallWarnAfter && !mark.warned {
			mark.warned = true
			d.log.Warn("indelible: sealing of a protected file is held back by a range the host has not written; if the host crashed, that data is lost and the file is not sealed past it until the host writes the range (commit.lost_after seals such ranges as found)",
				"file", d.paths[st.ID], "kind", s.Kind.String(), "off", s.Off, "len", s.Len, "for", stalled.Round(time.Second))
		}
		marks = append(marks, mark)
	}
	w.marks = marks
	d.stallDue(w, window)
	return took
}

// unknownTreeAfter is how long a file's block map may lie under an extent
// tree block the host has not written before the device raises an
// indicator: commit.lost_after when set, or defaultUnknownTreeAfter.
// Without a journal the kernel may write a new index before the leaf it
// points to, and its writeback brings the leaf within seconds (at most
// dirty_expire_centisecs, 30 s by default; later under load or with a
// longer expiry, so a lost_after that short can raise it on an honest
// host); with a journal both come in one transaction. A tree whose block
// never comes is forged: the kernel cannot read the file there. (After a
// device crash that lost an unflushed leaf the host never writes again,
// the same holds: the host cannot read the file either.)
func unknownTreeAfter(window time.Duration) time.Duration {
	if window > 0 {
		return window
	}
	return defaultUnknownTreeAfter
}

const defaultUnknownTreeAfter = 10 * time.Minute

// unknownTree raises the indicator for a range whose block map stayed
// under an unwritten extent tree block. Called with mu held.
func (d *Device) unknownTree(id revfs.FileID, s revfs.Stall, stalled time.Duration) {
	vs := []revfs.Violation{{Kind: revfs.KindUnparseable, File: id,
		Detail: fmt.Sprintf("file bytes [%d,%d): %s, for %s: the kernel cannot read the file there (a forged extent tree)",
			s.Off, s.Off+s.Len, s.Kind.Describe(), stalled.Round(time.Second))}}
	// No request carries it: a read-only trip refuses the next write.
	d.respond(vs, nil, 0, "watch")
}

// stallDue has the scheduler look again when the oldest watched range's
// window ends. Called with mu held.
func (d *Device) stallDue(w *stallWatch, window time.Duration) {
	for _, m := range w.marks {
		at := m.since.Add(window)
		switch {
		case m.s.Kind == revfs.StallUnknownTree && !m.warned:
			// Due with or without lost_after (unknownTreeAfter).
			at = m.since.Add(unknownTreeAfter(window))
		case !m.s.Kind.TakenAsFound() || window <= 0:
			continue // no window ends: nothing is taken
		}
		if at.Before(w.checked.Add(stallCheckEvery)) {
			at = w.checked.Add(stallCheckEvery)
		}
		if d.nextDue.IsZero() || at.Before(d.nextDue) {
			d.nextDue = at
		}
	}
}

// noteLostWrite records that a stalled range was taken as found.
func (d *Device) noteLostWrite(id revfs.FileID, s revfs.Stall, stalled time.Duration, now time.Time) {
	what := s.Kind.Describe() + "; sealed as zeroes"
	why := "the host most likely lost this data in a crash"
	switch s.Kind {
	case revfs.StallNotWritten:
		what = s.Kind.Describe() + "; sealed as the device holds them"
	case revfs.StallPartial:
		// Zero bytes at the end of the block: data that ends in zeroes
		// (binary records) cannot be told from bytes never written.
		what = s.Kind.Describe() + "; sealed as the device holds them"
		why = "they are zero bytes: data the host appended that ends in zeroes, or data it lost in a crash"
	}
	e := Event{
		Time: now.UTC(), Kind: "lost-write", Op: "seal", File: d.paths[id], Inode: uint64(id),
		FileOff: s.Off, FileLen: s.Len, Response: "sealed-as-found",
		Detail: fmt.Sprintf("file bytes [%d,%d): %s, after %s unchanged (commit.lost_after); %s",
			s.Off, s.Off+s.Len, what, stalled.Round(time.Second), why),
	}
	if s.Device >= 0 {
		e.Off, e.Len = s.Device, s.Len
	}
	d.events.notice(e)
}

// StallStatus is a stalled range in Status.
type StallStatus struct {
	Kind string `json:"kind"` // not-written, unwritten-extent, hole, tail, partial-block, unknown-tree
	What string `json:"what"` // the kind in words
	Off  int64  `json:"off"`  // file byte range
	Len  int64  `json:"len"`
	// ForMillis is how long the range has been stalled, unchanged; the
	// device seals it as found after commit.lost_after.
	ForMillis int64 `json:"for_ms"`
}

// stallStatus returns the ranges of a file stalled for stallShowAfter or
// longer. Called with mu held.
func (d *Device) stallStatus(id revfs.FileID, now time.Time) []StallStatus {
	w := d.stalls[id]
	if w == nil {
		return nil
	}
	var out []StallStatus
	for _, m := range w.marks {
		if now.Sub(m.since) >= stallShowAfter {
			out = append(out, StallStatus{Kind: m.s.Kind.String(), What: m.s.Kind.Describe(), Off: m.s.Off, Len: m.s.Len, ForMillis: now.Sub(m.since).Milliseconds()})
		}
	}
	return out
}
