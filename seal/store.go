package seal

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
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

	mu        sync.Mutex
	cond      *sync.Cond
	next      int64         // entries sealed (written, maybe not yet durable)
	key       [KeySize]byte // key of entry next when next%nratchet != 0
	durable   int64         // entries acknowledged durable
	burnt     int64         // keystream header burnt value on disk
	syncing   bool
	files     map[uint64]*realLog
	paths     map[string]uint64
	dirty     map[*realLog]bool
	metaDirt  bool
	err       error // sticky: a failed sync leaves durability unknown
	closed    bool
	warned    int // last key-usage percentage warned about
	m         *mac
	repair    *Repair
	buf       []byte
	lastStamp time.Time // device clock of the last time record
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
		files: map[uint64]*realLog{}, paths: map[string]uint64{}, dirty: map[*realLog]bool{}, m: newMAC()}
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
	if s.lf, err = os.OpenFile(filepath.Join(s.dir, LogName), os.O_RDWR, 0); err != nil {
		return fmt.Errorf("seal: open store: %w", err)
	}
	if s.kf, err = os.OpenFile(devKeyPath, os.O_RDWR, 0); err != nil {
		return fmt.Errorf("seal: open device keystream: %w", err)
	}
	if s.rf, err = os.OpenFile(filepath.Join(s.dir, RecordsName), os.O_RDWR|os.O_CREATE, 0o640); err != nil {
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
	s.keySlots = (kst.Size() - KeyHeaderSize) / KeySize

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
	if p, err := os.ReadFile(filepath.Join(s.dir, ParamsName)); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(p))); err == nil && v != s.nratchet {
			return fmt.Errorf("%w: store params say nratchet %d, ratchet state %d", ErrCorrupt, v, s.nratchet)
		}
	}
	n := st.Committed
	if found < n {
		return fmt.Errorf("%w: %s holds %d entries but %d were acknowledged (keys burnt without entries: truncated or tampered)", ErrCorrupt, LogName, found, n)
	}
	wm, err := s.scanEntries(n)
	if err != nil {
		return err
	}
	rep := &Repair{Committed: n, Found: found, DroppedEntries: found - n}
	if err := s.loadRecords(n); err != nil {
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
		p := filepath.Join(s.dir, filepath.FromSlash(rl.ref.Path))
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o640)
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
	if lst.Size() != entryPos(n) {
		if err := s.lf.Truncate(entryPos(n)); err != nil {
			return err
		}
		s.metaDirt = true
	}
	// Keys: every block with an acknowledged entry must be burnt.
	want := int64(KeyHeaderSize) + KeySize*((n+int64(s.nratchet)-1)/int64(s.nratchet))
	if s.burnt > want {
		return fmt.Errorf("%w: keystream burnt up to %d but acknowledged entries need only %d (stale ratchet state?)", ErrCorrupt, s.burnt, want)
	}
	rep.BurnCompleted = (want - s.burnt) / KeySize
	s.next, s.durable = n, n
	if n%int64(s.nratchet) != 0 {
		s.key = st.NextKey
	}
	if err := s.burnTo(want); err != nil {
		return err
	}
	s.warnUsage()
	partial := lst.Size() > entryPos(found)
	if rep.DroppedEntries > 0 || partial || len(rep.Files) > 0 || rep.BurnCompleted > 0 || s.metaDirt {
		s.repair = rep
		s.log.Warn("seal: repaired store after a crash", "store", s.dir, "acknowledged", n,
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
		if n%int64(nr) != 0 || int64(KeyHeaderSize)+KeySize*(n/int64(nr)) != s.burnt {
			return RatchetState{}, fmt.Errorf("%w: no ratchet state %s and the log does not end a ratchet block", ErrCorrupt, s.statePath)
		}
		if sf, err = os.OpenFile(s.statePath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return RatchetState{}, err
		}
		s.sf = sf
		st := RatchetState{KeyMagic: s.magic, NRatchet: nr, Committed: n}
		return st, s.writeState(&st)
	}
	if err != nil {
		return RatchetState{}, fmt.Errorf("seal: open ratchet state: %w", err)
	}
	s.sf = sf
	b := make([]byte, stateSize+1)
	k, _ := sf.ReadAt(b, 0)
	return ParseRatchetState(b[:k])
}

