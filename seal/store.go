package seal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/indelible-worm/indelible/internal/durable"
	"github.com/indelible-worm/indelible/internal/regfile"
)

// FileRef names a real log: ID is the SealFS "inode" recorded in entries (the
// ext4 inode of the protected file in the image), Path its store-relative,
// slash-separated location.
type FileRef struct {
	ID   uint64
	Path string
}

// Options tunes an open store.
type Options struct {
	// GroupCommit is the longest an Append waits for others to share its
	// fsyncs. 0 syncs at once (appends that arrive while a sync runs still
	// share the next one). Either way Append returns only when its entry,
	// its data and the key burn are durable.
	GroupCommit time.Duration
	// Logger receives key-usage warnings and recovery reports; nil discards.
	Logger *slog.Logger
	// Now stamps side records; nil means time.Now.
	Now func() time.Time
	// StampEvery is how often a sealed time record dates the entries: the
	// first append after Open and then the first one after each interval
	// gets one (56 bytes). 0 means DefaultStampEvery; negative disables.
	StampEvery time.Duration
}

// DefaultStampEvery dates appends to the minute at a cost of ~29 MB of
// side records per year of continuous appending.
const DefaultStampEvery = time.Minute

func (s *Store) stampEvery() time.Duration {
	if s.opts.StampEvery == 0 {
		return DefaultStampEvery
	}
	return s.opts.StampEvery
}

// Store is an open sealed-log store. Its methods are safe for concurrent use.
type Store struct {
	dir      string
	opts     Options
	log      *slog.Logger
	nratchet int
	magic    uint64
	keySlots int64 // keys in the keystream

	lf, kf, sf, rf *os.File
	statePath      string
	// root confines every open of a file inside the store (real logs
	// named by map records, .SEALFS.LOG, the side records) to the store:
	// a symbolic link planted there cannot make recovery cut a file
	// elsewhere.
	root *os.Root

	mu        sync.Mutex
	cond      *sync.Cond
	next      int64         // entries sealed (maybe not yet written, maybe not durable)
	key       [KeySize]byte // key of entry next when next%nratchet != 0
	durable   int64         // entries acknowledged durable
	ackKey    [KeySize]byte // key of entry durable, as the ratchet state on disk holds it
	burnt     int64         // keystream header burnt value on disk; only commit and Open change it
	syncing   bool
	files     map[uint64]*realLog
	paths     map[string]uint64
	dirty     map[*realLog]bool
	newDirs   map[string]bool // directories whose new entries the next commit must sync
	metaDirt  bool            // records or .SEALFS.LOG changed outside pend
	recsDirty bool            // the side-record file changed since the last commit took it
	recSize   int64           // size of the side-record file
	err       error           // sticky: a failed sync leaves durability unknown
	closed    bool
	warned    int // last key-usage percentage warned about
	m         *mac
	repair    *Repair
	lastStamp time.Time // device clock of the last time record

	// Entries [pendFirst, next) are sealed but only in pend: the commit
	// writes them to .SEALFS.LOG with one write, instead of one write per
	// append. spare is the other half of the double buffer.
	pend, spare []byte
	pendFirst   int64

	// Scratch of macSideBySide, reused from batch to batch (under mu).
	macb     macBatch
	macJobs  []macJob
	macHeads [][entryHeadSize]byte

	// hook, when set (tests only), runs at each stage of a commit; burn
	// says whether the commit burns keystream keys.
	hook func(stage commitStage, burn bool)
}

// commitStage names the points inside a commit where crash tests kill the
// process or capture what a power loss could leave on disk.
type commitStage int

const (
	stageWritten      commitStage = iota + 1 // round 1 written (entries, intent), nothing synced
	stageRound1                              // round 1 durable
	stageBurnWritten                         // round 2: keystream burn written, state not yet
	stageStateWritten                        // round 2: state written too, not yet synced
	stageRound2                              // round 2 durable, not yet acknowledged
)

func (s *Store) at(stage commitStage, burn bool) {
	if s.hook != nil {
		s.hook(stage, burn)
	}
}

type realLog struct {
	ref  FileRef
	f    *os.File
	size int64 // sealed watermark
}

