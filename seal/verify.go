package seal

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/indelible-worm/indelible/internal/regfile"
	"github.com/indelible-worm/indelible/internal/sha256x16"
)

// ProblemKind classifies what the verifier found.
type ProblemKind int

const (
	ProblemAltered     ProblemKind = iota + 1 // entry MAC fails: its data or the entry itself changed
	ProblemMisplaced                          // entry not where its key puts it: reordered, replaced, copied
	ProblemGap                                // real-log bytes no entry covers: entries deleted
	ProblemTruncated                          // entries beyond the real log's data, or log tail missing per burnt keys
	ProblemUnsealed                           // real-log bytes after the last entry
	ProblemUnknownFile                        // a file or entry no sealed map record names
	ProblemMissingFile                        // a sealed real log that is gone (renamed or deleted)
	ProblemRecord                             // a side record that is malformed, forged or orphaned
	ProblemKeystream                          // keystreams disagree with the log
	ProblemStructure                          // malformed .SEALFS.LOG
)

var problemNames = map[ProblemKind]string{
	ProblemAltered: "altered", ProblemMisplaced: "misplaced", ProblemGap: "missing-entries",
	ProblemTruncated: "truncated", ProblemUnsealed: "unsealed", ProblemUnknownFile: "unknown-file",
	ProblemMissingFile: "missing-file", ProblemRecord: "bad-record", ProblemKeystream: "keystream",
	ProblemStructure: "structure",
}

func (k ProblemKind) String() string {
	if s, ok := problemNames[k]; ok {
		return s
	}
	return fmt.Sprintf("problem(%d)", int(k))
}

// MarshalText makes kinds read as words in JSON.
func (k ProblemKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Problem is one finding, with the real log and byte range it concerns.
type Problem struct {
	Kind  ProblemKind `json:"kind"`
	File  string      `json:"file,omitempty"` // real-log path ("" when not file-specific)
	ID    uint64      `json:"id,omitempty"`
	Entry int64       `json:"entry"` // entry index in .SEALFS.LOG, -1 when none
	Off   int64       `json:"offset"`
	Len   int64       `json:"length"`
	Msg   string      `json:"message"`
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Kind.String())
	b.WriteString(":")
	placed := b.Len()
	if p.File != "" {
		fmt.Fprintf(&b, " %s", p.File)
	} else if p.ID != 0 {
		fmt.Fprintf(&b, " file id %d", p.ID)
	}
	if p.Len > 0 || p.Off > 0 {
		fmt.Fprintf(&b, " offset %d length %d", p.Off, p.Len)
	}
	if p.Entry >= 0 {
		fmt.Fprintf(&b, " (entry %d)", p.Entry)
	}
	if b.Len() > placed {
		b.WriteString(":") // "kind: place: msg", or "kind: msg" with no place
	}
	fmt.Fprintf(&b, " %s", p.Msg)
	return b.String()
}

// EntryResult reports one entry, for listings.
type EntryResult struct {
	Index int64
	Entry Entry
	Path  string
	OK    bool      // verified (or structurally sound without a key)
	Why   string    // reason when not OK
	Time  time.Time // device clock of the latest time record at or before the entry (zero if none)
}

// Range selects bytes [Off, Off+Len) of a real log.
type Range struct{ Off, Len int64 }

// VerifyOptions says what to verify and where to report.
type VerifyOptions struct {
	// AuditorKey is the auditor's keystream. Without it only the structure
	// is checked and Summary.Keyed is false: nothing is proven.
	AuditorKey string
	// DeviceKey is the device's (burnt) keystream, optional: its burnt
	// offset and ratchet state reveal entries cut from the log's tail.
	DeviceKey string
	// File restricts verification to one real log (store-relative path);
	// Range further restricts it to entries overlapping a byte range.
	File  string
	Range *Range
	// OnProblem receives every problem as it is found.
	OnProblem func(Problem)
	// OnEntry receives every examined entry.
	OnEntry func(EntryResult)
	// Progress receives (bytes of .SEALFS.LOG processed, total) now and then.
	Progress func(done, total int64)
}

// Summary counts what Verify saw.
type Summary struct {
	Keyed        bool  `json:"keyed"`
	NRatchet     int   `json:"nratchet"`
	Entries      int64 `json:"entries"` // entries examined (fillers included)
	Intact       int64 `json:"intact"`
	Altered      int64 `json:"altered"` // altered or misplaced entries
	Gaps         int64 `json:"gaps"`
	Truncations  int64 `json:"truncations"`
	Unsealed     int64 `json:"unsealed"`
	UnknownFiles int64 `json:"unknown_files"`
	MissingFiles int64 `json:"missing_files"`
	BadRecords   int64 `json:"bad_records"`
	Other        int64 `json:"other"`
	Bytes        int64 `json:"bytes"`      // real-log bytes verified intact
	OpenBlock    bool  `json:"open_block"` // last ratchet block not closed (running or crashed device)
	Files        int   `json:"files"`
	// Live is set when the device sealed more while Verify ran (the log
	// or the device keystream changed). What lay past what the device had
	// acknowledged when Verify began (entries, their side records, the
	// real-log bytes they would cover: being sealed) is then not judged,
	// only counted in InFlight.
	Live     bool  `json:"live"`
	InFlight int64 `json:"in_flight"`
}

// Problems is the number of problems found.
func (s *Summary) Problems() int64 {
	return s.Altered + s.Gaps + s.Truncations + s.Unsealed + s.UnknownFiles + s.MissingFiles + s.BadRecords + s.Other
}

// OK reports whether everything verified with a key.
func (s *Summary) OK() bool { return s.Keyed && s.Problems() == 0 }

func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// String is the one-line summary: "3 entries altered, 1 truncation, 10412 intact".
func (s *Summary) String() string {
	var parts []string
	add := func(n int64, one, many string) {
		if n > 0 {
			parts = append(parts, plural(n, one, many))
		}
	}
	add(s.Altered, "entry altered", "entries altered")
	add(s.Gaps, "gap", "gaps")
	add(s.Truncations, "truncation", "truncations")
	add(s.Unsealed, "unsealed range", "unsealed ranges")
	add(s.UnknownFiles, "unknown file", "unknown files")
	add(s.MissingFiles, "missing file", "missing files")
	add(s.BadRecords, "bad record", "bad records")
	add(s.Other, "other problem", "other problems")
	word := "intact"
	if !s.Keyed {
		word = "structurally sound (no key: nothing verified)"
	}
	parts = append(parts, fmt.Sprintf("%d %s", s.Intact, word))
	return strings.Join(parts, ", ")
}

type vfile struct {
	path    string
	id      uint64
	next    int64 // end of the contiguous verified/covered prefix
	r       *seqReader
	size    int64
	missing bool
	entries int64
}