func readParams(dir string) (int, error) {
	p, err := os.ReadFile(filepath.Join(dir, ParamsName))
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(p)))
	if err != nil || v < 1 || v > MaxNRatchet {
		return 0, fmt.Errorf("seal: bad %s", ParamsName)
	}
	return v, nil
}

// scanEntries reads the first n entries and returns each file's sealed
// watermark, checking that they are where the writer puts them.
func (s *Store) scanEntries(n int64) (map[uint64]int64, error) {
	wm := map[uint64]int64{}
	r := bufio.NewReaderSize(io.NewSectionReader(s.lf, LogHeaderSize, n*EntrySize), 1<<20)
	var b [EntrySize]byte
	for i := int64(0); i < n; i++ {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("%w: reading entry %d: %v", ErrCorrupt, i, err)
		}
		e, _ := ParseEntry(b[:])
		roff, koff := expectedPlace(i, s.nratchet)
		bad := func(msg string) error {
			return fmt.Errorf("%w: %v", ErrCorrupt, &FormatError{File: LogName, Off: entryPos(i), Struct: "entry " + strconv.FormatInt(i, 10), Msg: msg})
		}
		if e.RatchetOffset != roff || e.KeyOffset != koff {
			return nil, bad(fmt.Sprintf("ratchet/key offset %d/%d, want %d/%d", e.RatchetOffset, e.KeyOffset, roff, koff))
		}
		if e.Inode == FakeInode {
			if e.Count != 0 {
				return nil, bad("filler entry with data")
			}
			continue
		}
		if e.Offset != uint64(wm[e.Inode]) || e.Count > 1<<40 {
			return nil, bad(fmt.Sprintf("file %d offset %d count %d, watermark %d", e.Inode, e.Offset, e.Count, wm[e.Inode]))
		}
		wm[e.Inode] += int64(e.Count)
	}
	return wm, nil
}