// Open opens a store for appending. After a crash it first repairs the
// store to its last acknowledged state: it drops entries, side records and
// real-log bytes that were never acknowledged, finishes an interrupted key
// burn, and seals a repair record describing what it changed (Recovery
// returns it). Acknowledged data that is missing is not a crash artefact and
// makes Open fail with ErrCorrupt.
func Open(storeDir, devKeyPath string, opts Options) (*Store, error) {
	s := &Store{dir: storeDir, opts: opts, log: opts.Logger, statePath: devKeyPath + StateSuffix,
		files: map[uint64]*realLog{}, paths: map[string]uint64{}, dirty: map[*realLog]bool{},
		newDirs: map[string]bool{}, m: newMAC()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.opts.Now == nil {
		s.opts.Now = time.Now
	}
	s.cond = sync.NewCond(&s.mu)
	if err := s.open(devKeyPath); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(devKeyPath string) error {
	var err error
	if s.root, err = os.OpenRoot(s.dir); err != nil {
		return fmt.Errorf("seal: open store: %w", err)
	}
	if s.lf, err = s.root.OpenFile(LogName, os.O_RDWR, 0); err != nil {
		return fmt.Errorf("seal: open store: %w", err)
	}
	if err := lockStore(s.lf); err != nil {
		return fmt.Errorf("seal: open store %s: %w", s.dir, err)
	}
	if s.kf, err = os.OpenFile(devKeyPath, os.O_RDWR, 0); err != nil {
		return fmt.Errorf("seal: open device keystream: %w", err)
	}
	if s.rf, err = s.root.OpenFile(filepath.FromSlash(RecordsName), os.O_RDWR|os.O_CREATE, 0o640); err != nil {
		return fmt.Errorf("seal: open side records: %w", err)
	}
	var lh [LogHeaderSize]byte
	if _, err := s.lf.ReadAt(lh[:], 0); err != nil {
		return &FormatError{File: LogName, Struct: "log header", Msg: err.Error()}
	}
	s.magic = leU64(lh[:])
	kst, err := s.kf.Stat()
	if err != nil {
		return err
	}
	var kh [KeyHeaderSize]byte
	if _, err := s.kf.ReadAt(kh[:], 0); err != nil {
		return &FormatError{File: "device keystream", Struct: "key header", Msg: err.Error()}
	}
	hdr, err := ParseKeyHeader(kh[:], kst.Size())
	if err != nil {
		return err
	}
	if hdr.Magic != s.magic {
		return fmt.Errorf("%w: log %#x, device keystream %#x; wrong key for this store?", ErrBadMagic, s.magic, hdr.Magic)
	}
	s.burnt = int64(hdr.Burnt)
	s.keySlots = keySlot(kst.Size())

	lst, err := s.lf.Stat()
	if err != nil {
		return err
	}
	found := (lst.Size() - LogHeaderSize) / EntrySize
	if found < 0 {
		found = 0
	}
	st, err := s.readState(found)
	if err != nil {
		return err
	}
	if st.KeyMagic != s.magic {
		return fmt.Errorf("%w: ratchet state belongs to keystream %#x", ErrBadMagic, st.KeyMagic)
	}
	s.nratchet = st.NRatchet
	if p, err := regfile.ReadSmall(filepath.Join(s.dir, ParamsName), maxParamsBytes); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(p))); err == nil && v != s.nratchet {
			return fmt.Errorf("%w: store params say nratchet %d, ratchet state %d", ErrCorrupt, v, s.nratchet)
		}
	}
	if st.Version < 2 {
		st.BurnFrom = s.burnt
	}
	// A commit in flight (Target > Committed) is finished when its second
	// round had begun, and undone otherwise (see commit).
	n, key := st.Committed, st.NextKey
	finished := false
	if st.Target > st.Committed {
		started, err := s.secondRoundStarted(&st, found)
		if err != nil {
			return err
		}
		if started {
			n, key, finished = st.Target, st.TargetKey, true
		}
	}
	if found < n {
		if finished {
			return fmt.Errorf("%w: %s holds %d entries but a commit of %d had burnt keys (truncated or tampered)", ErrCorrupt, LogName, found, n)
		}
		return fmt.Errorf("%w: %s holds %d entries but %d were acknowledged (keys burnt without entries: truncated or tampered)", ErrCorrupt, LogName, found, n)
	}
	wm, an, err := s.scanEntries(n)
	if err != nil {
		return err
	}
	rep := &Repair{Committed: n, Found: found, DroppedEntries: found - n}
	cut, err := s.loadRecords(n, an)
	if err != nil {
		return err
	}
	for id := range wm {
		if _, ok := s.files[id]; !ok {
			return fmt.Errorf("%w: entries for file %d have no map record", ErrCorrupt, id)
		}
	}
	ids := make([]uint64, 0, len(s.files))
	for id := range s.files {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		rl := s.files[id]
		rl.size = wm[id]
		f, err := s.root.OpenFile(filepath.FromSlash(rl.ref.Path), os.O_RDWR|os.O_CREATE, 0o640)
		if err != nil {
			return fmt.Errorf("seal: open real log: %w", err)
		}
		rl.f = f
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		switch {
		case fi.Size() < rl.size:
			return fmt.Errorf("%w: real log %s has %d bytes but %d were sealed and acknowledged", ErrCorrupt, rl.ref.Path, fi.Size(), rl.size)
		case fi.Size() > rl.size:
			if err := f.Truncate(rl.size); err != nil {
				return err
			}
			rep.Files = append(rep.Files, FileRepair{ID: id, OldSize: fi.Size(), NewSize: rl.size})
			s.dirty[rl] = true
		}
	}
	removedBefore := len(rep.Files)
	if err := s.removeUnacknowledged(cut, rep); err != nil {
		return err
	}
	if err := s.cutRecordsAfterRemovals(len(rep.Files) > removedBefore); err != nil {
		return err
	}
	if lst.Size() != entryPos(n) {
		if err := s.lf.Truncate(entryPos(n)); err != nil {
			return err
		}
		s.metaDirt = true
	}
	// Keys: every block with an acknowledged entry must be burnt.
	want := s.keysFor(n)
	if s.burnt > want {
		return fmt.Errorf("%w: keystream burnt up to %d but acknowledged entries need only %d (stale ratchet state?)", ErrCorrupt, s.burnt, want)
	}
	if rep.BurnCompleted, err = s.finishBurn(min(st.BurnFrom, s.burnt), want); err != nil {
		return err
	}
	s.next, s.durable, s.pendFirst = n, n, n
	if n%int64(s.nratchet) != 0 {
		s.key, s.ackKey = key, key
	}
	// The state on disk must name what Open decided before anything new
	// is sealed: a finished commit's count, or no commit in flight.
	if st.Version < 2 || st.Committed != n || st.Target != n {
		if err := s.writeState(n, key, n, key); err != nil {
			return err
		}
		if err := durable.Datasync(s.sf); err != nil {
			return err
		}
	}
	s.warnUsage()
	partial := lst.Size() > entryPos(found)
	if rep.DroppedEntries > 0 || partial || len(rep.Files) > 0 || rep.BurnCompleted > 0 || s.metaDirt || finished {
		s.repair = rep
		s.log.Warn("seal: repaired store after a crash", "store", s.dir, "acknowledged", n, "finished_commit", finished,
			"dropped_entries", rep.DroppedEntries, "truncated_files", len(rep.Files), "burns_completed", rep.BurnCompleted)
		if err := s.sealRepair(rep); err != nil {
			return err
		}
	}
	for _, id := range ids {
		s.log.Info("seal: watermark", "id", id, "path", s.files[id].ref.Path, "bytes", s.files[id].size)
	}
	return nil
}

// keysFor is the keystream burnt offset that n sealed entries need: every
// block holding one of them has had its key burnt.
func (s *Store) keysFor(n int64) int64 {
	return keyOff((n + int64(s.nratchet) - 1) / int64(s.nratchet))
}

// secondRoundStarted tells whether the commit in flight that st describes
// had begun burning keys: the keystream header went past what the
// acknowledged entries need, or one of the keys only that commit burns
// holds the burnt pattern. Either means its first round was durable. Keys
// are looked at only as far as the found entries reach: a commit whose
// entries are not all there never started its second round.
func (s *Store) secondRoundStarted(st *RatchetState, entries int64) (bool, error) {
	lo := s.keysFor(st.Committed)
	if s.burnt > lo {
		return true, nil
	}
	hi := min(s.keysFor(min(st.Target, entries)), keyOff(s.keySlots))
	found := false
	err := s.scanKeys(lo, hi, func(slot int64, k []byte) bool {
		found = [KeySize]byte(k) == burntKey(s.magic, slot)
		return !found
	})
	return found, err
}

// scanKeys calls f for the device keystream's keys in [lo, hi) (byte
// offsets), in chunks, until f returns false. The keys are read, not
// trusted: lo and hi come from the ratchet state.
func (s *Store) scanKeys(lo, hi int64, f func(slot int64, key []byte) bool) error {
	buf := make([]byte, 64<<10)
	for off := lo; off < hi; {
		b := buf[:min(int64(len(buf)), hi-off)]
		if _, err := s.kf.ReadAt(b, off); err != nil {
			return fmt.Errorf("seal: read keystream: %w", err)
		}
		for i := 0; i+KeySize <= len(b); i += KeySize {
			if !f(keySlot(off+int64(i)), b[i:i+KeySize]) {
				return nil
			}
		}
		off += int64(len(b))
	}
	return nil
}

// finishBurn makes sure every key in [from, want) is burnt and the header
// says want, after a crash that may have left any part of a burn on disk.
// It returns how many keys it burnt: those the header did not yet cover,
// and any below the header whose burn never reached the disk.
func (s *Store) finishBurn(from, want int64) (int64, error) {
	if from >= want {
		return 0, nil
	}
	var fix []int64
	if err := s.scanKeys(from, want, func(slot int64, k []byte) bool {
		if [KeySize]byte(k) != burntKey(s.magic, slot) {
			fix = append(fix, slot)
		}
		return true
	}); err != nil {
		return 0, err
	}
	n := (want - max(from, s.burnt)) / KeySize
	for _, slot := range fix {
		if keyOff(slot) < s.burnt {
			n++
		}
		k := burntKey(s.magic, slot)
		if _, err := s.kf.WriteAt(k[:], keyOff(slot)); err != nil {
			return 0, fmt.Errorf("seal: burn keys: %w", err)
		}
	}
	if len(fix) == 0 && s.burnt == want {
		return 0, nil
	}
	if err := s.writeKeyHeader(want); err != nil {
		return 0, err
	}
	if err := durable.Datasync(s.kf); err != nil {
		return 0, err
	}
	s.burnt = want
	return n, nil
}