type verifier struct {
	dir   string
	o     VerifyOptions
	sum   Summary
	m     *mac
	keys  *keyReader
	nr    int
	files map[uint64]*vfile
	paths map[string]uint64
	want  uint64 // ID selected by File, 0 = all

	rf      *os.File
	recSize int64      // of rf
	dev0    deviceSnap // the device's files before the log was read
	lf      *os.File   // .SEALFS.LOG
	logSize int64      // its size when read
	// acked is how many entries the device had acknowledged before the
	// log was read (the ratchet state's count; -1 when unknown). What a
	// problem finds past it waits in unacked: a running device may be
	// sealing it (settleUnacked decides).
	acked   int64
	unacked []Problem
	// unackedMore counts, by kind, the problems past acked not kept in
	// unacked once it held maxHeldUnacked, and keeps the first of each.
	unackedMore  map[ProblemKind]*heldBack
	unackedPaths map[string]bool // real logs that map records past acked name
	reread       bool            // unackedPaths holds the records file's latest map records
	streamEnd    int64           // where the record stream stopped, once rr is nil
	v1Entry      int64           // the entry of the last version 1 records applied
	v1Types      uint8           // their types, a bit each
	rr           *RecordReader
	pending      *Record   // next side record, not yet bound
	lastTime     time.Time // device clock of the latest time record

	// With sideBySide, entry MACs are queued (macs) and computed together
	// on the 16-lane SHA-256 (flushMACs); what the verifier reports after
	// a queued MAC waits in later, in order, so callers see problems and
	// entries in the order of the log as before.
	sideBySide bool
	macs       []macJob
	heads      [maxQueuedMACs][entryHeadSize]byte
	later      []laterItem
	flushing   bool
	macb       macBatch
	// With sideBySide, the keys of entries [keyFrom, keyFrom+len(ahead))
	// are computed ahead, sixteen ratchet blocks side by side (keysAhead).
	keyFrom int64
	ahead   [][KeySize]byte
}

// laterItem is something to report once the queued MACs are known.
type laterItem struct {
	kind laterKind
	p    Problem     // laterProblem
	res  EntryResult // laterEntry, laterMAC: the entry so far
	mac  int         // laterMAC: its index in macs
}

type laterKind uint8

const (
	laterProblem laterKind = iota
	laterEntry
	laterMAC // the entry's outcome hangs on its MAC
)

// maxQueuedMACs bounds the entry MACs queued for one flush: enough to keep
// the 16 lanes full when entries differ in length.
const maxQueuedMACs = 64

// maxLater bounds what waits for queued MACs: a tampered log whose entries
// are nearly all bad (no MAC to queue, a problem each) would otherwise
// queue a report per entry until the next MAC, or the end.
const maxLater = 4096

// Verify checks a store and streams every problem it finds; it never stops
// at the first one. The error is non-nil only when verification could not
// run at all (no store, unreadable log header, key for another store).
func Verify(storeDir string, o VerifyOptions) (*Summary, error) {
	v := &verifier{dir: storeDir, o: o, m: newMAC(), files: map[uint64]*vfile{}, paths: map[string]uint64{}, unackedPaths: map[string]bool{}}
	defer v.closeFiles()
	return v.run()
}

// report counts and streams a problem, after whatever waits for queued
// MACs.
func (v *verifier) report(p Problem) {
	if len(v.later) > 0 && !v.flushing {
		v.wait(laterItem{kind: laterProblem, p: p})
		return
	}
	v.deliver(p)
}

// wait queues it behind the queued MACs, computing them first when too
// much waits already.
func (v *verifier) wait(it laterItem) {
	v.later = append(v.later, it)
	if len(v.later) >= maxLater {
		v.flushMACs()
	}
}

// entryDone streams an examined entry, after whatever waits for queued MACs.
func (v *verifier) entryDone(res *EntryResult) {
	if v.o.OnEntry == nil {
		return
	}
	if len(v.later) > 0 && !v.flushing {
		v.wait(laterItem{kind: laterEntry, res: *res})
		return
	}
	v.o.OnEntry(*res)
}

// queueMAC queues the MAC of res's entry over data; its outcome is
// reported, in order, once the MAC is known.
func (v *verifier) queueMAC(res *EntryResult, key *[KeySize]byte, data []byte) {
	i := len(v.macs)
	sha256x16.Prefetch(data)
	v.macs = append(v.macs, macJob{key: *key, head: entryHead(&v.heads[i], &res.Entry), data: data})
	v.later = append(v.later, laterItem{kind: laterMAC, res: *res, mac: i})
	if len(v.macs) == maxQueuedMACs {
		v.flushMACs()
	}
}

// flushMACs computes the queued MACs and reports what waited for them.
// When a real log shrinks under its mapping meanwhile, reading it faults
// (SIGBUS); the MACs are then computed again one at a time, so that only
// the entries whose bytes are gone fail (the log changed while being
// verified), as they would one at a time.
func (v *verifier) flushMACs() {
	if len(v.later) == 0 {
		return
	}
	if len(v.macs) > 0 && !faultless(func() { v.macb.compute(v.macs) }) {
		for i := range v.macs {
			j := &v.macs[i]
			if !faultless(func() {
				v.m.reset(&j.key)
				v.m.Write(j.head)
				v.m.Write(j.data)
				j.sum = *v.m.final()
			}) {
				j.sum = [KeySize]byte{}
			}
		}
	}
	v.flushing = true
	for k := range v.later {
		it := &v.later[k]
		switch it.kind {
		case laterProblem:
			v.deliver(it.p)
		case laterEntry:
			v.o.OnEntry(it.res)
		case laterMAC:
			v.macOutcome(&it.res, macEqual(v.macs[it.mac].sum[:], it.res.Entry.MAC[:]))
			v.entryDone(&it.res)
		}
	}
	v.flushing = false
	clear(v.later)
	v.later = v.later[:0]
	clear(v.macs)
	v.macs = v.macs[:0]
}

// faultless runs f, which reads mapped real logs, and reports whether it
// ran to the end: false when a read faulted (the file shrank under its
// mapping).
func faultless(f func()) (ok bool) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if recover() != nil {
			ok = false
		}
	}()
	f()
	return true
}

// blame reports p against the entry res describes.
func (v *verifier) blame(res *EntryResult, p Problem) {
	p.Entry = res.Index
	if p.File == "" {
		p.File = res.Path
	}
	if p.ID == 0 && res.Entry.Inode != FakeInode {
		p.ID = res.Entry.Inode
	}
	if res.Why == "" {
		res.Why = p.Kind.String() + ": " + p.Msg
	}
	v.reportUnacked(res.Index >= v.acked, p)
}

// macOutcome counts a data entry whose MAC matched (ok) or reports it.
func (v *verifier) macOutcome(res *EntryResult, ok bool) {
	off, cnt := int64(res.Entry.Offset), int64(res.Entry.Count)
	if !ok {
		v.blame(res, Problem{Kind: ProblemAltered, Off: off, Len: cnt, Msg: "data or entry does not match its seal"})
		return
	}
	res.OK = true
	v.sum.Intact++
	v.sum.Bytes += cnt
}

func (v *verifier) deliver(p Problem) {
	v.count(p.Kind, 1)
	if v.o.OnProblem != nil {
		v.o.OnProblem(p)
	}
}

