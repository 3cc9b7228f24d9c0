package worm

import (
	"time"

	"github.com/indelible-worm/indelible/revfs"
)

// maxSealChunk bounds how much of one file a single scheduler pass reads and
// seals, and maxPassBytes how much of all files together, so memory stays
// bounded (a few MiB, reused from pass to pass) when a large backlog becomes
// coherent at once; a pass that hits a bound wakes the scheduler again, and
// the next batch starts as soon as this one is done. Variables so that
// tests can make a backlog out of a few bytes.
var (
	maxSealChunk int64 = 4 << 20
	maxPassBytes int64 = 8 << 20
)

// SealPassLimits reports how much one scheduler pass reads and seals at
// most: perFile bytes of one file, perPass of all files together. Under a
// backlog the device seals pass after pass of that size, each durable
// before the next; bench/seal measures that shape (BenchmarkDevicePass).
func SealPassLimits() (perFile, perPass int64) { return maxSealChunk, maxPassBytes }

// sealJob is a coherent range handed from the engine to the store.
type sealJob struct {
	id   revfs.FileID
	path string
	off  int64
	data []byte
}

// SealOp is one append of a batch (see BatchSealer).
type SealOp struct {
	ID   uint64
	Path string
	Off  int64
	Data []byte
}

// BatchSealer is implemented by sealers that can seal appends to several
// files and make them durable together. The scheduler then pays for one
// round of durability per pass instead of one per file. On error, the ops
// before the failed one are sealed and durable, and done says how many.
type BatchSealer interface {
	AppendBatch(ops []SealOp) (done int, err error)
}

// cohMark records that a file's coherent prefix reached n at time at.
type cohMark struct {
	n  int64
	at time.Time
}

// maxCohMarks bounds the coherence history kept per file; marks are spaced
// by at least a sixteenth of the ordered margin, so about 17 are in use.
const maxCohMarks = 32