// readState loads the ratchet state; a store made by SealFS itself has none
// and is accepted when every ratchet block is complete.
func (s *Store) readState(found int64) (RatchetState, error) {
	sf, err := os.OpenFile(s.statePath, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		nr, perr := readParams(s.dir)
		if perr != nil {
			nr = DefaultNRatchet
		}
		n := found
		if n%int64(nr) != 0 || keyOff(n/int64(nr)) != s.burnt {
			return RatchetState{}, fmt.Errorf("%w: no ratchet state %s and the log does not end a ratchet block", ErrCorrupt, s.statePath)
		}
		if sf, err = os.OpenFile(s.statePath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return RatchetState{}, err
		}
		s.sf = sf
		s.nratchet = nr
		st := RatchetState{KeyMagic: s.magic, NRatchet: nr, Committed: n, Target: n, BurnFrom: s.burnt, Version: 2}
		if err := s.writeState(n, st.NextKey, n, st.NextKey); err != nil {
			return RatchetState{}, err
		}
		return st, durable.Datasync(sf)
	}
	if err != nil {
		return RatchetState{}, fmt.Errorf("seal: open ratchet state: %w", err)
	}
	s.sf = sf
	b := make([]byte, stateSize+1)
	k, _ := sf.ReadAt(b, 0)
	return ParseRatchetState(b[:k])
}

// maxParamsBytes bounds the params file: a number of ratchet blocks and a
// newline.
const maxParamsBytes = 64

// maxEntryCount is the most bytes an entry may seal; a larger count is a
// corrupt entry. A variable for tests.
var maxEntryCount uint64 = 1 << 40

func readParams(dir string) (int, error) {
	p, err := regfile.ReadSmall(filepath.Join(dir, ParamsName), maxParamsBytes)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(p)))
	if err != nil || v < 1 || v > MaxNRatchet {
		return 0, fmt.Errorf("seal: bad %s", ParamsName)
	}
	return v, nil
}

// anchored is what the acknowledged anchor entries say of the side-record
// file: how many records they anchor, and where the last one ends.
type anchored struct {
	count int64
	end   int64
}

// scanEntries reads the first n entries and returns each file's sealed
// watermark and what their anchors claim of the side records, checking that
// they are where the writer puts them.
func (s *Store) scanEntries(n int64) (map[uint64]int64, anchored, error) {
	wm := map[uint64]int64{}
	var an anchored
	r := bufio.NewReaderSize(io.NewSectionReader(s.lf, LogHeaderSize, n*EntrySize), 1<<20)
	var b [EntrySize]byte
	for i := int64(0); i < n; i++ {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, an, fmt.Errorf("%w: reading entry %d: %v", ErrCorrupt, i, err)
		}
		e, _ := ParseEntry(b[:])
		roff, koff := expectedPlace(i, s.nratchet)
		bad := func(msg string) error {
			return fmt.Errorf("%w: %v", ErrCorrupt, &FormatError{File: LogName, Off: entryPos(i), Struct: "entry " + strconv.FormatInt(i, 10), Msg: msg})
		}
		if e.RatchetOffset != roff || e.KeyOffset != koff {
			return nil, an, bad(fmt.Sprintf("ratchet/key offset %d/%d, want %d/%d", e.RatchetOffset, e.KeyOffset, roff, koff))
		}
		if e.IsAnchor() {
			// Anchored records follow one another (version 1 records,
			// unanchored, may only come before the first).
			if msg := e.checkAnchor(); msg != "" {
				return nil, an, bad(msg)
			}
			if an.count > 0 && int64(e.Offset) != an.end {
				return nil, an, bad(fmt.Sprintf("anchors a side record at %d, but the previous one ends at %d", e.Offset, an.end))
			}
			an.count++
			an.end = int64(e.Offset + e.Count)
			continue
		}
		if e.Inode == FakeInode {
			continue
		}
		if e.Offset != uint64(wm[e.Inode]) || e.Count > maxEntryCount || e.Count > math.MaxInt64-e.Offset {
			return nil, an, bad(fmt.Sprintf("file %d offset %d count %d, watermark %d", e.Inode, e.Offset, e.Count, wm[e.Inode]))
		}
		wm[e.Inode] += int64(e.Count)
	}
	return wm, an, nil
}

// loadRecords reads the side records bound to acknowledged entries, keeps
// the map, and cuts the rest: records of unacknowledged entries, or a torn
// last record. It returns the map records it cut: files that appends never
// acknowledged created.
//
// The acknowledged anchors (an) say where the acknowledged records end:
// everything before that was synced before any of it was acknowledged, so
// a record there that does not parse, or that the anchors do not account
// for, is damage, never a crash artefact, and Open refuses the store rather
// than cut it away. After that point only version 1 records (stores written
// before anchors) may still be bound to acknowledged entries.
func (s *Store) loadRecords(n int64, an anchored) ([]Record, error) {
	fi, err := s.rf.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < an.end {
		return nil, fmt.Errorf("%w: %s has %d bytes but acknowledged entries anchor records up to %d (truncated or tampered)", ErrCorrupt, RecordsName, fi.Size(), an.end)
	}
	rr := NewRecordReader(io.NewSectionReader(s.rf, 0, fi.Size()))
	keep := int64(0)
	var cut []Record
	var anchoredSeen int64
	cutting := false
	for {
		at := rr.Offset()
		r, err := rr.Next()
		if err != nil {
			if at < an.end {
				return nil, fmt.Errorf("%w: side record bound to an acknowledged entry: %v", ErrCorrupt, err)
			}
			break
		}
		if at < an.end && (r.Entry >= n || rr.Offset() > an.end) {
			return nil, fmt.Errorf("%w: side record at %d (entry %d) is not where the acknowledged anchors put records (they end at %d)", ErrCorrupt, at, r.Entry, an.end)
		}
		if r.Anchored() && at < an.end {
			anchoredSeen++
		}
		// Everything from the first record of an unacknowledged entry on
		// is cut; its map records are kept aside (at most one commit's
		// new files are expected: the bound is for a garbled file).
		if cutting = cutting || at >= an.end && (r.Anchored() || r.Entry >= n); cutting {
			if r.Anchored() && r.Entry < n {
				return nil, fmt.Errorf("%w: side record at %d claims acknowledged entry %d, which does not anchor it", ErrCorrupt, at, r.Entry)
			}
			if r.Type == RecordMap && len(cut) < maxRepairFiles {
				cut = append(cut, r)
			}
			continue
		}
		keep = rr.Offset()
		if r.Type != RecordMap {
			continue
		}
		if old, ok := s.files[r.ID]; ok && old.ref.Path != r.Path {
			return nil, fmt.Errorf("%w: file %d mapped to %q and %q", ErrCorrupt, r.ID, old.ref.Path, r.Path)
		}
		if id, ok := s.paths[r.Path]; ok && id != r.ID {
			return nil, fmt.Errorf("%w: path %q mapped to files %d and %d", ErrCorrupt, r.Path, id, r.ID)
		}
		s.files[r.ID] = &realLog{ref: FileRef{ID: r.ID, Path: r.Path}}
		s.paths[r.Path] = r.ID
	}
	if anchoredSeen != an.count {
		return nil, fmt.Errorf("%w: acknowledged entries anchor %d side records, %s holds %d before %d", ErrCorrupt, an.count, RecordsName, anchoredSeen, an.end)
	}
	// The records past keep are cut by open, after the real logs only
	// they named are gone (cutRecordsAfterRemovals).
	s.recSize = keep
	return cut, nil
}

// cutRecordsAfterRemovals cuts the side-record file to what loadRecords
// kept, once the real logs that only the cut map records named are removed
// and their removal is durable: cut first, a crash in between would leave
// such a real log with no map record, which no later Open could tell from a
// file planted in the store.
func (s *Store) cutRecordsAfterRemovals(removed bool) error {
	fi, err := s.rf.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == s.recSize {
		return nil
	}
	if removed {
		for d := range s.newDirs {
			if err := syncDir(d); err != nil {
				return err
			}
		}
	}
	if err := s.rf.Truncate(s.recSize); err != nil {
		return err
	}
	s.metaDirt, s.recsDirty = true, true
	return nil
}