func (v *verifier) run() (*Summary, error) {
	lf, err := regfile.OpenBeneath(v.dir, LogName)
	if err != nil {
		return nil, fmt.Errorf("seal: %s is not a store: %w", v.dir, err)
	}
	defer lf.Close()
	// The device's burnt offset and ratchet state before the log: a
	// running device makes entries durable before it burns their keys or
	// counts them, so whatever these say was acknowledged is in the log
	// read after them (see checkDevice).
	v.dev0 = v.snapDevice()
	v.acked = v.dev0.ackedEntries()
	lst, err := lf.Stat()
	if err != nil {
		return nil, err
	}
	v.lf, v.logSize = lf, lst.Size()
	var lh [LogHeaderSize]byte
	if _, err := io.ReadFull(lf, lh[:]); err != nil {
		return nil, &FormatError{File: LogName, Struct: "log header", Msg: "missing: " + err.Error()}
	}
	magic := leU64(lh[:])
	if v.o.AuditorKey != "" {
		if v.keys, err = openKeyReader(v.o.AuditorKey); err != nil {
			return nil, err
		}
		defer v.keys.f.Close()
		if v.keys.hdr.Magic != magic {
			return nil, fmt.Errorf("%w: log %#x, auditor keystream %#x: this key belongs to another store", ErrBadMagic, magic, v.keys.hdr.Magic)
		}
		v.sum.Keyed = true
	}
	nEntries := (lst.Size() - LogHeaderSize) / EntrySize
	if nEntries < 0 {
		nEntries = 0
	}
	v.nr, err = readParams(v.dir)
	if err != nil {
		v.nr = v.detectNRatchet(lf)
	}
	v.sum.NRatchet = v.nr
	v.sideBySide = v.keys != nil && vectorMAC
	v.openRecords()
	if v.o.File != "" {
		// The map binds IDs to paths; find the wanted ID from the records.
		for id, p := range v.mapPaths() {
			if p == v.o.File {
				v.want = id
			}
		}
		if v.want == 0 {
			v.report(Problem{Kind: ProblemUnknownFile, File: v.o.File, Entry: -1, Msg: "no sealed map record names this file"})
		}
	}
	r := bufio.NewReaderSize(io.NewSectionReader(lf, LogHeaderSize, nEntries*EntrySize), 1<<20)
	var b [EntrySize]byte
	var key [KeySize]byte
	zeroFrom := int64(-1) // the first of a run of all-zero entries being skipped
	for i := int64(0); i < nEntries; i++ {
		if v.o.Progress != nil && i%8192 == 0 {
			v.o.Progress(LogHeaderSize+i*EntrySize, lst.Size())
		}
		if v.keys != nil && i >= v.keys.slots*int64(v.nr) {
			// No key seals these entries: the device refuses appends
			// once its keystream is used up, so they were planted, or
			// the log was extended, perhaps sparsely to terabytes (its
			// size is all that counts entries). Without a key they
			// prove nothing one by one, and walking them would keep
			// the verifier busy for hours: one problem covers them all.
			// Checked before reading, as a run of zero entries (below)
			// is not keyed entry by entry.
			v.endZeroRun(&zeroFrom, i)
			v.beyondKeys(i, nEntries)
			break
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			v.endZeroRun(&zeroFrom, i)
			v.report(Problem{Kind: ProblemStructure, Entry: i, Msg: "cannot read entry: " + err.Error()})
			break
		}
		if b == ([EntrySize]byte{}) {
			// An all-zero entry is never valid (its key offset would be
			// inside the keystream's header): a hole in the log, or
			// entries zeroed. A run of them is one problem, and costs
			// neither keys nor MACs: a sparse log of millions of them
			// would otherwise keep the verifier busy for hours and
			// fill its memory with one problem each.
			if zeroFrom < 0 {
				zeroFrom = i
			}
			continue
		}
		if zeroFrom >= 0 {
			v.endZeroRun(&zeroFrom, i)
			if v.keys != nil && i%int64(v.nr) != 0 {
				// The ratchet chains the keys of a block: rebuild
				// it from the block's first key up to this entry.
				for k := i - i%int64(v.nr); k < i; k++ {
					v.entryKey(k, &key)
				}
			}
		}
		if v.keys != nil && !v.entryKey(i, &key) {
			// Within the keystream's length, but its key could not be
			// read (the file cut or failing while verified): nothing
			// from here on can be checked.
			v.beyondKeys(i, nEntries)
			break
		}
		e, _ := ParseEntry(b[:])
		v.applyRecords(i, &e, &key)
		v.checkEntry(i, &e, &key)
	}
	if zeroFrom >= 0 {
		v.endZeroRun(&zeroFrom, nEntries)
	}
	v.flushMACs()
	if v.o.Progress != nil {
		v.o.Progress(lst.Size(), lst.Size())
	}
	v.sum.Live = v.changed() || storeInUse(lf) // sealing meanwhile, or open in a running device
	if tail := (lst.Size() - LogHeaderSize) % EntrySize; lst.Size() > LogHeaderSize && tail != 0 && v.o.File == "" {
		v.reportUnacked(true, Problem{Kind: ProblemTruncated, Entry: nEntries, Off: entryPos(nEntries), Len: tail,
			Msg: fmt.Sprintf("%s ends with a partial entry of %d bytes", LogName, tail)})
	}
	v.sum.OpenBlock = nEntries%int64(v.nr) != 0
	v.orphanRecords(nEntries)
	v.finishFiles()
	if v.o.File == "" {
		v.scanUnknown()
		v.checkDevice(magic, nEntries)
	}
	v.settleUnacked()
	v.sum.Files = len(v.files)
	return &v.sum, nil
}

// beyondKeys reports entries i to n-1, which no key of the auditor
// keystream seals.
func (v *verifier) beyondKeys(i, n int64) {
	rest := n - i
	v.report(Problem{Kind: ProblemKeystream, File: LogName, Entry: i, Off: entryPos(i), Len: rest * EntrySize,
		Msg: fmt.Sprintf("entries %d to %d (%d entries) lie beyond the auditor keystream (%d keys): none of them is sealed, none was examined",
			i, n-1, rest, v.keys.slots)})
}

// endZeroRun reports the run of all-zero entries from *from up to end (if
// one is open) as one problem, and closes it. With a file selected
// (VerifyOptions.File) such entries concern no file and are not reported,
// as a zero entry's own check would not have been.
func (v *verifier) endZeroRun(from *int64, end int64) {
	i := *from
	if i < 0 {
		return
	}
	*from = -1
	if v.o.File != "" {
		return
	}
	n := end - i
	v.sum.Entries += n
	v.reportUnacked(i >= v.acked, Problem{Kind: ProblemStructure, File: LogName, Entry: i, Off: entryPos(i), Len: n * EntrySize,
		Msg: fmt.Sprintf("entries %d to %d (%d entries) are all zeros (a hole in the log, or entries erased): none of them is sealed", i, end-1, n)})
}

// count adds n problems of kind k to the summary's counters.
func (v *verifier) count(k ProblemKind, n int64) {
	switch k {
	case ProblemAltered, ProblemMisplaced:
		v.sum.Altered += n
	case ProblemGap:
		v.sum.Gaps += n
	case ProblemTruncated:
		v.sum.Truncations += n
	case ProblemUnsealed:
		v.sum.Unsealed += n
	case ProblemUnknownFile:
		v.sum.UnknownFiles += n
	case ProblemMissingFile:
		v.sum.MissingFiles += n
	case ProblemRecord:
		v.sum.BadRecords += n
	default:
		v.sum.Other += n
	}
}

