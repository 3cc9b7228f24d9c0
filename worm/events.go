package worm

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Event is one line of the sealed event log.
type Event struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`               // revfs.Kind name, "suppressed", or "lost-write" (a notice, not an indicator)
	Op       string    `json:"op"`                 // write, trim, write-zeroes, startup
	Off      int64     `json:"off"`                // device byte range of the offending bytes
	Len      int64     `json:"len"`                //
	FileOff  int64     `json:"file_off,omitempty"` // file byte range (lost-write notices)
	FileLen  int64     `json:"file_len,omitempty"` //
	File     string    `json:"file,omitempty"`     // protected file path, when one is concerned
	Inode    uint64    `json:"inode,omitempty"`    //
	Response string    `json:"response"`           // readonly, discard, honeypot; sealed-as-found for a notice
	Detail   string    `json:"detail,omitempty"`   //
	SHA256   string    `json:"sha256,omitempty"`   // digest of the rejected bytes
	Dropped  int       `json:"dropped,omitempty"`  // for "suppressed": events not recorded one by one
	// Inodes, for "suppressed", are the protected files the events not
	// recorded one by one concerned (0: the whole device), and Response
	// their response: what Restore needs of them (a honeypot freeze, a
	// read-only trip), which a host must not be able to hide by making
	// its indicators fast enough to be counted only.
	Inodes []uint64 `json:"inodes,omitempty"`
}

// maxPendingEvents bounds memory under an attack that raises indicators in a
// loop: past it, events are counted and recorded as one "suppressed" line.
// It holds while sealing fails too: events put back after a failed seal
// count against it.
const maxPendingEvents = 4096

// maxEventsPerSecond bounds how fast indicators are recorded one by one: a
// host repeating a refused write as fast as it can (on_violation = discard
// or honeypot) would otherwise grow the sealed event log with the host's
// speed (about 230 bytes each) until the store's disk filled and sealing of
// the protected files stopped. Past it they are counted, and the count is
// sealed as one "suppressed" line.
const maxEventsPerSecond = 64

// eventLog queues events under the device lock and seals them from the
// scheduler, so that an attack never makes host I/O wait for fsync.
type eventLog struct {
	sealer Sealer
	log    *slog.Logger

	// flushMu serialises flush: the scheduler's, and the one a read-only
	// trip makes before its refusal is answered.
	flushMu sync.Mutex

	mu       sync.Mutex
	pending  []Event
	dropped  int
	dropResp string          // the response of the dropped events
	dropIno  map[uint64]bool // the files they concerned (see Event.Inodes)
	total    int             // indicators
	notices  int             // lost-write notices
	off      int64           // bytes of the sealed event log already handed to the sealer
	init     bool
	logRate  perSecond // device log lines (logBurst a second)
	sealRate perSecond // events recorded one by one (maxEventsPerSecond)
	recent   []Event   // the last few events, for status
	// sealed is what the sealed log holds up to off (a restore point's
	// state, restore.go): the counts above include events still pending.
	sealed tally
}

const logBurst = 20

// perSecond counts what was let through in the current one-second window.
type perSecond struct {
	window time.Time
	count  int
}

// allow reports whether one more may go at time t, at most most a second,
// and counts it if so. A clock that went back starts a new window, so that
// a step back does not silence everything until the old window's end.
func (r *perSecond) allow(t time.Time, most int) bool {
	if t.Sub(r.window) >= time.Second || t.Before(r.window) {
		r.window, r.count = t, 0
	}
	if r.count >= most {
		return false
	}
	r.count++
	return true
}

func (l *eventLog) record(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	if len(l.pending) >= maxPendingEvents || !l.sealRate.allow(e.Time, maxEventsPerSecond) {
		l.drop(e, 1)
	} else {
		l.pending = append(l.pending, e)
	}
	l.remember(e)
	if l.logRate.allow(e.Time, logBurst) {
		l.log.Warn("indelible: indicator of compromise", "kind", e.Kind, "op", e.Op, "off", e.Off, "len", e.Len,
			"file", e.File, "response", e.Response, "detail", e.Detail)
	}
}

// remember keeps e among the last few events, for status. Called with mu held.
func (l *eventLog) remember(e Event) {
	l.recent = append(l.recent, e)
	if len(l.recent) > 16 {
		l.recent = l.recent[len(l.recent)-16:]
	}
}

// drop counts n indicators like e that are not recorded one by one. Called
// with mu held.
func (l *eventLog) drop(e Event, n int) {
	l.dropped += n
	if e.Response != "" {
		l.dropResp = e.Response
	}
	if l.dropIno == nil {
		l.dropIno = map[uint64]bool{}
	}
	for _, ino := range e.files() {
		if len(l.dropIno) < maxDroppedInodes {
			l.dropIno[ino] = true
		} else {
			l.dropIno[0] = true // too many to name: the whole device
		}
	}
}

// files returns the protected files (inode numbers, 0: every file) the
// indicators e stands for concern: its Inode, or for a "suppressed" line
// the Inodes of those it counts.
func (e Event) files() []uint64 {
	if e.Kind == "suppressed" {
		return e.Inodes
	}
	return []uint64{e.Inode}
}

// maxDroppedInodes bounds the files one "suppressed" line names; the engine
// raises indicators for protected files only, so it is rarely reached.
const maxDroppedInodes = 1024

// notice queues a notice: an event that is not an indicator of compromise
// (a stalled range sealed as found) but that the auditor must be able to
// see, sealed in the same log.
func (l *eventLog) notice(e Event) {
	l.queue(e)
	l.log.Warn("indelible: sealing data the host never wrote, as found", "file", e.File, "file_off", e.FileOff,
		"file_len", e.FileLen, "detail", e.Detail)
}

// queue queues an event that is not an indicator (a notice, an operator's
// resume), counted as its kind says (tally).
func (l *eventLog) queue(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, n := tallyOf(e)
	l.notices += n
	l.pending = append(l.pending, e)
	l.remember(e)
}

// flush seals the queued events: the scheduler's, and a read-only trip's
// (Device.respond), one at a time.
func (l *eventLog) flush() error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	evs := l.pending
	dropped, resp, inos := l.dropped, l.dropResp, l.dropIno
	l.pending, l.dropped, l.dropResp, l.dropIno = nil, 0, "", nil
	if !l.init {
		l.off = l.sealer.Watermark(EventLogID)
		l.init = true
	}
	l.mu.Unlock()
	if dropped > 0 {
		var list []uint64
		for ino := range inos {
			list = append(list, ino)
		}
		slices.Sort(list)
		evs = append(evs, Event{Time: time.Now().UTC(), Kind: "suppressed", Op: "-", Dropped: dropped, Response: resp, Inodes: list,
			Detail: fmt.Sprintf("%d indicators not recorded one by one (more than %d a second, or %d pending)", dropped, maxEventsPerSecond, maxPendingEvents)})
	}
	if len(evs) == 0 {
		return nil
	}
	var buf []byte
	for _, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
	}
	if err := l.sealer.Append(EventLogID, EventLogPath, l.off, buf); err != nil {
		// Put them back: an indicator is never silently lost. What does
		// not fit under maxPendingEvents (the newest) is counted instead.
		l.mu.Lock()
		all := append(evs, l.pending...)
		if len(all) > maxPendingEvents {
			for _, e := range all[maxPendingEvents:] {
				l.drop(e, max(e.Dropped, 1))
			}
			all = all[:maxPendingEvents]
		}
		l.pending = all
		l.mu.Unlock()
		return err
	}
	l.mu.Lock()
	l.off += int64(len(buf))
	for _, e := range evs {
		l.sealed.add(e)
	}
	l.mu.Unlock()
	return nil
}

func (l *eventLog) stats() (indicators, notices int, recent []Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.notices, append([]Event(nil), l.recent...)
}
