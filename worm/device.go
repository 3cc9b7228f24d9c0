// Package worm is the device core: it sits between the NBD server and the
// image file, classifies every host write with a Reverse File System engine,
// applies the violation policy, and seals coherent appends into the real logs.
//
// Locking: mu serialises the engine (revfs engines are not concurrent) and
// the policy state. A write that touches nothing the engine watches is written
// to the image without the lock and only recorded (engine.Wrote) under it, so
// unprotected traffic runs in parallel. A watched write whose recording is
// expensive (a jbd2 commit block) is answered once it is judged and written,
// and recorded by a goroutine that holds mu until it is done (recordLater).
package worm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/revfs"
)

// Sealer is the part of the seal store the device uses. A sealer may also
// implement BatchSealer.
type Sealer interface {
	// Append seals data at off of the file and makes it durable; off must be
	// the file's watermark. data is valid only during the call (the device
	// reuses the buffer).
	Append(id uint64, path string, off int64, data []byte) error
	Watermark(id uint64) int64
}

// EventLogID and EventLogPath name the device's own sealed event log in the
// store: one JSON line per indicator of compromise. The path does not start
// with a dot because SealFS's own verifier skips dot names, and a whole store
// must verify with it; `indelible init` refuses a protected file of this name.
const (
	EventLogID   uint64 = 1<<63 - 1
	EventLogPath        = "indelible-events.jsonl"
)

// Device is a blockdev.Device that enforces WORM semantics on an image.
type Device struct {
	img     blockdev.Device
	eng     revfs.Engine
	sealer  Sealer
	written *WrittenSet
	cfg     Config
	paths   map[revfs.FileID]string
	log     *slog.Logger
	now     func() time.Time

	mu       sync.Mutex
	tripped  bool                   // readonly response fired: every write fails
	spaceLow bool                   // volume-full raised; re-armed when free space rises above the threshold
	frozen   map[revfs.FileID]bool  // honeypot: no more appends for these files
	handed   map[revfs.FileID]int64 // bytes handed to the sealer per file
	events   *eventLog
	sealErr  error     // last sealing failure, reported by Status
	lastSeal time.Time // when the scheduler last sealed something
	// coherence is, per file, when each coherent length was first seen
	// (the data=ordered margin runs from there); nextDue is when the next
	// of them becomes ready to seal (zero: none pending).
	coherence map[revfs.FileID][]cohMark
	nextDue   time.Time
	// stalls is, per file, the ranges holding its coherent prefix back and
	// since when each has been seen unchanged (stalls.go).
	stalls map[revfs.FileID]*stallWatch

	// pointPath is the event log's restore point (restore.go), pointAt
	// the log offset of the last one written. Set by Restore; pointAt is
	// then the scheduler's.
	pointPath string
	pointAt   int64

	// laterBuf holds the bytes of a write being recorded after it was
	// answered (recordLater); reused, as one such write at a time holds mu.
	laterBuf []byte

	// Owned by the scheduler goroutine.
	slab     []byte // read buffer reused by every pass
	nextFile int    // where a bounded pass resumes
	// passes counts the scheduler's finished passes, so that tests can
	// wait for one instead of sleeping.
	passes atomic.Uint64

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

var _ blockdev.Device = (*Device)(nil)

// Options tune a Device.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Tick is how often the commit scheduler re-examines pending appends when
	// nothing wakes it (default 20 ms).
	Tick time.Duration
	// Resume clears, at OpenDir, the read-only trip and the honeypot
	// freezes the sealed event log holds (see Restore); the resume itself
	// is sealed in the event log.
	Resume bool
}

// New builds a Device over an opened image, engine and store and starts its
// commit scheduler. The device owns none of them except the scheduler: Close
// stops the scheduler and syncs the written-block map.
func New(img blockdev.Device, eng revfs.Engine, sealer Sealer, written *WrittenSet, cfg Config, opts Options) *Device {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Tick <= 0 {
		opts.Tick = 20 * time.Millisecond
	}
	d := &Device{
		img: img, eng: eng, sealer: sealer, written: written, cfg: cfg,
		paths:     map[revfs.FileID]string{},
		log:       opts.Logger,
		now:       opts.Now,
		frozen:    map[revfs.FileID]bool{},
		handed:    map[revfs.FileID]int64{},
		coherence: map[revfs.FileID][]cohMark{},
		stalls:    map[revfs.FileID]*stallWatch{},
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	for _, p := range cfg.Protected {
		d.paths[revfs.FileID(p.Inode)] = p.Path
	}
	d.events = &eventLog{sealer: sealer, log: opts.Logger}
	go d.scheduler(opts.Tick)
	return d
}

// Size is the image size.
func (d *Device) Size() int64 { return d.img.Size() }

// ReadAt serves reads straight from the image: nothing ever reads real logs
// back to the host.
func (d *Device) ReadAt(p []byte, off int64) (int, error) { return d.img.ReadAt(p, off) }

// WriteAt classifies and applies one host write.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	return d.write(p, off, false)
}

