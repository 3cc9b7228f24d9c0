package worm

import (
	"time"

	"github.com/indelible-worm/indelible/revfs"
)

// maxSealChunk bounds how much of one file a single scheduler pass reads and
// seals, so memory stays bounded when a large backlog becomes coherent.
const maxSealChunk = 4 << 20

// sealJob is a coherent range handed from the engine to the store.
type sealJob struct {
	id   revfs.FileID
	path string
	off  int64
	data []byte
}

func (d *Device) scheduler(tick time.Duration) {
	defer close(d.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	var retry []sealJob
	for {
		select {
		case <-d.stop:
			retry = d.pass(retry)
			d.events.flush()
			return
		case <-d.wake:
		case <-t.C:
		}
		retry = d.pass(retry)
		if err := d.events.flush(); err != nil {
			d.log.Error("indelible: sealing the event log failed", "err", err)
		}
	}
}

// ready reports whether a file's coherent prefix may be sealed now, by the
// coherence rules of DESIGN.md.
func (d *Device) ready(st revfs.FileState, now time.Time) bool {
	idle := now.Sub(st.LastTouch)
	switch {
	case st.Journalled && st.DataJournalled:
		return true // data=journal: the commit block is the point of coherence
	case st.Journalled:
		return idle >= d.cfg.Commit.OrderedMargin.Duration
	default:
		return idle >= d.cfg.Commit.Quiescence.Duration+d.cfg.Commit.Delay.Duration
	}
}

// pass hands every ready coherent range to the store. Ranges are marked
// committed in the engine before they are sealed, so that no host write can
// change bytes between the read and the seal; a failed seal is retried.
func (d *Device) pass(retry []sealJob) []sealJob {
	jobs := retry
	busy := map[revfs.FileID]bool{}
	for _, j := range retry {
		busy[j.id] = true
	}
	now := d.now()
	d.mu.Lock()
	for _, st := range d.eng.Files() {
		if d.frozen[st.ID] || busy[st.ID] {
			continue
		}
		base := d.handedOff(st.ID)
		if st.Coherent <= base || !d.ready(st, now) {
			continue
		}
		n := min(st.Coherent-base, maxSealChunk)
		buf := make([]byte, n)
		if err := d.eng.ReadFile(st.ID, buf, base); err != nil {
			d.log.Error("indelible: reading coherent bytes failed", "file", d.paths[st.ID], "off", base, "err", err)
			continue
		}
		d.eng.SetCommitted(st.ID, base+n)
		d.handed[st.ID] = base + n
		jobs = append(jobs, sealJob{id: st.ID, path: d.paths[st.ID], off: base, data: buf})
	}
	d.mu.Unlock()

	var failed []sealJob
	for i, j := range jobs {
		if err := d.sealer.Append(uint64(j.id), j.path, j.off, j.data); err != nil {
			d.mu.Lock()
			d.sealErr = err
			d.mu.Unlock()
			d.log.Error("indelible: sealing failed; will retry", "file", j.path, "off", j.off, "len", len(j.data), "err", err)
			// Keep order per file: this job and every later one wait.
			failed = append(failed, jobs[i:]...)
			break
		}
		d.mu.Lock()
		d.sealErr = nil
		d.lastSeal = d.now()
		d.mu.Unlock()
	}
	if len(jobs) > 0 && len(failed) == 0 {
		d.poke() // more may be ready (a chunk-limited backlog)
	}
	return failed
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