// changed reports whether the device sealed since Verify began: the log
// or the device's own files are not what they were.
func (v *verifier) changed() bool {
	if st, err := v.lf.Stat(); err == nil && st.Size() != v.logSize {
		return true
	}
	return v.snapDevice() != v.dev0
}

// reportUnacked reports p, or, when past is true and the device's
// acknowledged count is known, keeps it for settleUnacked: it concerns what
// lay past what the device had acknowledged.
func (v *verifier) reportUnacked(past bool, p Problem) {
	if past && v.acked >= 0 {
		if len(v.unacked) < maxHeldUnacked {
			v.unacked = append(v.unacked, p)
			return
		}
		if v.unackedMore == nil {
			v.unackedMore = map[ProblemKind]*heldBack{}
		}
		h := v.unackedMore[p.Kind]
		if h == nil {
			h = &heldBack{first: p}
			v.unackedMore[p.Kind] = h
		}
		h.n++
		return
	}
	v.report(p)
}

// maxHeldUnacked bounds the problems past the acknowledged entries kept
// until settleUnacked: a hostile log can plant millions of entries there,
// and each problem held costs a few hundred bytes. The rest are counted by
// kind and reported as one problem per kind.
const maxHeldUnacked = 4096

// heldBack is the problems of one kind past maxHeldUnacked: the first, and
// how many.
type heldBack struct {
	first Problem
	n     int64
}

// settleUnacked decides what the problems found past the acknowledged
// entries are. A running device shows such things for as long as a commit
// takes (data written before its entry, records before the log, entries
// before their keys are burnt): when the device was seen sealing, or holds
// the store open (its lock on .SEALFS.LOG), they are counted as in flight;
// otherwise they are what a crash or someone else left, and are reported.
func (v *verifier) settleUnacked() {
	more := int64(0)
	for _, h := range v.unackedMore {
		more += h.n
	}
	if len(v.unacked) == 0 && more == 0 {
		return
	}
	if v.sum.Live {
		v.sum.InFlight += int64(len(v.unacked)) + more
	} else {
		for _, p := range v.unacked {
			v.report(p)
		}
		for _, k := range slices.Sorted(maps.Keys(v.unackedMore)) {
			h := v.unackedMore[k]
			if h.n == 1 {
				v.report(h.first)
				continue
			}
			v.report(Problem{Kind: k, Entry: -1, Msg: fmt.Sprintf(
				"%d more %v problems past the entries the device acknowledged, not listed one by one (the first %d problems there are), the first of them at entry %d: %s",
				h.n, k, maxHeldUnacked, h.first.Entry, h.first.Msg)})
			v.count(k, h.n-1) // the problem above stands for n
		}
	}
	v.unacked, v.unackedMore = nil, nil
}

// detectNRatchet finds nratchet as SealFS's verify does: the value under
// which the first entry verifies. Without a key it falls back to the default.
func (v *verifier) detectNRatchet(lf *os.File) int {
	if v.keys == nil {
		return DefaultNRatchet
	}
	var b [EntrySize]byte
	if _, err := lf.ReadAt(b[:], LogHeaderSize); err != nil {
		return DefaultNRatchet
	}
	e, _ := ParseEntry(b[:])
	paths := v.mapPaths()
	for nr := 1; nr <= MaxNRatchet; nr++ {
		v.nr = nr
		var key [KeySize]byte
		if !v.entryKey(0, &key) {
			break
		}
		ok, _ := v.macEntry(&e, &key, paths[e.Inode])
		if ok {
			return nr
		}
	}
	return DefaultNRatchet
}

// entryKey sets key to the key of entry i, given the key of entry i-1.
func (v *verifier) entryKey(i int64, key *[KeySize]byte) bool {
	if v.sideBySide {
		if i < v.keyFrom || i >= v.keyFrom+int64(len(v.ahead)) {
			if i%int64(v.nr) == 0 {
				v.keysAhead(i)
			}
		}
		if i >= v.keyFrom && i < v.keyFrom+int64(len(v.ahead)) {
			*key = v.ahead[i-v.keyFrom]
			return true
		}
	}
	roff := i % int64(v.nr)
	if roff != 0 {
		v.m.ratchet(key, uint64(roff), v.nr)
		return true
	}
	if !v.keys.key(i/int64(v.nr), key) {
		return false
	}
	if v.nr != 1 {
		v.m.ratchet(key, 0, v.nr)
	}
	return true
}

// keysAhead computes the keys of every entry of the sixteen ratchet blocks
// from entry i on (i starts a block), the ratchet steps of the blocks side
// by side on the 16-lane SHA-256; fewer blocks when the auditor keystream
// ends first (entryKey then reports it).
func (v *verifier) keysAhead(i int64) {
	nr := v.nr
	v.keyFrom, v.ahead = i, v.ahead[:0]
	var raw [sha256x16.Lanes][KeySize]byte
	lanes := 0
	for ; lanes < len(raw); lanes++ {
		if !v.keys.key(i/int64(nr)+int64(lanes), &raw[lanes]) {
			break
		}
	}
	if lanes == 0 {
		return
	}
	if cap(v.ahead) < len(raw)*nr {
		v.ahead = make([][KeySize]byte, 0, len(raw)*nr)
	}
	v.ahead = v.ahead[:lanes*nr]
	if nr == 1 {
		copy(v.ahead, raw[:lanes])
		return
	}
	for roff := range nr {
		v.macb.ratchet(raw[:lanes], uint64(roff), nr)
		for l := range lanes {
			v.ahead[l*nr+roff] = raw[l]
		}
	}
	clear(raw[:])
}

// mapPaths pre-reads the map records (unverified) in a separate pass.
func (v *verifier) mapPaths() map[uint64]string {
	paths := map[uint64]string{}
	v.eachMapRecord(func(r *Record) { paths[r.ID] = r.Path })
	return paths
}

// eachMapRecord calls f with each map record of the records file as it is
// now, read apart from the verification's own stream and unverified, up to
// the first damaged record.
func (v *verifier) eachMapRecord(f func(*Record)) {
	rf, err := regfile.OpenBeneath(v.dir, RecordsName)
	if err != nil {
		return
	}
	defer rf.Close()
	rr := NewRecordReader(rf)
	for {
		r, err := rr.Next()
		if err != nil {
			return
		}
		if r.Type == RecordMap {
			f(&r)
		}
	}
}

func (v *verifier) openRecords() {
	f, err := regfile.OpenBeneath(v.dir, RecordsName)
	if err != nil {
		v.report(Problem{Kind: ProblemRecord, File: RecordsName, Entry: -1, Msg: "side records missing: real logs cannot be located"})
		return
	}
	v.rf = f
	if st, err := f.Stat(); err == nil {
		v.recSize = st.Size()
	}
	v.rr = NewRecordReader(io.NewSectionReader(f, 0, v.recSize))
}