// WriteAtFUA is WriteAt followed by a flush of the image.
func (d *Device) WriteAtFUA(p []byte, off int64) (int, error) {
	return d.write(p, off, true)
}

func (d *Device) write(p []byte, off int64, fua bool) (int, error) {
	if off < 0 || int64(len(p)) > d.img.Size()-off {
		return 0, blockdev.ErrOutOfRange
	}
	d.mu.Lock()
	if d.tripped {
		d.mu.Unlock()
		return 0, blockdev.ErrRefused
	}
	if !d.eng.Watches(off, int64(len(p))) {
		d.mu.Unlock()
		n, err := d.img.WriteAt(p, off)
		if err != nil {
			return n, err
		}
		d.mu.Lock()
		d.eng.Wrote(off, p)
		d.mu.Unlock()
		return d.syncFUA(n, fua)
	}
	vs := d.eng.CheckWrite(off, p)
	if len(vs) > 0 {
		var err error
		p, err = d.respond(vs, p, off, "write")
		if err != nil {
			d.mu.Unlock()
			return 0, err
		}
	}
	later := len(vs) == 0 && d.recordLater()
	// With FUA the bytes are made durable after mu is released: a disk
	// sync under mu would stall every other request for its length (the
	// kernel's nbd client sends each jbd2 commit block with FUA).
	n, err := d.img.WriteAt(p, off)
	if err != nil {
		d.mu.Unlock()
		return n, err
	}
	if later {
		// The host gets its answer now; mu stays held until the write is
		// recorded, so no request sees the engine before that.
		d.laterBuf = append(d.laterBuf[:0], p...)
		go d.recordAndUnlock(d.laterBuf, off)
		return d.syncFUA(len(p), fua)
	}
	err = d.record(p, off)
	d.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return d.syncFUA(len(p), fua)
}

// syncFUA makes a write of n bytes that has landed durable when the host
// asked for FUA, after the device lock is released.
func (d *Device) syncFUA(n int, fua bool) (int, error) {
	if !fua {
		return n, nil
	}
	if err := d.img.Flush(); err != nil {
		return 0, err
	}
	return n, nil
}

// record has the engine record a watched write that landed, wakes the
// scheduler, and gives the volume-full verdict. Called with mu held.
func (d *Device) record(p []byte, off int64) error {
	d.eng.Wrote(off, p)
	d.poke()
	return d.checkSpace(p, off)
}

// laterRecorder is implemented by engines that can tell, right after
// CheckWrite accepted a write, that recording it (Wrote) will take long and
// what free space it will leave (revfs/ext4: a jbd2 commit block, whose
// transactions Wrote applies).
type laterRecorder interface {
	PendingRecord() (expensive bool, free, total uint64)
}

// recordLater reports whether the write CheckWrite just accepted may be
// answered before the engine records it: recording is expensive, and the
// write cannot raise a volume-full verdict that the readonly response must
// give this very request. A jbd2 commit block is on the path of every host
// fsync, and the host's next request (a FLUSH) starts its disk flush
// without the lock, so recording overlaps with it instead of delaying the
// answer. Called with mu held.
func (d *Device) recordLater() bool {
	lr, ok := d.eng.(laterRecorder)
	if !ok {
		return false
	}
	expensive, free, total := lr.PendingRecord()
	if !expensive {
		return false
	}
	if d.cfg.OnViolation == ResponseReadOnly && d.cfg.VolumeFullPercent > 0 && !d.spaceLow && total > 0 &&
		float64(free)*100 < float64(total)*d.cfg.VolumeFullPercent {
		return false
	}
	return true
}

// recordAndUnlock records an answered write (see recordLater) and releases
// mu, which the answering request left held.
func (d *Device) recordAndUnlock(p []byte, off int64) {
	defer d.mu.Unlock()
	if err := d.record(p, off); err != nil {
		// recordLater answers early only when the engine said this write
		// leaves free space above the threshold, so readonly cannot trip
		// here; if it does, the later requests are refused.
		d.log.Error("indelible: volume-full verdict after the write was answered", "off", off, "err", err)
	}
}