// loadRecords reads the side records bound to acknowledged entries, keeps
// the map, and cuts the rest (records of unacknowledged entries, or a torn
// last record).
func (s *Store) loadRecords(n int64) error {
	fi, err := s.rf.Stat()
	if err != nil {
		return err
	}
	rr := NewRecordReader(io.NewSectionReader(s.rf, 0, fi.Size()))
	keep := int64(0)
	for {
		r, err := rr.Next()
		if err != nil || r.Entry >= n {
			break
		}
		keep = rr.Offset()
		if r.Type != RecordMap {
			continue
		}
		if old, ok := s.files[r.ID]; ok && old.ref.Path != r.Path {
			return fmt.Errorf("%w: file %d mapped to %q and %q", ErrCorrupt, r.ID, old.ref.Path, r.Path)
		}
		if id, ok := s.paths[r.Path]; ok && id != r.ID {
			return fmt.Errorf("%w: path %q mapped to files %d and %d", ErrCorrupt, r.Path, id, r.ID)
		}
		s.files[r.ID] = &realLog{ref: FileRef{ID: r.ID, Path: r.Path}}
		s.paths[r.Path] = r.ID
	}
	if keep != fi.Size() {
		if err := s.rf.Truncate(keep); err != nil {
			return err
		}
		s.metaDirt = true
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
	s.mu.Lock()
	seq, err := s.sealLocked(file, off, data)
	s.mu.Unlock()
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
func (s *Store) AppendBatch(ops []AppendOp) error {
	s.mu.Lock()
	var seq int64
	var failed error
	for i, op := range ops {
		if op.File.ID == FakeInode || op.File.ID == 0 {
			failed = fmt.Errorf("seal: batch op %d: file ID %#x is reserved", i, op.File.ID)
			break
		}
		n, err := s.sealLocked(op.File, op.Off, op.Data)
		if err != nil {
			failed = fmt.Errorf("seal: batch op %d (%s): %w", i, op.File.Path, err)
			break
		}
		seq = n
	}
	s.mu.Unlock()
	if err := s.waitDurable(seq); err != nil {
		return err
	}
	return failed
}

// sealLocked writes data, its side records and its entry; the caller holds mu.
func (s *Store) sealLocked(file FileRef, off int64, data []byte) (int64, error) {
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
	if err := s.loadKey(); err != nil {
		return 0, err
	}
	c := s.next
	newFile := rl == nil
	if newFile {
		p := filepath.Join(s.dir, filepath.FromSlash(file.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			return 0, err
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
		if err != nil {
			return 0, fmt.Errorf("seal: create real log: %w", err)
		}
		if err := syncDir(filepath.Dir(p)); err != nil {
			f.Close()
			return 0, err
		}
		rl = &realLog{ref: file, f: f}
	}
	if _, err := rl.f.WriteAt(data, off); err != nil {
		if newFile {
			rl.f.Close()
		}
		return 0, fmt.Errorf("seal: write real log %s: %w", file.Path, err)
	}
	if newFile {
		r := &Record{Type: RecordMap, Entry: c, Time: s.opts.Now(), ID: file.ID, Path: file.Path}
		if err := s.writeRecordLocked(r); err != nil {
			rl.f.Close()
			return 0, err
		}
	}
	if now := s.opts.Now(); s.opts.StampEvery >= 0 && (s.lastStamp.IsZero() || now.Sub(s.lastStamp) >= s.stampEvery()) {
		if err := s.writeRecordLocked(&Record{Type: RecordTime, Entry: c, Time: now}); err != nil {
			if newFile {
				rl.f.Close()
			}
			return 0, err
		}
		s.lastStamp = now
	}
	if err := s.writeEntryLocked(file.ID, off, data); err != nil {
		if newFile {
			rl.f.Close()
		}
		return 0, err
	}
	if newFile {
		s.files[file.ID] = rl
		s.paths[file.Path] = file.ID
	}
	rl.size += int64(len(data))
	s.dirty[rl] = true
	return s.next, nil
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
	if _, err := s.kf.ReadAt(s.key[:], KeyHeaderSize+slot*KeySize); err != nil {
		return fmt.Errorf("seal: read keystream: %w", err)
	}
	if s.nratchet != 1 {
		s.m.ratchet(&s.key, 0, s.nratchet)
	}
	return nil
}

// writeEntryLocked seals entry s.next with s.key (already loaded) and
// advances the ratchet. A failed write leaves the counters alone, so the
// next attempt reuses the same key and position.
func (s *Store) writeEntryLocked(id uint64, off int64, data []byte) error {
	c := s.next
	roff, koff := expectedPlace(c, s.nratchet)
	e := Entry{RatchetOffset: roff, Inode: id, Offset: uint64(off), Count: uint64(len(data)), KeyOffset: koff}
	if id == FakeInode {
		e.Offset = 0
	}
	s.m.startEntry(&s.key, &e)
	s.m.Write(data)
	e.MAC = *s.m.final()
	s.buf = e.AppendBinary(s.buf[:0])
	if _, err := s.lf.WriteAt(s.buf, entryPos(c)); err != nil {
		return fmt.Errorf("seal: write %s: %w", LogName, err)
	}
	s.next++
	s.metaDirt = true
	if s.next%int64(s.nratchet) != 0 {
		s.m.ratchet(&s.key, uint64(s.next%int64(s.nratchet)), s.nratchet)
	} else {
		s.key = [KeySize]byte{}
	}
	s.warnUsage()
	return nil
}

// writeRecordLocked appends a side record sealed with the key of entry
// r.Entry, which must be s.next with s.key loaded.
func (s *Store) writeRecordLocked(r *Record) error {
	body, err := encodeRecord(r)
	if err != nil {
		return err
	}
	rk := s.m.recordKey(&s.key)
	s.m.reset(&rk)
	s.m.Write(body)
	body = append(body, s.m.final()[:]...)
	fi, err := s.rf.Stat()
	if err != nil {
		return err
	}
	if _, err := s.rf.WriteAt(body, fi.Size()); err != nil {
		s.rf.Truncate(fi.Size())
		return fmt.Errorf("seal: write side record: %w", err)
	}
	s.metaDirt = true
	return nil
}

// sealFillerLocked seals one filler entry (no file, no data), as SealFS
// does to close a ratchet block.
func (s *Store) sealFillerLocked() error {
	if err := s.loadKey(); err != nil {
		return err
	}
	return s.writeEntryLocked(FakeInode, 0, nil)
}

// sealRepair records rep, bound to a filler entry, and commits it.
func (s *Store) sealRepair(rep *Repair) error {
	s.mu.Lock()
	err := s.loadKey()
	if err == nil {
		err = s.writeRecordLocked(&Record{Type: RecordRepair, Entry: s.next, Time: s.opts.Now(), Repair: rep})
	}
	if err == nil {
		err = s.writeEntryLocked(FakeInode, 0, nil)
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

// commit makes what is sealed durable, in the order that keeps a crash
// repairable: real-log data, side records and entries first; then the
// ratchet state naming the acknowledged count and the next key (this is the
// point of no return: the previous key is gone); then the burn of the
// keystream keys those entries consumed. Only one commit runs at a time.
func (s *Store) commit() error {
	s.mu.Lock()
	n, key := s.next, s.key
	files := make([]*os.File, 0, len(s.dirty))
	for rl := range s.dirty {
		files = append(files, rl.f)
	}
	clear(s.dirty)
	meta := s.metaDirt
	s.metaDirt = false
	s.mu.Unlock()
	if meta {
		files = append(files, s.rf, s.lf)
	}
	if err := syncAll(files); err != nil {
		return err
	}
	st := RatchetState{KeyMagic: s.magic, NRatchet: s.nratchet, Committed: n}
	if n%int64(s.nratchet) != 0 {
		st.NextKey = key
	}
	if err := s.writeState(&st); err != nil {
		return err
	}
	want := int64(KeyHeaderSize) + KeySize*((n+int64(s.nratchet)-1)/int64(s.nratchet))
	if err := s.burnTo(want); err != nil {
		return err
	}
	s.mu.Lock()
	if n > s.durable {
		s.durable = n
	}
	s.mu.Unlock()
	return nil
}

// syncAll fsyncs files concurrently: the filesystem journal folds
// concurrent fsyncs into shared commits, so syncing many real logs costs
// little more than syncing one.
func syncAll(files []*os.File) error {
	if len(files) == 1 {
		return files[0].Sync()
	}
	const workers = 16
	errs := make(chan error, len(files))
	work := make(chan *os.File)
	var wg sync.WaitGroup
	for i := 0; i < min(workers, len(files)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if err := f.Sync(); err != nil {
					errs <- fmt.Errorf("seal: sync %s: %w", f.Name(), err)
				}
			}
		}()
	}
	for _, f := range files {
		work <- f
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs
}

func (s *Store) writeState(st *RatchetState) error {
	if _, err := s.sf.WriteAt(st.marshal(), 0); err != nil {
		return fmt.Errorf("seal: write ratchet state: %w", err)
	}
	return s.sf.Sync()
}

// burnTo overwrites keystream keys up to offset want with random bytes and
// advances the header's burnt offset, as SealFS's burner thread does.
func (s *Store) burnTo(want int64) error {
	if want <= s.burnt {
		return nil
	}
	junk := make([]byte, want-s.burnt)
	if _, err := rand.Read(junk); err != nil {
		return err
	}
	if _, err := s.kf.WriteAt(junk, s.burnt); err != nil {
		return fmt.Errorf("seal: burn keys: %w", err)
	}
	hdr, _ := KeyHeader{Magic: s.magic, Burnt: uint64(want)}.MarshalBinary()
	if _, err := s.kf.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("seal: write keystream header: %w", err)
	}
	if err := s.kf.Sync(); err != nil {
		return err
	}
	s.burnt = want
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
	return first
}

func leU64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