// nextRecord loads the next side record into v.pending; a malformed
// record is reported once and ends the stream.
func (v *verifier) nextRecord() {
	v.pending = nil
	if v.rr == nil {
		return
	}
	r, err := v.rr.Next()
	if err != nil {
		if err != io.EOF {
			v.report(Problem{Kind: ProblemRecord, File: RecordsName, Entry: -1, Off: v.rr.Offset(), Msg: err.Error()})
		}
		v.streamEnd = max(v.streamEnd, v.rr.Offset())
		v.rr = nil
		return
	}
	v.pending = &r
}

// applyRecords verifies the side records bound to entry e (index i) and
// applies the map and time records among them. Records come in entry order,
// and each proves itself by its seal (the key of the entry it names), not by
// where it lies: an anchor entry claims its record, which must be the next
// one bound to it; a record found elsewhere than its anchor says (records
// before it deleted, inserted or moved) is reported and still applied, and
// a record missing is reported without disturbing the ones after it. When a
// damaged record ends the stream, it is picked up again, forward only, at
// the next anchored offset, so one damaged record hides nothing after it.
// A version 1 record (stores written before anchors) is bound to an
// append's entry and has no anchor to answer to.
func (v *verifier) applyRecords(i int64, e *Entry, key *[KeySize]byte) {
	if v.pending == nil {
		v.nextRecord()
	}
	var rk [KeySize]byte
	haveKey := false
	// check verifies r's seal with entry i's key and applies it.
	check := func(r *Record) {
		if v.keys != nil {
			if !haveKey {
				rk, haveKey = v.m.recordKey(key), true
			}
			v.m.reset(&rk)
			v.m.Write(r.Raw)
			if !macEqual(v.m.final()[:], r.MAC[:]) {
				v.reportRecord(r, i, fmt.Sprintf("%v record does not match its seal (forged or altered)", r.Type))
				return
			}
		}
		switch r.Type {
		case RecordTime:
			v.lastTime = r.Time
		case RecordMap:
			v.applyMap(i, r)
		}
	}
	anchor := e.IsAnchor() && e.checkAnchor() == ""
	off, n := int64(e.Offset), int64(e.Count)
	for ; v.pending != nil; v.nextRecord() {
		r := v.pending
		switch {
		case r.Entry < i:
			if r.Anchored() {
				v.reportRecord(r, r.Entry, fmt.Sprintf("%v record bound to entry %d, found after entry %d: its anchor did not claim it there (moved or copied)", r.Type, r.Entry, i))
			} else {
				v.reportRecord(r, r.Entry, fmt.Sprintf("%v record out of order (bound to entry %d, found after entry %d)", r.Type, r.Entry, i))
			}
			continue
		case r.Entry > i || anchor:
			// A later entry's record, kept for it; or this anchor's: below.
		case r.Anchored():
			v.reportRecord(r, i, fmt.Sprintf("%v record bound to entry %d, which does not anchor it", r.Type, i))
			continue
		case v.v1Entry == i && v.v1Types&(1<<(r.Type&7)) != 0:
			// Two of a kind for one entry: a copy put where a deleted
			// version 1 record was (those have no anchor to miss them).
			v.reportRecord(r, i, fmt.Sprintf("a second %v record bound to entry %d (duplicated)", r.Type, i))
			continue
		default:
			if v.v1Entry != i {
				v.v1Entry, v.v1Types = i, 0
			}
			v.v1Types |= 1 << (r.Type & 7)
			check(r) // version 1, bound to this entry
			continue
		}
		break
	}
	if !anchor {
		return
	}
	r := v.pending
	switch {
	case r != nil && r.Entry == i:
		v.pending = nil
		if !r.Anchored() || r.Off != off || int64(len(r.Raw)+KeySize) != n {
			v.reportRecord(r, i, fmt.Sprintf("the side record of entry %d lies at %d (%d bytes), where its anchor says %d (%d bytes): records before it deleted, inserted or moved",
				i, r.Off, len(r.Raw)+KeySize, off, n))
		}
		check(r) // its seal, not its place, proves it
		return
	case r == nil && v.rr == nil && off >= v.streamEnd:
		// A damaged record ended the stream before this anchor: read the
		// record at the anchored offset, and go on from there.
		if r = v.recordAt(off, n); r != nil && r.Entry == i && r.Anchored() {
			check(r)
			return
		}
	}
	v.report(Problem{Kind: ProblemRecord, File: RecordsName, Entry: i, Off: off, Len: n,
		Msg: fmt.Sprintf("entry %d anchors a side record at %d (%d bytes) that is not there (deleted, cut or damaged)", i, off, n)})
}

// recordAt reads and parses the record of n bytes at off in the records
// file, and restarts the record stream after it when it parses; nil if it
// does not. It is called only at or past where the stream ended, and the
// restarted stream ends further on, so however many anchors a hostile log
// holds, the stream never reads a record twice.
func (v *verifier) recordAt(off, n int64) *Record {
	if v.rf == nil || off+n > v.recSize {
		return nil
	}
	v.streamEnd = off + n // tried: never again before here
	b := make([]byte, n)
	if _, err := v.rf.ReadAt(b, off); err != nil {
		return nil
	}
	r, k, err := ParseRecord(b, off)
	if err != nil || int64(k) != n {
		return nil
	}
	v.rr = newRecordReaderAt(io.NewSectionReader(v.rf, off+n, v.recSize-off-n), off+n)
	v.pending = nil
	return &r
}

// reportRecord reports a problem with side record r, bound to entry i.
func (v *verifier) reportRecord(r *Record, i int64, msg string) {
	v.report(Problem{Kind: ProblemRecord, File: RecordsName, Entry: i, Off: r.Off, Len: int64(len(r.Raw) + KeySize), Msg: msg})
}

func (v *verifier) applyMap(i int64, r *Record) {
	if f := v.files[r.ID]; f != nil {
		if f.path != r.Path {
			v.report(Problem{Kind: ProblemRecord, File: r.Path, ID: r.ID, Entry: i, Msg: fmt.Sprintf("file %d already mapped to %s", r.ID, f.path)})
		}
		return
	}
	if id, ok := v.paths[r.Path]; ok {
		v.report(Problem{Kind: ProblemRecord, File: r.Path, ID: r.ID, Entry: i, Msg: fmt.Sprintf("path already mapped to file %d", id)})
		return
	}
	f := &vfile{path: r.Path, id: r.ID}
	v.files[r.ID] = f
	v.paths[r.Path] = r.ID
	fh, err := regfile.OpenBeneath(v.dir, filepath.FromSlash(r.Path))
	if err != nil {
		f.missing = true
		return
	}
	st, err := fh.Stat()
	if err != nil || !st.Mode().IsRegular() {
		fh.Close()
		f.missing = true
		return
	}
	f.size = st.Size()
	f.r = newSeqReader(fh, f.size)
	f.r.beforeUnmap = v.flushMACs
}