// removeUnacknowledged deletes the real logs that only unacknowledged
// appends created (their map records were just cut): nothing in them is
// sealed, and left behind they would read as files planted in the store.
// Files the store still maps are never touched, nor anything that is not
// a regular file; a file whose map record itself was lost stays (Open
// cannot tell it from one planted) until an append of its ID recreates it.
func (s *Store) removeUnacknowledged(cut []Record, rep *Repair) error {
	for _, r := range cut {
		if s.files[r.ID] != nil || s.paths[r.Path] != 0 {
			continue
		}
		p := filepath.Join(s.dir, filepath.FromSlash(r.Path))
		fi, err := s.root.Lstat(filepath.FromSlash(r.Path))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := s.root.Remove(filepath.FromSlash(r.Path)); err != nil {
			return fmt.Errorf("seal: remove unacknowledged real log: %w", err)
		}
		s.newDirs[filepath.Dir(p)] = true
		rep.Files = append(rep.Files, FileRepair{ID: r.ID, OldSize: fi.Size(), NewSize: 0})
	}
	return nil
}

// Recovery returns what Open repaired, or nil after a clean shutdown.
func (s *Store) Recovery() *Repair { return s.repair }

// Append seals data as the bytes at off of the real log file and returns
// when they are durable. off must equal Watermark(file.ID): real logs only
// grow, so any other offset fails with ErrOffset and changes nothing. A new
// file ID is bound to file.Path by a sealed map record; an ID keeps its path.
// When the keystream runs out Append fails with ErrKeysExhausted and writes
// nothing.
func (s *Store) Append(file FileRef, off int64, data []byte) error {
	if file.ID == FakeInode || file.ID == 0 {
		return fmt.Errorf("seal: file ID %#x is reserved", file.ID)
	}
	seq, err := s.sealOps([]AppendOp{{File: file, Off: off, Data: data}}, false)
	if err != nil {
		return err
	}
	return s.waitDurable(seq)
}

// AppendOp is one append of a batch.
type AppendOp struct {
	File FileRef
	Off  int64
	Data []byte
}

// AppendBatch seals ops in order and waits once for all of them to be
// durable, so a device committing appends to many files pays for one
// round of fsyncs. It stops at the first op that fails; the ops before it
// are sealed and durable when it returns, and the error names the op.
// Large batches compute their MACs on all cores (see parallelMAC).
func (s *Store) AppendBatch(ops []AppendOp) error {
	seq, failed := s.sealOps(ops, true)
	if err := s.waitDurable(seq); err != nil {
		return err
	}
	return failed
}

// sealOps seals ops in order, up to the first that fails, and returns the
// entry count to wait for and that failure. When the ops carry enough data
// (parallelMAC) their MACs are computed by one goroutine per core while
// this one goes on writing data and reserving entries, or, for many entries,
// side by side on one goroutine while this one writes the data; mu is held
// throughout, so no commit can take an entry before its MAC is in pend.
func (s *Store) sealOps(ops []AppendOp, batch bool) (int64, error) {
	total, n := 0, 0 // bytes and entries
	for _, op := range ops {
		total += len(op.Data)
		n += entriesFor(len(op.Data))
	}
	// Many entries are MACed side by side on the vector unit, by this
	// goroutine, after the loop; otherwise large batches spread their MACs
	// over one goroutine per core, working while the loop goes on.
	sideBySide := batchMAC(n)
	// spread: enough data to keep a second core busy, and a second core.
	spread := total >= parallelMAC && runtime.GOMAXPROCS(0) > 1
	var jobs []sealJob
	if sideBySide || spread && (len(ops) > 1 || total > maxEntryData) {
		jobs = make([]sealJob, 0, n)
	}
	// A large batch MACed side by side has its data written while another
	// core computes the MACs: done one after the other, the two took about
	// as long each (bench/seal on tmpfs: 0.47 and 0.45 s per 1 280 MiB).
	// The loop then reserves each op's entries before its data is written;
	// a write that fails undoes that op and every later one (undoWrites).
	var writes []deferredWrite
	var deferTo *[]deferredWrite // sealLocked's writes: nil writes each op's data at once
	if sideBySide && spread {
		writes = make([]deferredWrite, 0, len(ops))
		deferTo = &writes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var work chan *sealJob
	var wg sync.WaitGroup
	if jobs != nil && !sideBySide {
		work = make(chan *sealJob, cap(jobs))
		for range min(runtime.GOMAXPROCS(0), cap(jobs)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := newMAC() // wiped by each seal: dropped holding no key
				for j := range work {
					j.seal(m)
				}
			}()
		}
	}
	var seq int64
	var failed error
	for i, op := range ops {
		if op.File.ID == FakeInode || op.File.ID == 0 {
			failed = fmt.Errorf("seal: file ID %#x is reserved", op.File.ID)
		} else {
			queued := len(jobs)
			var n int64
			n, failed = s.sealLocked(op.File, op.Off, op.Data, &jobs, deferTo, i)
			// jobs never grows past its capacity (entriesFor each op),
			// so the pointers handed to the workers stay valid.
			for k := queued; work != nil && k < len(jobs); k++ {
				work <- &jobs[k]
			}
			if failed == nil {
				seq = n
				continue
			}
		}
		if batch {
			failed = fmt.Errorf("seal: batch op %d (%s): %w", i, op.File.Path, failed)
		}
		break
	}
	// Entries reserved so far get their MACs before mu is released, even
	// when an op failed.
	if work != nil {
		close(work)
		wg.Wait()
	} else if len(writes) > 0 {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.macSideBySide(jobs)
		}()
		k, err := s.writeDeferred(writes)
		<-done
		if err != nil {
			w := writes[k]
			jobs = jobs[:w.undo.jobs]
			s.undoWrites(writes[k:])
			seq, failed = w.undo.seq, err
			if batch {
				failed = fmt.Errorf("seal: batch op %d (%s): %w", w.op, w.rl.ref.Path, failed)
			}
		}
		clear(writes) // the keys in their undo records
	} else if len(jobs) > 0 {
		s.macSideBySide(jobs)
	}
	if jobs != nil {
		for i := range jobs {
			s.placeMACLocked(&jobs[i])
		}
	}
	return seq, failed
}

// maxEntryData is the most one entry seals: a longer append is sealed as
// consecutive entries of at most this many bytes (together, or not at all),
// so that the MACs of one large append run on every core. At 4 MiB the
// extra entries cost nothing that matters (72 bytes, a 31st of a key).
const maxEntryData = 4 << 20

// entriesFor is how many entries an append of n bytes takes.
func entriesFor(n int) int {
	return max(1, (n+maxEntryData-1)/maxEntryData)
}

// earlyWriteback is the append size from which the real log's new bytes
// are sent to the disk as soon as they are written (startWriteback), not
// only at the commit: below it the disk work is too small to overlap with
// anything worth the extra call.
const earlyWriteback = 256 << 10

// parallelMAC is the batch size from which AppendBatch spreads the MACs
// over goroutines: below it hashing takes less than the hand-offs (a
// 4 KiB MAC is a few microseconds), above it hashing dominates sealing.
const parallelMAC = 256 << 10

// sealJob is an entry whose place and key are fixed and whose MAC is yet
// to compute, the part of sealing that can run outside the sealing order.
type sealJob struct {
	e    Entry
	key  [KeySize]byte
	data []byte
	pos  int // offset of the entry in pend, where its MAC goes
	mac  [KeySize]byte
}