// checkSpace raises KindVolumeFull, once, when the write that just landed
// took the engine's free-block count under Config.VolumeFullPercent; it is
// armed again once free space rises above the threshold. The write has
// landed (the count is only known from the metadata it carried), so the
// response acts on what follows: readonly refuses this and every later
// write, honeypot freezes every file, discard has nothing to undo. Called
// with mu held.
func (d *Device) checkSpace(p []byte, off int64) error {
	sr, ok := d.eng.(revfs.SpaceReporter)
	if !ok || d.cfg.VolumeFullPercent <= 0 {
		return nil
	}
	free, total := sr.FreeBlocks()
	if total == 0 {
		return nil
	}
	low := float64(free)*100 < float64(total)*d.cfg.VolumeFullPercent
	if !low || d.spaceLow {
		d.spaceLow = low
		return nil
	}
	d.spaceLow = true
	vs := []revfs.Violation{{Kind: revfs.KindVolumeFull, Off: off, Len: int64(len(p)),
		Detail: fmt.Sprintf("%d of %d blocks free, under %g%%", free, total, d.cfg.VolumeFullPercent)}}
	_, err := d.respond(vs, p, off, "write")
	return err
}

// respond applies the configured response to the violations vs raised by a
// request. For a write it returns the bytes to write instead (discard
// restores the offending bytes to the image's current contents). Called with
// mu held.
func (d *Device) respond(vs []revfs.Violation, p []byte, off int64, op string) ([]byte, error) {
	resp := d.cfg.OnViolation
	for _, v := range vs {
		digest := ""
		if p != nil {
			lo, hi := clampRange(v.Off-off, v.Len, int64(len(p)))
			sum := sha256.Sum256(p[lo:hi])
			digest = hex.EncodeToString(sum[:])
		}
		d.events.record(Event{
			Time: d.now().UTC(), Kind: v.Kind.String(), Op: op,
			Off: v.Off, Len: v.Len, File: d.paths[v.File], Inode: uint64(v.File),
			Response: string(resp), Detail: v.Detail, SHA256: digest,
		})
	}
	switch resp {
	case ResponseDiscard:
		if p == nil {
			return nil, nil
		}
		q, rest, err := d.repairJournal(vs, p, off)
		if err != nil {
			return nil, err
		}
		q = append([]byte(nil), q...)
		for _, v := range rest {
			lo, hi := clampRange(v.Off-off, v.Len, int64(len(q)))
			if hi > lo {
				if _, err := d.img.ReadAt(q[lo:hi], off+lo); err != nil {
					return nil, fmt.Errorf("worm: discard: reading old bytes: %w", err)
				}
			}
		}
		return q, nil
	case ResponseHoneypot:
		for _, v := range vs {
			if v.File != 0 {
				d.frozen[v.File] = true
			} else {
				for id := range d.paths {
					d.frozen[id] = true
				}
			}
		}
		return p, nil
	default:
		d.tripped = true
		d.log.Error("indelible: write refused, device now read-only", "violations", len(vs), "first", vs[0].String())
		// The trip is sealed before the refusal is answered: a device
		// killed right after it must come back read-only (Restore).
		if err := d.events.flush(); err != nil {
			d.log.Error("indelible: sealing the event log failed", "err", err)
		}
		return nil, blockdev.ErrRefused
	}
}

// journalRepairer is implemented by engines whose violations can lie in
// bytes that landed before the request raising them: in revfs/ext4 a jbd2
// commit block makes count the journalled copies the host wrote earlier,
// and without a journal an unlink's inode write makes count the directory
// block that dropped the name earlier.
// Under the discard response such an engine restores the protected bytes
// of those copies through write (and whatever checksums cover them), and
// returns the request to write instead and the violations it left for the
// device to discard in the request itself.
type journalRepairer interface {
	RepairDiscard(off int64, p []byte, vs []revfs.Violation, write func(b []byte, off int64) error) ([]byte, []revfs.Violation, error)
}

// repairJournal lets a journalRepairer engine repair what vs blame outside
// the request. The repaired blocks are made durable before the request
// lands: a crash in between then leaves a transaction without its commit
// block, which no journal replay applies. Called with mu held.
func (d *Device) repairJournal(vs []revfs.Violation, p []byte, off int64) ([]byte, []revfs.Violation, error) {
	r, ok := d.eng.(journalRepairer)
	if !ok {
		return p, vs, nil
	}
	wrote := false
	q, rest, err := r.RepairDiscard(off, p, vs, func(b []byte, o int64) error {
		wrote = true
		_, err := d.img.WriteAt(b, o)
		return err
	})
	if err == nil && wrote {
		err = d.img.Flush()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("worm: discard: repairing the journal: %w", err)
	}
	return q, rest, nil
}