// macEntry computes e's MAC over the real log at path and compares it.
// short reports that the real log ends before the entry's range.
func (v *verifier) macEntry(e *Entry, key *[KeySize]byte, path string) (ok, short bool) {
	v.m.startEntry(key, e)
	if e.Inode != FakeInode {
		f := v.files[e.Inode]
		if f == nil || f.r == nil {
			return false, false
		}
		if int64(e.Offset) < 0 || int64(e.Count) < 0 || int64(e.Offset)+int64(e.Count) > f.size || int64(e.Offset)+int64(e.Count) < 0 {
			return false, true
		}
		if err := f.r.feed(v.m, int64(e.Offset), int64(e.Count)); err != nil {
			return false, true // includes a file shrunk under a mapping (SIGBUS)
		}
	}
	return macEqual(v.m.final()[:], e.MAC[:]), false
}

func (v *verifier) selected(e *Entry) bool {
	if v.o.File == "" {
		return true
	}
	if e.Inode != v.want || v.want == 0 {
		return false
	}
	if rg := v.o.Range; rg != nil {
		end := int64(e.Offset + e.Count)
		return int64(e.Offset) < rg.Off+rg.Len && end > rg.Off
	}
	return true
}

func (v *verifier) checkEntry(i int64, e *Entry, key *[KeySize]byte) {
	if !v.selected(e) {
		return
	}
	v.sum.Entries++
	roff, koff := expectedPlace(i, v.nr)
	f := v.files[e.Inode]
	path := ""
	if f != nil {
		path = f.path
	}
	res := EntryResult{Index: i, Entry: *e, Path: path, Time: v.lastTime}
	fail := func(p Problem) { v.blame(&res, p) }
	queued := false // the MAC is queued and reports res itself
	defer func() {
		if !queued {
			v.entryDone(&res)
		}
	}()
	off, cnt := int64(e.Offset), int64(e.Count)
	if e.RatchetOffset != roff || e.KeyOffset != koff {
		fail(Problem{Kind: ProblemMisplaced, Off: off, Len: cnt, Msg: fmt.Sprintf(
			"entry carries ratchet/key offset %d/%d but its position needs %d/%d (reordered, replaced or copied from elsewhere)",
			e.RatchetOffset, e.KeyOffset, roff, koff)})
		return
	}
	if e.Inode == FakeInode {
		if e.IsAnchor() {
			if msg := e.checkAnchor(); msg != "" {
				fail(Problem{Kind: ProblemAltered, Msg: msg})
				return
			}
		}
		if v.keys != nil {
			if ok, _ := v.macEntry(e, key, ""); !ok {
				fail(Problem{Kind: ProblemAltered, Msg: "filler entry does not match its seal"})
				return
			}
		}
		res.OK = true
		v.sum.Intact++
		return
	}
	if f == nil {
		fail(Problem{Kind: ProblemUnknownFile, Off: off, Len: cnt, Msg: fmt.Sprintf("entry for file %d, which no sealed map record names", e.Inode)})
		return
	}
	if off < 0 || cnt < 0 || off+cnt < off {
		// No append reaches 2^63 bytes: the entry itself was changed.
		// Judged before coverage, whose arithmetic it would break.
		fail(Problem{Kind: ProblemAltered, Msg: fmt.Sprintf("entry's range (offset %d, count %d) is impossible (the entry was changed)", e.Offset, e.Count)})
		return
	}
	f.entries++
	if v.o.Range != nil && f.entries == 1 {
		f.next = off // a range starts mid-file: coverage starts at its first entry
	}
	if f.missing {
		if f.entries == 1 {
			fail(Problem{Kind: ProblemMissingFile, Entry: i, Msg: "sealed real log is missing (renamed or deleted)"})
		} else {
			res.Why = "missing-file"
		}
		f.next = max(f.next, off+cnt)
		return
	}
	if off > f.next {
		fail(Problem{Kind: ProblemGap, Off: f.next, Len: off - f.next, Msg: "bytes covered by no entry (entries deleted)"})
	} else if off < f.next {
		fail(Problem{Kind: ProblemMisplaced, Off: off, Len: cnt, Msg: fmt.Sprintf("entry overlaps bytes already sealed up to %d (replayed entry)", f.next)})
		return
	}
	if off+cnt > f.size {
		fail(Problem{Kind: ProblemTruncated, Off: off, Len: cnt, Msg: fmt.Sprintf("entry reaches past the real log's end at %d (real log truncated)", f.size)})
		f.next = off + cnt
		return
	}
	f.next = off + cnt
	if v.keys == nil {
		v.macOutcome(&res, true) // structure only: counted as intact, never reported OK overall
		return
	}
	if v.sideBySide && f.r != nil {
		if data, ok := f.r.span(off, cnt); ok {
			queued = true
			v.queueMAC(&res, key, data)
			return
		}
	}
	ok, _ := v.macEntry(e, key, path)
	v.macOutcome(&res, ok)
}

func (v *verifier) orphanRecords(n int64) {
	if v.pending == nil {
		v.nextRecord()
	}
	for ; v.pending != nil; v.nextRecord() {
		r := v.pending
		if v.o.File != "" && r.Path != v.o.File {
			continue
		}
		msg := fmt.Sprintf("%v record bound to entry %d, but the log has %d entries", r.Type, r.Entry, n)
		if r.Entry < n {
			msg = fmt.Sprintf("%v record bound to entry %d, which verification did not reach (not verified)", r.Type, r.Entry)
		}
		if r.Type == RecordMap && r.Entry >= v.acked && v.acked >= 0 {
			v.unackedPaths[r.Path] = true // its real log is being created
		}
		v.reportUnacked(r.Entry >= v.acked, Problem{Kind: ProblemRecord, File: RecordsName, Entry: r.Entry, Off: r.Off, Len: int64(len(r.Raw) + KeySize), Msg: msg})
	}
}

func (v *verifier) finishFiles() {
	ids := make([]uint64, 0, len(v.files))
	for id := range v.files {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, id := range ids {
		f := v.files[id]
		if v.o.File != "" && id != v.want {
			continue
		}
		if f.missing {
			if f.entries == 0 {
				v.report(Problem{Kind: ProblemMissingFile, File: f.path, ID: id, Entry: -1, Msg: "sealed real log is missing (renamed or deleted)"})
			}
			continue
		}
		end := f.size
		if rg := v.o.Range; rg != nil {
			end = min(end, rg.Off+rg.Len)
		}
		if end > f.next && v.o.Range == nil {
			v.reportUnacked(true, Problem{Kind: ProblemUnsealed, File: f.path, ID: id, Entry: -1, Off: f.next, Len: end - f.next,
				Msg: "bytes after the last entry are not sealed (appended behind the device's back, or an unacknowledged tail)"})
		}
	}
}

// createdPastAcked reports whether a map record bound to an entry past the
// acknowledged ones names rel: a real log a running device is creating.
// The records file is read again for it (once), since the device may have
// written the record after the verifier read past its place.
func (v *verifier) createdPastAcked(rel string) bool {
	if v.acked < 0 {
		return false
	}
	if !v.reread {
		v.reread = true
		v.eachMapRecord(func(r *Record) {
			if r.Entry >= v.acked {
				v.unackedPaths[r.Path] = true
			}
		})
	}
	return v.unackedPaths[rel]
}

// scanUnknown reports files in the store that no map record names.
func (v *verifier) scanUnknown() {
	filepath.WalkDir(v.dir, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(v.dir, p)
		rel = filepath.ToSlash(rel)
		if err != nil {
			// A directory that cannot be listed may hide anything:
			// what it holds was not checked, so the store is not.
			v.report(Problem{Kind: ProblemUnknownFile, File: rel, Entry: -1, Msg: "cannot be read, so what it holds was not checked: " + err.Error()})
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			// A real log (or directory) replaced by a link would be read
			// from wherever it points: OpenBeneath refuses it, and it is
			// named here whether a map record names it or not.
			v.report(Problem{Kind: ProblemUnknownFile, File: rel, Entry: -1, Msg: "symbolic link in the store: a store holds files of its own, and a link may point anywhere (planted)"})
			return nil
		}
		if d.IsDir() {
			return nil
		}
		// The store's own files; anything else, under .indelible/ too,
		// is a real log a map record names or has no business here.
		if rel == LogName || rel == RecordsName || rel == ParamsName {
			return nil
		}
		if _, ok := v.paths[rel]; !ok {
			v.reportUnacked(v.createdPastAcked(rel), Problem{Kind: ProblemUnknownFile, File: rel, Entry: -1, Msg: "file in the store that no sealed map record names (renamed or planted)"})
		}
		return nil
	})
}