// scheduler owns sealing. Its loop keeps observing coherent lengths (each
// data=ordered margin runs from the moment a length is first seen) while a
// batch is being sealed in the background, so that a slow seal delays the
// next seal but not the start of the margins behind it. One batch is in
// flight at a time: a file's ranges reach the store in order.
func (d *Device) scheduler(tick time.Duration) {
	defer close(d.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	// due fires when the next data=ordered margin ends, so that the seal
	// does not wait for the next tick as well.
	due := time.NewTimer(time.Hour)
	due.Stop()
	defer due.Stop()
	// gate fires when the seal interval since the last batch started has
	// passed, so that bytes held back by it do not wait for the next tick.
	// The interval is measured on the real clock: it batches disk work.
	gate := time.NewTimer(time.Hour)
	gate.Stop()
	defer gate.Stop()
	var lastBatch time.Time
	var retry []sealJob
	// backlog: the last pass that took jobs left ready bytes behind.
	backlog := false
	var sealed chan []sealJob // non-nil while a batch is in flight
	for {
		select {
		case <-d.stop:
			if sealed != nil {
				retry = <-sealed
			}
			if jobs, _ := d.pass(retry, true); len(jobs) > 0 {
				d.seal(jobs)
			}
			d.events.flush()
			return
		case <-d.wake:
		case <-t.C:
		case <-due.C:
		case <-gate.C:
		case retry = <-sealed:
			sealed = nil
			if len(retry) > 0 {
				continue // a failed seal is retried at the next tick or poke, not at once
			}
		}
		take := sealed == nil
		// Bytes a bounded pass had to leave behind were ready at the last
		// batch: they go as soon as it is done, not an interval later (a
		// backlog waiting for the gate would only grow).
		if take && !backlog {
			if wait := d.cfg.Commit.SealInterval.Duration - time.Since(lastBatch); wait > 0 {
				take = false
				gate.Reset(wait)
			}
		}
		var jobs []sealJob
		if take {
			jobs, backlog = d.pass(retry, true)
		} else {
			d.pass(nil, false) // still note coherent lengths: the margins run from here
		}
		d.passes.Add(1)
		if len(jobs) > 0 {
			lastBatch = time.Now()
			retry = nil
			sealed = make(chan []sealJob, 1)
			go func(ch chan<- []sealJob) { ch <- d.seal(jobs) }(sealed)
		}
		if err := d.events.flush(); err != nil {
			d.log.Error("indelible: sealing the event log failed", "err", err)
		}
		d.saveRestorePoint(restorePointEvery)
		if !d.nextDue.IsZero() {
			due.Reset(max(d.nextDue.Sub(d.now()), 0))
		}
	}
}

// sealLimit returns how much of a file's coherent prefix may be sealed now,
// by the coherence rules of DESIGN.md. Called with mu held.
//
// In data=ordered the point of coherence is the jbd2 commit that carried the
// size; the margin runs from the moment the device first saw each coherent
// length, not from the file's last write: a host that appends without pause
// keeps touching the file, and a margin counted from its last write would
// hold every append back until the host stops (no liveness, I3).
func (d *Device) sealLimit(st revfs.FileState, now time.Time) int64 {
	switch {
	case st.Journalled && st.DataJournalled:
		return st.Coherent // data=journal: the commit block is the point of coherence
	case st.Journalled:
		return d.noteCoherent(st.ID, st.Coherent, now)
	default:
		if now.Sub(st.LastTouch) >= d.cfg.Commit.Quiescence.Duration+d.cfg.Commit.Delay.Duration {
			return st.Coherent
		}
		return 0
	}
}

// noteCoherent adds the coherent length c seen at now to the file's history
// and returns the longest length that has been coherent for at least the
// ordered margin. Called with mu held.
func (d *Device) noteCoherent(id revfs.FileID, c int64, now time.Time) int64 {
	margin := d.cfg.Commit.OrderedMargin.Duration
	h := d.coherence[id]
	// A shorter prefix than before (the engine lost trust in metadata it had
	// seen) invalidates the longer marks.
	for len(h) > 0 && h[len(h)-1].n > c {
		h = h[:len(h)-1]
	}
	if len(h) == 0 || (c > h[len(h)-1].n && now.Sub(h[len(h)-1].at) >= margin/16 && len(h) < maxCohMarks) {
		h = append(h, cohMark{c, now})
	}
	// Keep only the newest mark old enough, and the ones after it.
	ready := -1
	for i, m := range h {
		if now.Sub(m.at) >= margin {
			ready = i
		}
	}
	limit := int64(0)
	if ready >= 0 {
		limit = h[ready].n
		h = append(h[:0], h[ready:]...)
	}
	d.coherence[id] = h
	// The next mark to become ready tells the scheduler when to look again.
	for _, m := range h {
		if m.n > limit {
			if at := m.at.Add(margin); d.nextDue.IsZero() || at.Before(d.nextDue) {
				d.nextDue = at
			}
			break
		}
	}
	return limit
}

// pass notes every file's coherent length and, when take is set, returns
// the jobs to seal next: the retried ones first, then every ready coherent
// range; bounded reports that the pass's bounds left ready bytes behind.
// Ranges are marked committed in the engine before they are sealed, so that
// no host write can change bytes between the read and the seal. Called by
// the scheduler only.
func (d *Device) pass(retry []sealJob, take bool) (jobs []sealJob, bounded bool) {
	jobs = retry
	busy := map[revfs.FileID]bool{}
	for _, j := range retry {
		busy[j.id] = true
	}
	// The slab is reused when no retried job still points into it.
	var slab []byte
	if take && len(retry) == 0 {
		if d.slab == nil {
			d.slab = make([]byte, maxPassBytes)
		}
		slab = d.slab
	}
	now := d.now()
	more := false // coherent bytes left behind: look again at once
	full := false // the slab is used up: take no more jobs
	d.mu.Lock()
	d.nextDue = time.Time{}
	files := d.eng.Files()
	// Start where the last pass stopped so that a bounded pass does not
	// always favour the first files.
	start := d.nextFile % max(len(files), 1)
	for k := range files {
		i := (start + k) % len(files)
		st := files[i]
		if d.frozen[st.ID] {
			continue
		}
		if d.watchStalls(st, now) {
			more = true // a range taken as found moved the coherent prefix
		}
		limit := d.sealLimit(st, now)
		if !take || busy[st.ID] || full {
			continue
		}
		base := d.handedOff(st.ID)
		if limit <= base {
			continue
		}
		n := min(limit-base, maxSealChunk)
		if slab != nil {
			n = min(n, int64(len(slab)))
			if n == 0 {
				more, full, bounded = true, true, true
				d.nextFile = i
				continue
			}
		}
		var buf []byte
		if slab != nil {
			buf, slab = slab[:n:n], slab[n:]
		} else {
			buf = make([]byte, n)
		}
		if err := d.eng.ReadFile(st.ID, buf, base); err != nil {
			d.log.Error("indelible: reading coherent bytes failed", "file", d.paths[st.ID], "off", base, "err", err)
			continue
		}
		d.eng.SetCommitted(st.ID, base+n)
		d.handed[st.ID] = base + n
		if base+n < limit {
			more, bounded = true, true
		}
		jobs = append(jobs, sealJob{id: st.ID, path: d.paths[st.ID], off: base, data: buf})
	}
	d.mu.Unlock()
	if more {
		d.poke() // a bounded pass left coherent bytes behind
	}
	return jobs, bounded
}

// seal hands jobs to the sealer, as one batch when it can take one, and
// returns the jobs not sealed (to retry, in order). A retried job may still
// point into the slab: pass does not reuse the slab while there are any.
func (d *Device) seal(jobs []sealJob) []sealJob {
	if len(jobs) == 0 {
		return nil
	}
	var done int
	var err error
	if bs, ok := d.sealer.(BatchSealer); ok && len(jobs) > 1 {
		ops := make([]SealOp, len(jobs))
		for i, j := range jobs {
			ops[i] = SealOp{ID: uint64(j.id), Path: j.path, Off: j.off, Data: j.data}
		}
		done, err = bs.AppendBatch(ops)
	} else {
		for _, j := range jobs {
			if err = d.sealer.Append(uint64(j.id), j.path, j.off, j.data); err != nil {
				break
			}
			done++
		}
	}
	d.mu.Lock()
	if done > 0 {
		d.lastSeal = d.now()
	}
	d.sealErr = err
	d.mu.Unlock()
	if err == nil {
		return nil
	}
	j := jobs[min(done, len(jobs)-1)]
	d.log.Error("indelible: sealing failed; will retry", "file", j.path, "off", j.off, "len", len(j.data), "err", err)
	// Keep order per file: the failed job and every later one wait.
	return jobs[done:]
}

// handedOff is how many bytes of the file were handed to the store (sealed
// or being sealed). Called with mu held.
func (d *Device) handedOff(id revfs.FileID) int64 {
	if n, ok := d.handed[id]; ok {
		return n
	}
	n := d.sealer.Watermark(uint64(id))
	d.handed[id] = n
	return n
}