// macSideBySide computes the MACs of jobs with a macBatch and forgets
// their keys; the caller holds mu.
func (s *Store) macSideBySide(jobs []sealJob) {
	if cap(s.macJobs) < len(jobs) {
		s.macJobs = make([]macJob, len(jobs))
		s.macHeads = make([][entryHeadSize]byte, len(jobs))
	}
	mj := s.macJobs[:len(jobs)]
	for i := range jobs {
		mj[i] = macJob{key: jobs[i].key, head: entryHead(&s.macHeads[i], &jobs[i].e), data: jobs[i].data}
		jobs[i].key = [KeySize]byte{}
	}
	s.macb.compute(mj)
	for i := range jobs {
		jobs[i].mac = mj[i].sum
		mj[i] = macJob{}
	}
}

// seal computes the job's MAC with m and forgets its key, in the job and
// in m.
func (j *sealJob) seal(m *mac) {
	m.startEntry(&j.key, &j.e)
	m.Write(j.data)
	j.mac = *m.final()
	j.key = [KeySize]byte{}
	m.wipe()
}

// sealLocked writes data and its side records and seals its entry into
// pend; the caller holds mu.
// With jobs non-nil the entry's MAC is left to the caller: its job is
// appended to *jobs. With writes non-nil the data is not written either: the
// write is appended to *writes (for batch op op), with what undoes this
// append if it fails.
func (s *Store) sealLocked(file FileRef, off int64, data []byte, jobs *[]sealJob, writes *[]deferredWrite, op int) (int64, error) {
	switch {
	case s.closed:
		return 0, ErrClosed
	case s.err != nil:
		return 0, s.err
	}
	rl := s.files[file.ID]
	if rl != nil && rl.ref.Path != file.Path {
		return 0, fmt.Errorf("%w: file %d is %q, not %q", ErrFileConflict, file.ID, rl.ref.Path, file.Path)
	}
	if rl == nil {
		if err := validPath(file.Path); err != nil {
			return 0, err
		}
		if id, ok := s.paths[file.Path]; ok {
			return 0, fmt.Errorf("%w: path %q belongs to file %d", ErrFileConflict, file.Path, id)
		}
	}
	wm := int64(0)
	if rl != nil {
		wm = rl.size
	}
	if off != wm {
		return 0, fmt.Errorf("%w: %s offset %d, watermark %d", ErrOffset, file.Path, off, wm)
	}
	if len(data) == 0 {
		return s.next, nil
	}
	// Side records due with this append: a new file's map record, and a
	// time record once per interval. Each takes an anchor entry of its own.
	stamp := false
	var now time.Time
	if s.opts.StampEvery >= 0 {
		now = s.opts.Now()
		stamp = s.lastStamp.IsZero() || now.Sub(s.lastStamp) >= s.stampEvery()
	}
	k := int64(entriesFor(len(data)))
	if rl == nil {
		k++
	}
	if stamp {
		k++
	}
	// Every entry of the append must find its key, or none is sealed.
	if (s.next+k-1)/int64(s.nratchet) >= s.keySlots {
		return 0, ErrKeysExhausted
	}
	undo := sealUndo{next: s.next, key: s.key, pend: len(s.pend), lastStamp: s.lastStamp, seq: s.next, recSize: s.recSize}
	if op == 0 {
		undo.seq = 0 // nothing of the batch sealed
	}
	if jobs != nil {
		undo.jobs = len(*jobs)
	}
	if rl != nil {
		undo.size = rl.size
	}
	if err := s.loadKey(); err != nil {
		return 0, err
	}
	newFile := rl == nil
	undo.newFile = newFile
	// fail leaves the store as it was before this append: no data past the
	// real log's size, no real log it created, none of its side records and
	// anchors (their keys are used again by whatever is sealed next).
	fail := func(err error) (int64, error) {
		if newFile && rl != nil {
			discardRealLog(rl.f)
		} else if !newFile && writes == nil {
			rl.f.Truncate(rl.size) // best effort
		}
		s.undoSealLocked(&undo)
		return 0, err
	}
	if newFile {
		// The map record is durable before the real log's name can be:
		// after a power cut, a real log on disk always has a map record,
		// and Open removes it with the record if the append was never
		// acknowledged (a name with no record would stay, planted-looking).
		if err := s.writeAnchoredLocked(&Record{Type: RecordMap, Time: s.opts.Now(), ID: file.ID, Path: file.Path}); err != nil {
			return fail(err)
		}
		if err := datasync(s.rf); err != nil {
			// What reached the disk is unknown, as after a failed commit.
			fail(err)
			s.err = fmt.Errorf("seal: sync side records failed, store must be reopened: %w", err)
			return 0, s.err
		}
		p := filepath.Join(s.dir, filepath.FromSlash(file.Path))
		if err := s.root.MkdirAll(filepath.Dir(filepath.FromSlash(file.Path)), 0o750); err != nil {
			return fail(err)
		}
		f, err := s.root.OpenFile(filepath.FromSlash(file.Path), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
		if err != nil {
			return fail(fmt.Errorf("seal: create real log: %w", err))
		}
		// The new names (the file's, and those of directories MkdirAll
		// may have made) become durable with the next commit's first
		// round, before the append is acknowledged.
		for d := filepath.Dir(p); ; d = filepath.Dir(d) {
			s.newDirs[d] = true
			if d == filepath.Clean(s.dir) || d == filepath.Dir(d) {
				break
			}
		}
		rl = &realLog{ref: file, f: f}
	}
	if stamp {
		if err := s.writeAnchoredLocked(&Record{Type: RecordTime, Time: now}); err != nil {
			return fail(err)
		}
		s.lastStamp = now
	}
	// The key of the first data entry (the anchors may have ended a block).
	if err := s.loadKey(); err != nil {
		return fail(err)
	}
	if writes == nil {
		if err := writeRealLog(rl.f, off, data); err != nil {
			return fail(fmt.Errorf("seal: write real log %s: %w", file.Path, err))
		}
	} else {
		*writes = append(*writes, deferredWrite{rl: rl, off: off, data: data, op: op, undo: undo})
	}
	if newFile {
		s.files[file.ID] = rl
		s.paths[file.Path] = file.ID
	}
	s.dirty[rl] = true
	for part := 0; len(data) > 0; part++ {
		n := min(len(data), maxEntryData)
		if part > 0 {
			if err := s.loadKey(); err != nil {
				// Part of an append is sealed and the keystream
				// cannot be read: only a reopen (Open repairs) can go on.
				s.err = fmt.Errorf("seal: keystream failed in the middle of an append, store must be reopened: %w", err)
				return 0, s.err
			}
		}
		if jobs != nil && *jobs != nil {
			*jobs = append(*jobs, s.reserveEntryLocked(file.ID, off, data[:n]))
		} else {
			s.writeEntryLocked(file.ID, off, data[:n])
		}
		rl.size += int64(n)
		off += int64(n)
		data = data[n:]
	}
	return s.next, nil
}

// storeWriteAt writes to a real log or the side-record file (a variable:
// tests make writes fail).
var storeWriteAt = (*os.File).WriteAt

// writeRealLog writes an append's data to its real log, an entry's worth
// (maxEntryData) at a time, and starts the writeback of each piece as soon
// as it is written: the disk then works while the rest is written and the
// MACs are computed (beside the writes, for a large batch), and the commit's
// fdatasync, which makes the bytes durable, finds them on their way. An
// error of the writeback is left to that fdatasync.
func writeRealLog(f *os.File, off int64, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), maxEntryData)
		if _, err := storeWriteAt(f, data[:n], off); err != nil {
			return err
		}
		if n >= earlyWriteback {
			durable.StartWriteback(f, off, int64(n))
		}
		off, data = off+int64(n), data[n:]
	}
	return nil
}

