package worm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/indelible-worm/indelible/revfs"
)

// A response outlives the process that made it. The readonly response
// refuses "every later write", and honeypot stops a file's real log for
// good; both, and the indicator counts status shows, used to live in memory
// only, so a restart (by an operator, or by a supervisor after a crash a
// host managed to cause) silently let writes in again. The sealed event log
// records every indicator with its response, so OpenDir replays it
// (Device.Restore): the device comes back read-only, its honeypot files
// frozen, its counts as they were. Only an operator clears that, by
// starting the device with Options.Resume, which seals a "resumed" line:
// lines before the last one no longer trip or freeze.
//
// Replaying costs a few microseconds a line, and a host answered with
// discard or honeypot can add 64 lines a second for as long as it likes. So
// the device keeps a restore point in its state directory: the state the
// log amounts to up to an offset, written at Close and after every
// restorePointEvery bytes of log. Restore starts from it and reads only the
// lines after it; a point that is missing, unreadable, or does not fall on
// a line boundary of the log is ignored, and the whole log replayed.

// KindResumed is the event an operator's resume seals (Options.Resume).
const KindResumed = "resumed"

// maxEventLine bounds one line of the event log as Restore reads it. The
// device writes lines of a few hundred bytes; a longer one is not the
// device's and is skipped.
const maxEventLine = 64 << 10

// restorePointEvery is how many bytes of event log the scheduler seals
// between two restore points (about 4,500 lines).
const restorePointEvery = 1 << 20

// restorePointName is the restore point's file in the state directory.
const restorePointName = "events.restore"

// tally is the state the sealed event log amounts to.
type tally struct {
	Total   int      `json:"total"`             // indicators (a "suppressed" line counts those it stands for)
	Notices int      `json:"notices"`           // lost-write notices
	Tripped *Event   `json:"tripped,omitempty"` // the first readonly indicator since the last resume
	Frozen  []uint64 `json:"frozen,omitempty"`  // honeypot: files frozen since the last resume (0: every file)
	Recent  []Event  `json:"recent,omitempty"`  // the last few lines
}

// tallyOf says what e counts as: indicators, notices.
func tallyOf(e Event) (indicators, notices int) {
	switch e.Kind {
	case KindResumed:
		return 0, 0
	case "lost-write":
		return 0, 1
	}
	return max(e.Dropped, 1), 0
}

// add applies the next line of the log.
func (t *tally) add(e Event) {
	t.Recent = append(t.Recent, e)
	if len(t.Recent) > 16 {
		t.Recent = slices.Clone(t.Recent[len(t.Recent)-16:])
	}
	ind, not := tallyOf(e)
	t.Total += ind
	t.Notices += not
	switch {
	case e.Kind == KindResumed:
		t.Tripped, t.Frozen = nil, nil
	case ind == 0:
	case Response(e.Response) == ResponseReadOnly:
		if t.Tripped == nil {
			first := e
			t.Tripped = &first
		}
	case Response(e.Response) == ResponseHoneypot:
		for _, ino := range e.files() {
			if i, found := slices.BinarySearch(t.Frozen, ino); !found && len(t.Frozen) < maxDroppedInodes {
				t.Frozen = slices.Insert(t.Frozen, i, ino)
			}
		}
	}
}

func (t tally) clone() tally {
	t.Recent = slices.Clone(t.Recent)
	t.Frozen = slices.Clone(t.Frozen)
	return t
}

// restorePoint is the file Restore starts from.
type restorePoint struct {
	Version int   `json:"version"`
	Offset  int64 `json:"offset"` // bytes of the sealed event log the tally accounts for
	Tally   tally `json:"tally"`
}