// checkDevice compares the log with the device keystream's burnt offset
// and ratchet state: keys burnt for entries that are not in the log mean the
// log's tail was cut. An attacker who cuts the tail holds the device
// keystream and the state too, so each is checked against what they cannot
// forge: the auditor's keystream.
func (v *verifier) checkDevice(magic uint64, n int64) {
	if v.o.DeviceKey == "" {
		return
	}
	dk, err := openKeyReader(v.o.DeviceKey)
	if err != nil {
		v.report(Problem{Kind: ProblemKeystream, Entry: -1, Msg: "device keystream: " + err.Error()})
		return
	}
	defer dk.f.Close()
	if dk.hdr.Magic != magic {
		v.report(Problem{Kind: ProblemKeystream, Entry: -1, Msg: fmt.Sprintf("device keystream magic %#x is not the log's %#x", dk.hdr.Magic, magic)})
		return
	}
	// The two keystreams are written the same length (writeKeyPair) and
	// burning overwrites keys in place, so any difference is tampering. A
	// device keystream cut right after the keys its header claims burnt
	// leaves no first unburnt key for SealFS's check below to compare:
	// with the header lowered, the burnt keys would vouch for a log cut
	// by whole ratchet blocks.
	if v.keys != nil && dk.slots != v.keys.slots {
		msg := fmt.Sprintf("the device keystream was cut: it holds %d keys, the auditor's %d (the burnt offset cannot be trusted)", dk.slots, v.keys.slots)
		if dk.slots > v.keys.slots {
			msg = fmt.Sprintf("the device keystream holds %d keys, the auditor's %d: the keystreams are not a pair", dk.slots, v.keys.slots)
		}
		v.report(Problem{Kind: ProblemKeystream, Entry: -1, Msg: msg})
	}
	// The burnt offset and state as they were before the log was read:
	// all they count was in the log then, even while the device runs.
	burnt := int64(v.dev0.burnt)
	if v.dev0.err {
		burnt = int64(dk.hdr.Burnt)
	}
	blocks := keySlot(burnt)
	minEntries := (blocks-1)*int64(v.nr) + 1
	// The ratchet state names the exact count of acknowledged entries;
	// the burnt offset alone bounds it to within a ratchet block.
	cut := false
	if acked, ok := v.checkState(magic, burnt); ok && acked > n {
		cut = true
		v.report(Problem{Kind: ProblemTruncated, File: LogName, Entry: n, Off: entryPos(n), Len: (acked - n) * EntrySize,
			Msg: fmt.Sprintf("the device acknowledged %d entries but the log holds %d (tail deleted)", acked, n)})
	}
	if !cut && blocks > 0 && n < minEntries {
		v.report(Problem{Kind: ProblemTruncated, File: LogName, Entry: n, Off: entryPos(n), Len: (minEntries - n) * EntrySize,
			Msg: fmt.Sprintf("the device burnt %d keys, so the log must hold at least %d entries, but it holds %d (tail deleted)", blocks, minEntries, n)})
	}
	// The keys burnt now, the header as openKeyReader read it (after the log).
	nowBlocks := keySlot(int64(dk.hdr.Burnt))
	if n > nowBlocks*int64(v.nr) {
		v.reportUnacked(true, Problem{Kind: ProblemKeystream, File: LogName, Entry: nowBlocks * int64(v.nr), Msg: fmt.Sprintf(
			"%d entries use keys the device has not burnt (unacknowledged tail of a crash, or forged)", n-nowBlocks*int64(v.nr))})
	}
	// SealFS's checkKeyStreams: the last burnt key differs, the first unburnt one matches.
	if v.keys != nil && blocks > 0 {
		var a, d [KeySize]byte
		if v.keys.key(blocks-1, &a) && dk.key(blocks-1, &d) && a == d {
			v.report(Problem{Kind: ProblemKeystream, Entry: -1, Msg: "the device keystream still holds the last key it claims to have burnt"})
		}
		// The first key unburnt now: read, then the header again, so that
		// a burn meanwhile (a running device) is not taken for a mismatch.
		if v.keys.key(nowBlocks, &a) && dk.key(nowBlocks, &d) && a != d && v.snapDevice().burnt == dk.hdr.Burnt {
			v.report(Problem{Kind: ProblemKeystream, Entry: -1, Msg: "the first unburnt keys differ: the keystreams are not a pair"})
		}
	}
}

// deviceSnap is what the device's own files say at one moment: the device
// keystream's burnt offset and the ratchet state's bytes. Two snapshots
// differ when the device sealed in between.
type deviceSnap struct {
	burnt    uint64
	err      bool // the keystream header could not be read
	state    [stateSize]byte
	n        int    // state bytes read
	stateErr string // why the state could not be read
}

func (v *verifier) snapDevice() deviceSnap {
	var d deviceSnap
	if v.o.DeviceKey == "" {
		return d
	}
	if k, err := openKeyReader(v.o.DeviceKey); err != nil {
		d.err = true
	} else {
		d.burnt = k.hdr.Burnt
		k.f.Close()
	}
	// The header first: a running device writes the state before it burns,
	// so a state read after the header counts at least what it burnt.
	// The state is rewritten in place: read until two reads agree, so
	// that a write caught half done is not taken for a forged state.
	var b []byte
	var err error
	for range 5 {
		prev := b
		if b, err = regfile.ReadSmall(v.o.DeviceKey+StateSuffix, stateSize); err != nil || bytes.Equal(prev, b) {
			break
		}
	}
	if err != nil {
		d.stateErr = err.Error()
	}
	d.n = copy(d.state[:], b)
	return d
}

// ackedEntries is the count of entries the state says the device
// acknowledged, or -1 when there is no state to go by.
func (d *deviceSnap) ackedEntries() int64 {
	b, err := d.stateBytes()
	if err != nil {
		return -1
	}
	st, err := ParseRatchetState(b)
	if err != nil {
		return -1
	}
	return st.Committed
}