// deferredWrite is an append whose entries are reserved and whose data is
// yet to be written (see sealOps).
type deferredWrite struct {
	rl   *realLog
	off  int64
	data []byte
	op   int // its index in the batch
	undo sealUndo
}

// sealUndo is the store as it was before an append: what undoWrites puts
// back when the append's data cannot be written.
type sealUndo struct {
	next      int64
	key       [KeySize]byte // wiped when the batch is done (see sealOps)
	pend      int
	lastStamp time.Time
	jobs      int   // the caller's jobs before the append
	seq       int64 // what sealOps returns if this append fails: the entries before it, 0 for the batch's first
	size      int64 // the real log's size before the append
	newFile   bool  // the append created the real log
	recSize   int64 // the side-record file's size before the append
}

// writeDeferred writes the data of ws in order and stops at the first that
// fails, returning its index and the error. The caller holds mu; it runs
// beside the batch's MACs, which touch neither the real logs nor the
// records file.
func (s *Store) writeDeferred(ws []deferredWrite) (int, error) {
	for k, w := range ws {
		if err := writeRealLog(w.rl.f, w.off, w.data); err != nil {
			return k, fmt.Errorf("seal: write real log %s: %w", w.rl.ref.Path, err)
		}
	}
	return len(ws), nil
}

// undoWrites undoes the appends of ws (in batch order; the first is the one
// whose write failed): their entries, keys and sizes go back to what they
// were before the first, bytes written past those sizes are cut off, and
// real logs they created are forgotten and removed, as if those appends had
// failed before sealing anything, and their side records are cut off. Their
// entries were never committed (mu has been held since they were reserved),
// so the keys they used are used again, for whatever is sealed next; the
// MACs sealed with them exist only in memory and are dropped. The caller
// holds mu.
func (s *Store) undoWrites(ws []deferredWrite) {
	for k := len(ws) - 1; k >= 0; k-- {
		w := ws[k]
		w.rl.size = w.undo.size
		if w.undo.newFile {
			discardRealLog(w.rl.f)
			delete(s.files, w.rl.ref.ID)
			delete(s.paths, w.rl.ref.Path)
			delete(s.dirty, w.rl)
		}
	}
	for _, w := range ws {
		if !w.undo.newFile && s.files[w.rl.ref.ID] == w.rl {
			w.rl.f.Truncate(w.rl.size) // best effort, as for a failed inline write
		}
	}
	s.undoSealLocked(&ws[0].undo)
}

// undoSealLocked puts the ratchet, pend, the time stamp and the side-record
// file back to what u saw before an append sealed anything.
func (s *Store) undoSealLocked(u *sealUndo) {
	s.next, s.key, s.pend, s.lastStamp = u.next, u.key, s.pend[:u.pend], u.lastStamp
	if s.recSize != u.recSize {
		s.cutRecordsLocked(u.recSize)
	}
}

// discardRealLog closes and removes a real log that an undone append
// created. Best effort: no map record names it, so a file left behind is
// reported by verification as unknown, and Open does not remove it (its
// directory is synced with the next commit, the removal with it).
func discardRealLog(f *os.File) {
	f.Close()
	os.Remove(f.Name())
}

// loadKey makes s.key the key of entry s.next, reading a fresh keystream
// key at the start of a ratchet block.
func (s *Store) loadKey() error {
	if s.next%int64(s.nratchet) != 0 {
		return nil
	}
	slot := s.next / int64(s.nratchet)
	if slot >= s.keySlots {
		return ErrKeysExhausted
	}
	if _, err := s.kf.ReadAt(s.key[:], keyOff(slot)); err != nil {
		return fmt.Errorf("seal: read keystream: %w", err)
	}
	// Never seal with a burnt key: entries sealed with it could not verify.
	if s.key == burntKey(s.magic, slot) {
		s.key = [KeySize]byte{}
		return fmt.Errorf("%w: keystream key %d is already burnt", ErrCorrupt, slot)
	}
	if s.nratchet != 1 {
		s.m.ratchet(&s.key, 0, s.nratchet)
		s.m.wipe() // the raw key: burnt with the block's first commit
	}
	return nil
}

// writeEntryLocked seals entry s.next with s.key (already loaded) into
// pend and advances the ratchet.
func (s *Store) writeEntryLocked(id uint64, off int64, data []byte) {
	s.sealNowLocked(s.reserveEntryLocked(id, off, data))
}

// sealNowLocked computes the MAC of reserved entry j and writes it into
// the entry's place in pend.
func (s *Store) sealNowLocked(j sealJob) {
	j.seal(s.m)
	s.placeMACLocked(&j)
}

// placeMACLocked writes j's computed MAC into its entry in pend.
func (s *Store) placeMACLocked(j *sealJob) {
	copy(s.pend[j.pos+EntrySize-KeySize:], j.mac[:])
}

// writeAnchoredLocked appends side record r, sealed with the key of entry
// s.next, to the records file, and seals that entry as its anchor: a filler
// entry whose offset and count locate the record (its MAC covers them, as
// a filler's covers its header, so SealFS's verify accepts it).
func (s *Store) writeAnchoredLocked(r *Record) error {
	if err := s.loadKey(); err != nil {
		return err
	}
	r.Entry = s.next
	off := s.recSize
	if err := s.writeRecordLocked(r); err != nil {
		return err
	}
	s.sealNowLocked(s.reserveLocked(FakeInode, off, uint64(s.recSize-off), nil))
	return nil
}

// reserveEntryLocked gives entry s.next to an append: its place in pend
// (the MAC left zero) and its key, then advances the ratchet.
func (s *Store) reserveEntryLocked(id uint64, off int64, data []byte) sealJob {
	if id == FakeInode {
		off = 0 // a plain filler
	}
	return s.reserveLocked(id, off, uint64(len(data)), data)
}

// reserveLocked reserves entry s.next for count bytes at off, MACed over
// data (nil for a filler or an anchor), and advances the ratchet.
func (s *Store) reserveLocked(id uint64, off int64, count uint64, data []byte) sealJob {
	c := s.next
	roff, koff := expectedPlace(c, s.nratchet)
	j := sealJob{e: Entry{RatchetOffset: roff, Inode: id, Offset: uint64(off), Count: count, KeyOffset: koff},
		key: s.key, data: data, pos: len(s.pend)}
	s.pend = j.e.AppendBinary(s.pend)
	s.next++
	if s.next%int64(s.nratchet) != 0 {
		s.m.ratchet(&s.key, uint64(s.next%int64(s.nratchet)), s.nratchet)
		s.m.wipe() // the pads are entry c's key, acknowledged with the next commit
	} else {
		s.key = [KeySize]byte{}
	}
	s.warnUsage()
	return j
}

// writeRecordLocked appends a side record sealed with the key of entry
// r.Entry, which must be s.next with s.key loaded.
func (s *Store) writeRecordLocked(r *Record) error {
	body, err := s.sealRecordLocked(r)
	if err != nil {
		return err
	}
	return s.appendRecordLocked(body)
}

// sealRecordLocked encodes a side record and seals it with the key of entry
// r.Entry, which must be s.next with s.key loaded.
func (s *Store) sealRecordLocked(r *Record) ([]byte, error) {
	body, err := encodeRecord(r)
	if err != nil {
		return nil, err
	}
	rk := s.m.recordKey(&s.key)
	s.m.reset(&rk)
	s.m.Write(body)
	body = append(body, s.m.final()[:]...)
	// The record key forges records bound to this entry once it is
	// acknowledged: forget it, here and in the MAC.
	clear(rk[:])
	s.m.wipe()
	return body, nil
}