func clampRange(lo, n, size int64) (int64, int64) {
	hi := lo + n
	lo = max(lo, 0)
	hi = min(hi, size)
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// Trim discards a range after checking it covers nothing protected.
func (d *Device) Trim(off, length int64) error {
	return d.discard(off, length, func() error { return d.img.Trim(off, length) }, "trim")
}

// WriteZeroes zeroes a range after checking it covers nothing protected.
func (d *Device) WriteZeroes(off, length int64, mayPunch bool) error {
	return d.discard(off, length, func() error { return d.img.WriteZeroes(off, length, mayPunch) }, "write-zeroes")
}

func (d *Device) discard(off, length int64, do func() error, op string) error {
	if off < 0 || length < 0 || length > d.img.Size()-off {
		return blockdev.ErrOutOfRange
	}
	d.mu.Lock()
	if d.tripped {
		d.mu.Unlock()
		return blockdev.ErrRefused
	}
	if !d.eng.Watches(off, length) {
		// Free space (the host's fstrim, ext4's discard option): the
		// image's hole punching, which can take long over a large range,
		// runs without the lock, as an unwatched write's bytes do.
		d.mu.Unlock()
		if err := do(); err != nil {
			return err
		}
		d.mu.Lock()
		d.eng.Discarded(off, length)
		d.mu.Unlock()
		return nil
	}
	defer d.mu.Unlock()
	if h, ok := d.eng.(revfs.TrimHolder); ok && op == "trim" && h.HoldTrim(off, length) {
		return nil // accepted, left undone (revfs.TrimHolder)
	}
	if vs := d.eng.CheckDiscard(off, length); len(vs) > 0 {
		if _, err := d.respond(vs, nil, off, op); err != nil {
			return err
		}
		if d.cfg.OnViolation == ResponseDiscard {
			// Dropping the whole request keeps every protected byte; the
			// unprotected part of the range simply keeps its old contents,
			// which TRIM allows.
			return nil
		}
	}
	if err := do(); err != nil {
		return err
	}
	d.eng.Discarded(off, length)
	d.poke()
	return nil
}

// Flush makes every completed write durable, then tells the engine: a FLUSH
// is the only ordering point the host gives.
//
// Every completed write has recorded its blocks once mu is free (Wrote runs
// before the write is answered, or, for a write answered early, before mu is
// released), so the map copied after taking mu covers them; it is made
// durable after the image (flushImageThenMap), before the FLUSH is
// answered. That costs one more disk flush than syncing both at once, which
// would let a power cut leave the map ahead of the image.
func (d *Device) Flush() error {
	// A write answered before it was recorded (recordLater) adds its
	// blocks to the map with mu held: wait for it.
	d.mu.Lock()
	d.mu.Unlock()
	if err := d.flushImageThenMap(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.eng.Flushed()
	d.poke()
	if fj, ok := d.eng.(revfs.FlushJudge); ok {
		if vs := fj.FlushViolations(); len(vs) > 0 {
			// What the engine could judge only now has already landed:
			// honeypot freezes the files and lets it be; discard and
			// readonly have the engine undo it in the image (durably,
			// before the FLUSH is answered), so that a later recovery
			// of the image does not apply it, and readonly then fails
			// this FLUSH and every later write.
			_, refused := d.respond(vs, nil, 0, "flush")
			if d.cfg.OnViolation != ResponseHoneypot {
				if err := fj.DiscardAtFlush(func(b []byte, off int64) error {
					_, err := blockdev.WriteFUA(d.img, b, off)
					return err
				}); err != nil {
					return errors.Join(refused, fmt.Errorf("worm: undoing at flush what the host forged: %w", err))
				}
			}
			if refused != nil {
				return refused
			}
		}
	}
	return nil
}

// flushImageThenMap flushes the image, then makes the written-block map,
// as it was when the flush began, durable. After a power cut the map must
// never say a block was written whose data did not survive (its stale
// contents would count as the host's): a write running beside the flush
// adds its blocks after its bytes reached the image, maybe after the flush
// began, so the map is copied first and written after. A kill needs no
// such care: the epoch log restores the map (epochlog.go).
func (d *Device) flushImageThenMap() error {
	snap := d.written.Snapshot()
	if err := d.img.Flush(); err != nil {
		snap.Abandon()
		return err
	}
	return snap.Write()
}

// poke wakes the scheduler without blocking.
func (d *Device) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Close stops the scheduler after one last pass, then syncs the state.
// It does not close the image, engine or store.
func (d *Device) Close() error {
	d.mu.Lock() // a write still being recorded (recordLater) finishes first
	d.mu.Unlock()
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
	d.saveRestorePoint(0)
	return d.flushImageThenMap()
}

// ErrTripped is returned by Status users to explain a read-only device.
var ErrTripped = errors.New("worm: device is read-only after an indicator of compromise")