func (d *deviceSnap) stateBytes() ([]byte, error) {
	if d.stateErr != "" {
		return nil, errors.New(d.stateErr)
	}
	return d.state[:d.n], nil
}

// checkState reads the ratchet state beside the device keystream (burnt is
// its burnt offset) and returns the number of entries it says the device
// acknowledged; ok is false when it says nothing to go by. Its checksum
// has no key: whoever holds the device can rewrite it, so only what they
// cannot compute is believed.
func (v *verifier) checkState(magic uint64, burnt int64) (acked int64, ok bool) {
	p := v.o.DeviceKey + StateSuffix
	bad := func(msg string) (int64, bool) {
		v.report(Problem{Kind: ProblemKeystream, Entry: -1, Msg: fmt.Sprintf("ratchet state %s: %s", p, msg)})
		return 0, false
	}
	b, err := v.dev0.stateBytes()
	if err != nil {
		// A store SealFS made has no state, and the burnt keys bound its
		// log to whole ratchet blocks. One indelible made always has:
		// Create writes it with the params and side records, and Open, in
		// a SealFS store, creates it and the side-record file before it
		// seals anything. Deleted, it would let a cut inside the last
		// ratchet block pass.
		if !v.madeByIndelible() {
			return 0, false
		}
		return bad(err.Error() + " (deleted, it would hide a log tail cut inside a ratchet block; " +
			"if the device keystream was copied, copy its " + StateSuffix + " file with it)")
	}
	st, err := ParseRatchetState(b)
	if err != nil {
		return bad(err.Error())
	}
	if st.KeyMagic != magic {
		return bad(fmt.Sprintf("belongs to keystream %#x, not the log's %#x", st.KeyMagic, magic))
	}
	if st.NRatchet != v.nr {
		return bad(fmt.Sprintf("says nratchet %d, the store %d", st.NRatchet, v.nr))
	}
	// The device writes the state before it burns keys, and burns none
	// its state does not count (Store.commit): burnt keys that it does not
	// count mean an older state put back, or one whose count was lowered to
	// a ratchet block's start, where it carries no key to check.
	nr := int64(v.nr)
	if need := keyOff((st.Target + nr - 1) / nr); burnt > need {
		return bad(fmt.Sprintf("counts %d entries, which need %d burnt keys, but the device burnt %d (stale or forged state)",
			st.Target, keySlot(need), keySlot(burnt)))
	}
	// Inside a ratchet block the state holds the key of the entry it
	// counts up to. An attacker who cuts the log inside the last block
	// and writes a state that counts only what is left cannot compute
	// that key: the ratchet is one-way and the block's earlier keys are
	// gone from the device.
	if v.keys != nil {
		if !v.keyMatches(st.Committed, &st.NextKey) {
			return bad(fmt.Sprintf("its next key is not the key of entry %d (forged: the log's tail cut inside a ratchet block?)", st.Committed))
		}
		if st.Target != st.Committed && !v.keyMatches(st.Target, &st.TargetKey) {
			return bad(fmt.Sprintf("its target key is not the key of entry %d (forged: the log's tail cut inside a ratchet block?)", st.Target))
		}
	}
	acked = st.Committed
	// A commit in flight whose burn had begun was durable, and the
	// device's next Open finishes it (Store.open): its entries count.
	if st.Target > st.Committed && burnt > keyOff((st.Committed+nr-1)/nr) {
		acked = st.Target
	}
	return acked, true
}

// madeByIndelible tells whether the store has indelible's metadata (side
// records or params), which a store made by SealFS lacks. Deleting the side
// records is itself reported (openRecords), so it cannot pass the store
// off as SealFS's.
func (v *verifier) madeByIndelible() bool {
	for _, name := range []string{RecordsName, ParamsName} {
		if _, err := os.Lstat(filepath.Join(v.dir, name)); err == nil {
			return true
		}
	}
	return false
}

// keyMatches tells whether k is the key of entry i, derived from the
// auditor keystream as entryKey does. At a ratchet block's start the state
// holds no key (the next comes from the keystream), and nothing is checked.
func (v *verifier) keyMatches(i int64, k *[KeySize]byte) bool {
	nr := int64(v.nr)
	if i%nr == 0 {
		return true
	}
	var want [KeySize]byte
	if !v.keys.key(i/nr, &want) {
		return false // beyond the keystream: no device seals there
	}
	v.m.ratchet(&want, 0, v.nr)
	for r := int64(1); r <= i%nr; r++ {
		v.m.ratchet(&want, uint64(r), v.nr)
	}
	return macEqual(want[:], k[:])
}

func (v *verifier) closeFiles() {
	if v.rf != nil {
		v.rf.Close()
	}
	for _, f := range v.files {
		if f.r != nil {
			f.r.close()
		}
	}
}

// keyReader reads keys from a keystream with a read-ahead buffer.
type keyReader struct {
	f     *os.File
	hdr   KeyHeader
	slots int64
	buf   []byte
	first int64 // first slot in buf
}

func openKeyReader(p string) (*keyReader, error) {
	f, err := regfile.Open(p)
	if err != nil {
		return nil, fmt.Errorf("seal: keystream: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	var hb [KeyHeaderSize]byte
	if _, err := f.ReadAt(hb[:], 0); err != nil {
		f.Close()
		return nil, &FormatError{File: p, Struct: "key header", Msg: err.Error()}
	}
	h, err := ParseKeyHeader(hb[:], st.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	return &keyReader{f: f, hdr: h, slots: keySlot(st.Size()), first: -1}, nil
}

func (k *keyReader) key(slot int64, out *[KeySize]byte) bool {
	if slot < 0 || slot >= k.slots {
		return false
	}
	n := int64(len(k.buf) / KeySize)
	if k.first < 0 || slot < k.first || slot >= k.first+n {
		const chunk = 2048
		cnt := min(chunk, k.slots-slot)
		if cap(k.buf) < int(cnt*KeySize) {
			k.buf = make([]byte, cnt*KeySize)
		}
		k.buf = k.buf[:cnt*KeySize]
		if _, err := k.f.ReadAt(k.buf, keyOff(slot)); err != nil {
			k.first = -1
			return false
		}
		k.first = slot
	}
	copy(out[:], k.buf[(slot-k.first)*KeySize:])
	return true
}

// preadReader feeds byte ranges of a real log to a MAC with large reads;
// it is the fallback where the file cannot be mapped.
type preadReader struct {
	f   *os.File
	buf []byte
	off int64 // file offset of buf[0], -1 when empty
}

const readChunk = 1 << 20

func (r *preadReader) feed(w io.Writer, off, n int64) error {
	for n > 0 {
		if r.off < 0 || off < r.off || off >= r.off+int64(len(r.buf)) {
			if cap(r.buf) < readChunk {
				r.buf = make([]byte, readChunk)
			}
			k, err := r.f.ReadAt(r.buf[:readChunk], off)
			if k == 0 {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				r.off = -1
				return err
			}
			r.buf, r.off = r.buf[:k], off
		}
		p := r.buf[off-r.off:]
		if int64(len(p)) > n {
			p = p[:n]
		}
		w.Write(p)
		off += int64(len(p))
		n -= int64(len(p))
	}
	return nil
}