// appendRecordLocked appends a sealed side record to the records file.
func (s *Store) appendRecordLocked(body []byte) error {
	if _, err := storeWriteAt(s.rf, body, s.recSize); err != nil {
		s.cutRecordsLocked(s.recSize)
		return fmt.Errorf("seal: write side record: %w", err)
	}
	s.recSize += int64(len(body))
	s.metaDirt, s.recsDirty = true, true
	return nil
}

// cutRecordsLocked cuts the side-record file back to its first n bytes, the
// records of appends that did not happen (their entries' keys are used
// again). Best effort: if the truncate fails, the next record is written
// over them, but Open reads to the file's end.
func (s *Store) cutRecordsLocked(n int64) {
	s.rf.Truncate(n)
	s.recSize = n
}

// sealFillerLocked seals one filler entry (no file, no data), as SealFS
// does to close a ratchet block.
func (s *Store) sealFillerLocked() error {
	if err := s.loadKey(); err != nil {
		return err
	}
	s.writeEntryLocked(FakeInode, 0, nil)
	return nil
}

// sealRepair records rep, with its anchor entry, and commits it.
func (s *Store) sealRepair(rep *Repair) error {
	s.mu.Lock()
	err := s.loadKey()
	if err == nil {
		sealed := rep
		if len(rep.Files) > maxRepairFiles {
			// The record has room for maxRepairFiles files; the log has them all.
			s.log.Warn("seal: repair record lists only the first files", "files", len(rep.Files), "listed", maxRepairFiles)
			cp := *rep
			cp.Files = rep.Files[:maxRepairFiles]
			sealed = &cp
		}
		err = s.writeAnchoredLocked(&Record{Type: RecordRepair, Time: s.opts.Now(), Repair: sealed})
	}
	s.mu.Unlock()
	if errors.Is(err, ErrKeysExhausted) {
		s.log.Error("seal: keystream exhausted; the repair is not sealed")
		err = nil
	}
	if err != nil {
		return err
	}
	return s.Sync()
}

// waitDurable returns once entries [0, seq) are durable. The first waiter
// becomes the syncer; the others wait for its result (group commit).
func (s *Store) waitDurable(seq int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.durable < seq {
		if s.err != nil {
			return s.err
		}
		if s.syncing {
			s.cond.Wait()
			continue
		}
		s.syncing = true
		s.mu.Unlock()
		if d := s.opts.GroupCommit; d > 0 {
			time.Sleep(d)
		}
		err := s.commit()
		s.mu.Lock()
		s.syncing = false
		if err != nil && s.err == nil {
			s.err = fmt.Errorf("seal: commit failed, store must be reopened: %w", err)
		}
		s.cond.Broadcast()
	}
	return nil
}

// Sync makes every sealed entry durable now.
func (s *Store) Sync() error {
	s.mu.Lock()
	seq := s.next
	s.mu.Unlock()
	return s.waitDurable(seq)
}

// commit makes what is sealed durable and then acknowledges it, in two
// serial rounds of syncs (c is the acknowledged count, key_c its key in the
// ratchet state; n and key_n the count and next key being committed):
//
//  1. in parallel: the new real-log bytes, side records, the entries
//     c…n−1 of .SEALFS.LOG (one write from pend), new directory entries
//     and, when this commit burns keystream keys, an intent in the ratchet
//     state: (c, key_c) unchanged, plus target n, key_n and the burnt
//     offset the burn starts from;
//  2. in parallel: the ratchet state (n, key_n), which destroys key_c,
//     and the burn of the raw keys of every ratchet block entries c…n−1
//     started (each overwritten with burntKey, then the header advanced).
//
// Why not one round: an entry may be acknowledged only once its key is
// gone from the device (key_c from the state, the raw keys from the
// keystream), or a later compromise of the device could forge it. But
// those keys are the only ones that can ever seal positions c…n−1. Were
// they destroyed in the round that writes the entries, a power loss could
// keep the destruction and lose the entries: positions c…n−1 could then
// never hold valid entries, a hole that neither SealFS's verify nor ours
// can tell from an attacker deleting acknowledged entries (and a recovery
// that accepted such holes would let an attacker with the device cut
// acknowledged entries and call it a crash). So keys are destroyed only
// after the entries are durable: two rounds; and no more, because the two
// writes of round 2 need no order between them, as the recovery rules show.
//
// What a crash leaves, and what Open makes of it:
//   - during round 1, any part of round 1; key_c and all raw keys from the
//     first unburnt one on are intact, so Open rolls back to c (drops
//     entries, records and real-log bytes beyond c), as it always did;
//   - during round 2, all of round 1 and any part of round 2. Once a key
//     that rolling back would need is gone, only rolling forward is
//     possible: so on any sign of round 2 — the state says n, the header
//     is past what c needs, or a key only this commit burns holds the
//     burnt pattern — Open rolls forward to n, with key_n from the intent
//     (round 1 being durable, entries c…n−1 are there) and finishes the
//     burn; with no sign, nothing it needs is gone and it rolls back.
//
// The point of no return is therefore the first durable write of round 2,
// and the intent of round 1 is what makes passing it safe. A commit that
// starts no ratchet block burns nothing and writes no intent: its round 2
// is the state alone, and rolling back stays possible until it lands.
// Burnt keys hold a recognisable value because random bytes over a key
// cannot be told from the key: after a power loss the overwrite may have
// reached the disk while the header did not.
//
// Forward integrity holds throughout: before the acknowledgement the state
// holds at most key_c and key_n, keys of entries not yet acknowledged;
// after it, key_n only, which seals no existing entry. Appenders go on
// sealing into pend and the real logs while a commit runs; only one commit
// runs at a time.
func (s *Store) commit() error {
	s.mu.Lock()
	n, key := s.next, s.key
	c, ckey := s.durable, s.ackKey
	ents, first := s.pend, s.pendFirst
	s.pend, s.spare, s.pendFirst = s.spare[:0], nil, n
	files := make([]*os.File, 0, len(s.dirty)+3)
	written := make([]sealedTo, 0, len(s.dirty))
	for rl := range s.dirty {
		files = append(files, rl.f)
		written = append(written, sealedTo{rl.f, rl.size})
	}
	clear(s.dirty)
	dirs := make([]string, 0, len(s.newDirs))
	for d := range s.newDirs {
		dirs = append(dirs, d)
	}
	clear(s.newDirs)
	meta, recs := s.metaDirt, s.recsDirty
	s.metaDirt, s.recsDirty = false, false
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.spare = ents[:0]
		s.mu.Unlock()
	}()

	// Round 1.
	if len(ents) > 0 {
		if _, err := s.lf.WriteAt(ents, entryPos(first)); err != nil {
			return fmt.Errorf("seal: write %s: %w", LogName, err)
		}
	}
	// The side-record file changes only with a file's first append and
	// a time record a minute: synced only then (a sync of an unchanged
	// file still costs a disk flush).
	if recs {
		files = append(files, s.rf)
	}
	if meta || len(ents) > 0 {
		files = append(files, s.lf)
	}
	want := s.keysFor(n)
	burn := want > s.burnt
	if burn {
		if err := s.writeState(c, ckey, n, key); err != nil {
			return err
		}
		files = append(files, s.sf)
	}
	s.at(stageWritten, burn)
	if err := syncAll(files, dirs); err != nil {
		return err
	}
	s.at(stageRound1, burn)
	dropCached(written)

	// Round 2.
	files = files[:0]
	if burn {
		if err := s.writeBurn(want); err != nil {
			return err
		}
		files = append(files, s.kf)
	}
	s.at(stageBurnWritten, burn)
	if err := s.writeState(n, key, n, key); err != nil {
		return err
	}
	files = append(files, s.sf)
	s.at(stageStateWritten, burn)
	if err := syncAll(files, nil); err != nil {
		return err
	}
	s.at(stageRound2, burn)
	s.burnt = want

	s.mu.Lock()
	s.durable, s.ackKey = n, key
	s.mu.Unlock()
	return nil
}