// Restore replays the sealed event log, size bytes read through read, into
// the device's response state: the read-only trip, the honeypot freezes,
// the indicator and notice counts and the recent events, starting from the
// restore point at pointPath when it is usable ("" for none). With resume
// it then clears the trip and the freezes and queues a "resumed" event. It
// is called once, before the device serves.
func (d *Device) Restore(read func(p []byte, off int64) error, size int64, resume bool, pointPath string) error {
	ra := readerAtFunc(read)
	t, start := loadRestorePoint(pointPath, ra, size)
	r := bufio.NewReaderSize(io.NewSectionReader(ra, start, size-start), 64<<10)
	skipped := 0
	for {
		line, tooLong, err := readLine(r, maxEventLine)
		if err != nil && err != io.EOF {
			return fmt.Errorf("worm: reading the sealed event log: %w", err)
		}
		if err == io.EOF && len(line) == 0 && !tooLong {
			break
		}
		var e Event
		if tooLong || json.Unmarshal(line, &e) != nil {
			skipped++
		} else {
			t.add(e)
		}
		if err == io.EOF {
			break
		}
	}
	if skipped > 0 {
		d.log.Warn("indelible: lines of the sealed event log that do not parse were skipped", "lines", skipped)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.events
	l.mu.Lock()
	l.total, l.notices = t.Total, t.Notices
	l.recent = slices.Clone(t.Recent)
	l.sealed = t.clone()
	l.off, l.init = size, true
	l.mu.Unlock()
	d.pointPath, d.pointAt = pointPath, size
	if resume && (t.Tripped != nil || len(t.Frozen) > 0) {
		detail := fmt.Sprintf("an operator resumed writes: cleared %s and %d honeypot freezes", tripStr(t.Tripped), len(t.Frozen))
		d.log.Warn("indelible: "+detail, "indicators before", t.Total)
		l.queue(Event{Time: d.now().UTC(), Kind: KindResumed, Op: "startup", Response: "-", Detail: detail})
		return nil
	}
	if t.Tripped != nil {
		d.tripped = true
		d.log.Error("indelible: the device is read-only since an indicator of compromise: every write is refused until an operator resumes it (indelible events, indelible diff; then serve --resume)",
			"since", t.Tripped.Time, "kind", t.Tripped.Kind, "file", t.Tripped.File, "detail", t.Tripped.Detail)
	}
	for _, ino := range t.Frozen {
		if ino == 0 {
			for id := range d.paths {
				d.frozen[id] = true
			}
		} else {
			d.frozen[revfs.FileID(ino)] = true
		}
	}
	if len(t.Frozen) > 0 {
		d.log.Warn("indelible: honeypot: real logs stay frozen after earlier indicators (serve --resume unfreezes them)", "files", len(d.frozen))
	}
	return nil
}

// loadRestorePoint returns the restore point at path and the log offset it
// accounts for, or an empty tally and 0 when there is none it can use.
func loadRestorePoint(path string, log io.ReaderAt, size int64) (tally, int64) {
	if path == "" {
		return tally{}, 0
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return tally{}, 0
	}
	var p restorePoint
	if json.Unmarshal(b, &p) != nil || p.Version != 1 || p.Offset < 0 || p.Offset > size {
		return tally{}, 0
	}
	if p.Offset > 0 {
		// The point must end where a line of the log ends.
		nl := make([]byte, 1)
		if _, err := log.ReadAt(nl, p.Offset-1); err != nil || nl[0] != '\n' {
			return tally{}, 0
		}
	}
	return p.Tally, p.Offset
}

// saveRestorePoint writes what the sealed event log amounts to so far, if
// it grew by at least every bytes since the last point (every 0: always,
// as Close does). A failure costs only time at the next start, so it is
// logged, not returned. Called by the scheduler, and by Close once the
// scheduler has stopped.
func (d *Device) saveRestorePoint(every int64) {
	d.mu.Lock() // Restore sets the path while the scheduler runs
	path, at := d.pointPath, d.pointAt
	d.mu.Unlock()
	if path == "" {
		return
	}
	l := d.events
	l.mu.Lock()
	p := restorePoint{Version: 1, Offset: l.off, Tally: l.sealed.clone()}
	l.mu.Unlock()
	if every > 0 && p.Offset-at < every {
		return
	}
	b, err := json.Marshal(p)
	if err == nil {
		err = writeAtomic(path, b)
	}
	if err != nil {
		d.log.Warn("indelible: writing the event log's restore point failed (the next start replays more of the log)", "err", err)
		return
	}
	d.mu.Lock()
	d.pointAt = p.Offset
	d.mu.Unlock()
}

func tripStr(e *Event) string {
	if e == nil {
		return "no read-only trip"
	}
	return fmt.Sprintf("the read-only trip of %s (%s)", e.Time.Format("2006-01-02T15:04:05Z"), e.Kind)
}

// readerAtFunc adapts a read function to io.ReaderAt.
type readerAtFunc func(p []byte, off int64) error

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) {
	if err := f(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// readLine reads one '\n'-terminated line (without it) of at most max
// bytes; a longer line is consumed and reported tooLong.
func readLine(r *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	var buf bytes.Buffer
	for {
		chunk, isPrefix, err := r.ReadLine()
		if !tooLong {
			if buf.Len()+len(chunk) > max {
				tooLong = true
				buf.Reset()
			} else {
				buf.Write(chunk)
			}
		}
		if err != nil || !isPrefix {
			if tooLong {
				return nil, true, err
			}
			return buf.Bytes(), false, err
		}
	}
}
