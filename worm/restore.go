package worm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/indelible-worm/indelible/revfs"
)

// A response outlives the process that made it. The readonly response
// refuses "every later write", and honeypot stops a file's real log for
// good; both, and the indicator counts status shows, were held in memory
// only, so a restart (by an operator, or by a supervisor after a crash a
// host managed to cause) silently let writes in again. The sealed event log
// already records every indicator with its response, so New's caller
// replays it (Device.Restore): the device comes back read-only, its
// honeypot files frozen, its counts as they were. Only an operator clears
// that, by starting the device with Options.Resume, which seals a
// "resumed" line: lines before the last one no longer trip or freeze.

// KindResumed is the event an operator's resume seals (Options.Resume).
const KindResumed = "resumed"

// maxEventLine bounds one line of the event log as Restore reads it. The
// device writes lines of a few hundred bytes (Detail is bounded by the
// engine's messages); a longer one is not the device's and is skipped.
const maxEventLine = 64 << 10

// Restore replays the sealed event log, size bytes read through read,
// into the device's response state: the read-only trip, the honeypot
// freezes, the indicator and notice counts and the recent events. With
// resume it then clears the trip and the freezes and queues a "resumed"
// event. It is called once, before the device serves.
func (d *Device) Restore(read func(p []byte, off int64) error, size int64, resume bool) error {
	var (
		tripped        *Event
		frozen         = map[revfs.FileID]bool{}
		total, notices int
		recent         []Event
		skipped        int
	)
	r := bufio.NewReaderSize(io.NewSectionReader(readerAtFunc(read), 0, size), 64<<10)
	for {
		line, tooLong, err := readLine(r, maxEventLine)
		if err == io.EOF && len(line) == 0 && !tooLong {
			break
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("worm: reading the sealed event log: %w", err)
		}
		var e Event
		if tooLong || json.Unmarshal(line, &e) != nil {
			skipped++
			continue
		}
		recent = append(recent, e)
		if len(recent) > 16 {
			recent = recent[len(recent)-16:]
		}
		switch {
		case e.Kind == KindResumed:
			tripped, frozen = nil, map[revfs.FileID]bool{}
		case e.Kind == "lost-write":
			notices++
		default:
			total += max(e.Dropped, 1)
			switch Response(e.Response) {
			case ResponseReadOnly:
				if tripped == nil {
					tripped = &e
				}
			case ResponseHoneypot:
				if e.Inode != 0 {
					frozen[revfs.FileID(e.Inode)] = true
				} else {
					for id := range d.paths {
						frozen[id] = true
					}
				}
			}
		}
		if err == io.EOF {
			break
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events.mu.Lock()
	d.events.total += total
	d.events.notices += notices
	d.events.recent = append(recent, d.events.recent...)
	if len(d.events.recent) > 16 {
		d.events.recent = d.events.recent[len(d.events.recent)-16:]
	}
	d.events.mu.Unlock()
	if skipped > 0 {
		d.log.Warn("indelible: lines of the sealed event log that do not parse were skipped", "lines", skipped)
	}
	if resume && (tripped != nil || len(frozen) > 0) {
		detail := fmt.Sprintf("an operator resumed writes: cleared %s and %d honeypot freezes", tripStr(tripped), len(frozen))
		d.log.Warn("indelible: "+detail, "indicators before", total)
		d.events.notice(Event{Time: d.now().UTC(), Kind: KindResumed, Op: "startup", Response: "-", Detail: detail})
		return nil
	}
	if tripped != nil {
		d.tripped = true
		d.log.Error("indelible: the device is read-only since an indicator of compromise: every write is refused until an operator resumes it (indelible events, indelible diff; then serve --resume)",
			"since", tripped.Time, "kind", tripped.Kind, "file", tripped.File, "detail", tripped.Detail)
	}
	for id := range frozen {
		d.frozen[id] = true
	}
	if len(frozen) > 0 {
		d.log.Warn("indelible: honeypot: real logs stay frozen after earlier indicators (serve --resume unfreezes them)", "files", len(frozen))
	}
	return nil
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