// sealedTo is a real log and the length of it a commit makes durable.
type sealedTo struct {
	f    *os.File
	size int64
}

// dropCached frees the cached pages of real logs up to what the commit made
// durable. Nothing on the device reads a real log again (verify and diff
// read it from disk), so its pages would only sit in memory until the
// kernel reclaims them, crowding out the image's pages, which sealing does
// read. Freed now, they are what the next appends are written into: where
// the memory of a virtual machine is given back to its host once free
// (virtio-balloon free page reporting), a page written for the first time
// costs a fault on the host, and writing 2 GiB through one file with a sync
// every 16 MiB took 3.8-6.0 s of CPU with its pages kept and 0.7-0.9 s with
// them dropped after each sync (eleventh session). Best effort: an error
// changes nothing but memory use.
func dropCached(logs []sealedTo) {
	for _, l := range logs {
		// From 0: a large folio that the last drop left whole at the
		// end (it straddled that length) is dropped once complete;
		// ranges already dropped cost only a walk of an empty range.
		durable.Drop(l.f, 0, l.size)
	}
}

// datasync makes a file's data durable (a variable: tests watch which
// files a commit syncs).
var datasync = durable.Datasync

// syncAll fdatasyncs files and fsyncs directories. It starts the writeback
// of every file first and then syncs them one after another: that writeback
// allocates the files' new blocks, so the first sync's journal commit
// carries every file's new size and blocks, and the later syncs mostly find
// their data written and their metadata committed. Syncing them
// concurrently, as before, blocked one OS thread per fdatasync; on a
// two-core device that churn cost more CPU than it saved in waiting
// (bench/replay: 3-8 % of the device's CPU over a replayed e2e run, the
// same time per request).
func syncAll(files []*os.File, dirs []string) error {
	if len(files) > 1 {
		for _, f := range files {
			durable.StartWriteback(f, 0, 0)
		}
	}
	for _, f := range files {
		if err := datasync(f); err != nil {
			return fmt.Errorf("seal: sync %s: %w", f.Name(), err)
		}
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// writeState writes (without syncing) the ratchet state: c entries
// acknowledged with key ck next, a commit up to t with key tk in flight
// (t == c: none), and the burnt offset the latest burn started from.
func (s *Store) writeState(c int64, ck [KeySize]byte, t int64, tk [KeySize]byte) error {
	nr := int64(s.nratchet)
	if c%nr == 0 {
		ck = [KeySize]byte{}
	}
	if t%nr == 0 {
		tk = [KeySize]byte{}
	}
	st := RatchetState{KeyMagic: s.magic, NRatchet: s.nratchet, Committed: c, NextKey: ck, Target: t, TargetKey: tk, BurnFrom: s.burnt}
	if _, err := s.sf.WriteAt(st.marshal(), 0); err != nil {
		return fmt.Errorf("seal: write ratchet state: %w", err)
	}
	return nil
}

// writeBurn overwrites (without syncing) the keystream keys from the
// burnt offset up to want with burntKey, then advances the header's burnt
// offset, as SealFS's burner thread does.
func (s *Store) writeBurn(want int64) error {
	junk := make([]byte, 0, want-s.burnt)
	for off := s.burnt; off < want; off += KeySize {
		k := burntKey(s.magic, keySlot(off))
		junk = append(junk, k[:]...)
	}
	if _, err := s.kf.WriteAt(junk, s.burnt); err != nil {
		return fmt.Errorf("seal: burn keys: %w", err)
	}
	return s.writeKeyHeader(want)
}

func (s *Store) writeKeyHeader(burnt int64) error {
	hdr, _ := KeyHeader{Magic: s.magic, Burnt: uint64(burnt)}.MarshalBinary()
	if _, err := s.kf.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("seal: write keystream header: %w", err)
	}
	return nil
}

// warnUsage logs from 80 % of the keystream on, once per 5 % step.
func (s *Store) warnUsage() {
	if s.keySlots == 0 {
		return
	}
	used := (s.next + int64(s.nratchet) - 1) / int64(s.nratchet)
	pct := int(used * 100 / s.keySlots)
	if pct < 80 || pct < s.warned+5 && s.warned != 0 {
		return
	}
	s.warned = pct - pct%5
	s.log.Warn("seal: keystream running out", "store", s.dir, "used_percent", pct,
		"keys_left", s.keySlots-used, "hint", "plan a new store with a larger keystream; appends stop when it is exhausted")
}

// Watermark returns the number of sealed bytes of file id (0 if unknown).
func (s *Store) Watermark(id uint64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rl := s.files[id]; rl != nil {
		return rl.size
	}
	return 0
}

// ReadSealed reads len(p) sealed bytes of file id at off: bytes below its
// watermark, as the real log holds them (the device compares them with
// what the image shows, at restart). It fails for bytes past the watermark.
func (s *Store) ReadSealed(id uint64, p []byte, off int64) error {
	s.mu.Lock()
	rl := s.files[id]
	var f *os.File
	if rl != nil && off >= 0 && off <= rl.size-int64(len(p)) {
		f = rl.f
	}
	s.mu.Unlock()
	if f == nil {
		return fmt.Errorf("seal: file %d: bytes [%d, +%d) are not sealed", id, off, len(p))
	}
	if _, err := f.ReadAt(p, off); err != nil {
		return fmt.Errorf("seal: read real log %s: %w", rl.ref.Path, err)
	}
	return nil
}

// Files lists the real logs known to the store, by ID.
func (s *Store) Files() []FileRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]FileRef, 0, len(s.files))
	for _, rl := range s.files {
		out = append(out, rl.ref)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// KeyUsage reports keystream bytes consumed (keys read for sealing) and
// the keystream's total key bytes.
func (s *Store) KeyUsage() (used, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	blocks := (s.next + int64(s.nratchet) - 1) / int64(s.nratchet)
	return blocks * KeySize, s.keySlots * KeySize
}

// NRatchet returns the store's entries per keystream key.
func (s *Store) NRatchet() int { return s.nratchet }

// Close finishes the current ratchet block with filler entries, as SealFS
// does at unmount, makes everything durable, forgets the key and closes
// the files. A store that is not closed (a crash) is repaired by Open.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	var err error
	if s.err == nil {
		for s.next%int64(s.nratchet) != 0 && err == nil {
			err = s.sealFillerLocked()
		}
	}
	s.mu.Unlock()
	if err == nil {
		err = s.Sync()
	}
	s.mu.Lock()
	s.closed = true
	s.key = [KeySize]byte{}
	s.mu.Unlock()
	if cerr := s.closeFiles(); err == nil {
		err = cerr
	}
	return err
}

func (s *Store) closeFiles() error {
	var first error
	for _, f := range []*os.File{s.lf, s.kf, s.sf, s.rf} {
		if f != nil {
			if err := f.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	for _, rl := range s.files {
		if rl.f != nil {
			if err := rl.f.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	if s.root != nil {
		if err := s.root.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func leU64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
