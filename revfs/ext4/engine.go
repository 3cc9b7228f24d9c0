package ext4

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// Options configures an Engine.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Committed holds the sealed watermark of each file at start (restart).
	Committed map[revfs.FileID]int64
	// Sealed reads len(p) bytes at off of a file's sealed content (the
	// real log), below its watermark. With it, Open compares the bytes a
	// journal recovery would show in a committed range with what was
	// sealed (sealedcheck.go); nil skips that comparison.
	Sealed func(id revfs.FileID, p []byte, off int64) error
}

// Engine implements revfs.Engine for one ext4 image.
type Engine struct {
	img        io.ReaderAt
	readSealed func(id revfs.FileID, p []byte, off int64) error // Options.Sealed
	size       int64
	log        *slog.Logger
	now        func() time.Time
	written    revfs.BlockSet

	sb       *layout.SuperBlock
	rawSB    []byte
	bs       int64
	blocks   uint64
	fsSeed   uint32
	sbBlock  uint64 // the block holding the primary superblock
	sbOff    int    // its offset in that block
	gdtFirst uint64
	gdtCount uint64
	groups   []*layout.GroupDesc
	modeData bool // default mount options say data=journal

	files   []*tracked          // protected files, ordered by ID
	dirs    []*tracked          // their parent directories
	byIno   map[uint64]*tracked // files and dirs
	meta    map[uint64][]byte   // newest known version of each watched metadata block
	bitmaps map[uint64][]byte   // block bitmap block -> newest version
	bitmapG map[uint64]uint64   // block bitmap block -> group

	jnl     *journal // nil without a journal
	overlay map[uint64]journalCopy

	// Without a journal (unlink.go): protected files whose entry a
	// directory write removed while nothing else showed an unlink yet.
	gone map[uint64]*goneEntry

	// derived indexes, rebuilt by reindex when the model changes
	roles   map[uint64][]role
	data    []dataSpan // protected files' mapped blocks, by physical start
	dataEnd []uint64   // running maximum of data span ends
	// dataRuns and dataSpare are reindex's scratch: where each file's
	// spans start in data, and the buffer its merge sort writes to.
	dataRuns  []int
	dataSpare []dataSpan
	watched   []span // every watched block range, sorted, merged
	dirty     bool
	// the part of the indexes that never changes, built once (index.go)
	staticRoles map[uint64][]role // superblock, descriptors, bitmaps
	staticSpans []span            // their blocks and the journal's, sorted, merged
	staticJnl   bool              // staticSpans include the journal
	dynBlocks   []uint64          // blocks the last reindex gave tracked-inode roles

	// seq counts Wrote and commit events: it orders writes against size
	// updates for the coherence proof. epoch counts host flushes: between
	// two flushes the order of writes carries no meaning, so a journalled
	// copy only beats a home write of the same block from an earlier epoch.
	seq       uint64
	epoch     uint64
	lastWrite blockMarks        // protected data block -> its newest write
	homeWrote map[uint64]uint64 // watched metadata block -> epoch of its newest home write
	opening   bool              // Open is reading the image as its baseline

	// recent lists the host's writes since the last journal commit the
	// engine applied, in order. While a commit is applied, freeing is its
	// (last) transaction and freedAfter, once keptFrom needs it, the
	// sequence of the first write to its log. A block the commit frees
	// that was written after that is not forgotten (applyBitmap,
	// keptFrom).
	recent []recentWrite
	// dropped are blocks tracked inodes stopped using, set aside until
	// another owner claims them (dropped.go).
	dropped []droppedSpan
	// held are TRIMs of protected files' extent tree blocks the device
	// accepted without carrying them out (heldtrim.go).
	held       map[uint64]heldTrim
	freeing    *jbd2.Transaction
	freedAfter uint64

	// FreeBlocks' running sum of the descriptors' free counts, per group
	// and in all, valid while freeValid (space.go)
	freeG     []uint32
	freeSum   uint64
	freeValid bool

	flushVs   []revfs.Violation // found by the last Flushed, for FlushViolations
	flushUndo []uint32          // commit blocks of the transactions flushVs blames (journal blocks)
	undoNext  []uint32          // those of the violations FlushViolations last returned: what DiscardAtFlush clears

	// mut counts the calls that change the model (Wrote, Discarded,
	// Flushed, SetCommitted); memo is CheckWrite's evaluation of a commit
	// block write, valid for the Wrote of the same request while mut has
	// not moved (journal.go, commitMemo).
	mut   uint64
	memo  *commitMemo
	wrote *wroteReq
	// While missOn, source notes (missHit) a lookup of missBlock: a block
	// whose written state the write being evaluated changes (memoable).
	missOn, missHit bool
	missBlock       uint64

	scratch []byte // peekNewest's buffer

	// zone is the blocks the filesystem keeps for its metadata: a tracked
	// inode's extent tree may not map or hold any of them (treeWalk.node).
	zone layout.Zone
}

// writeMark says when a block was written.
type writeMark struct{ seq, epoch uint64 }

var _ revfs.Engine = (*Engine)(nil)

// Limits on hostile input.
const (
	// maxTrackedDirBlocks bounds how many blocks of a parent directory the
	// engine keeps in memory (16 Ki blocks is 64 MiB of directory at 4 KiB,
	// far more than a log directory).
	maxTrackedDirBlocks = 1 << 14
	// maxTreeBlocks bounds the extent tree of one tracked inode, which is
	// walked again whenever its metadata changes: 4096 leaves hold over a
	// million extents (340 per 4 KiB leaf), far more than a log file needs,
	// and keep a walk under 16 MiB of reads.
	maxTreeBlocks = 1 << 12
)

// maxTreeExtents bounds the extents of one tracked inode the same way
// whatever the block size (a 64 KiB leaf holds 5460): 32 bytes each in
// memory, 42 MiB at most. A variable for tests.
var maxTreeExtents = maxTreeBlocks * 340

// Open parses the image as it is and returns an engine following it.
// files are the protected files (ID = inode number); written is the
// persistent set of blocks the host has written since the image was made.
func Open(img io.ReaderAt, size int64, files []revfs.ProtectedFile, written revfs.BlockSet, opts Options) (*Engine, error) {
	e := &Engine{
		img: img, size: size, written: written, log: opts.Logger, now: opts.Now, readSealed: opts.Sealed,
		byIno: map[uint64]*tracked{}, meta: map[uint64][]byte{}, bitmaps: map[uint64][]byte{},
		bitmapG: map[uint64]uint64{}, overlay: map[uint64]journalCopy{}, epoch: 1,
		homeWrote: map[uint64]uint64{}, dirty: true,
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	e.opening = true
	defer func() { e.opening = false }()
	im, err := layout.OpenImage(img)
	if err != nil {
		return nil, fmt.Errorf("ext4: %w", err)
	}
	if err := im.SB.Supported(); err != nil {
		return nil, fmt.Errorf("ext4: %w", err)
	}
	e.sb, e.rawSB, e.groups = im.SB, im.RawSB, im.Groups
	e.bs = int64(im.BlockSize())
	e.blocks = im.SB.BlocksCount()
	if uint64(size) < e.blocks*uint64(e.bs) {
		return nil, fmt.Errorf("ext4: image of %d bytes is shorter than the filesystem (%d blocks of %d)", size, e.blocks, e.bs)
	}
	e.fsSeed = im.SB.ChecksumSeed()
	e.sbBlock = layout.SuperBlockOffset / uint64(e.bs)
	e.sbOff = int(layout.SuperBlockOffset % uint64(e.bs))
	e.gdtFirst, e.gdtCount = im.SB.GroupDescBlock(), im.SB.GroupDescBlocks()
	e.modeData = im.SB.FeatureCompat&layout.CompatHasJournal != 0 && im.SB.JournalMode() == "journal"
	for b := e.gdtFirst; b < e.gdtFirst+e.gdtCount; b++ {
		if e.meta[b], err = e.readImage(b); err != nil {
			return nil, err
		}
	}
	if e.meta[e.sbBlock], err = e.readImage(e.sbBlock); err != nil {
		return nil, err
	}
	for g, gd := range e.groups {
		bb := gd.BlockBitmap()
		if bb >= e.blocks {
			return nil, fmt.Errorf("ext4: block bitmap of group %d at block %d is outside the filesystem", g, bb)
		}
		e.bitmapG[bb] = uint64(g)
		if gd.Flags&layout.GroupBlockUninit != 0 {
			// Never initialised on disk: the kernel computes it; every
			// bit the engine could see clear later was never set.
			e.bitmaps[bb] = make([]byte, e.bs)
			continue
		}
		if e.bitmaps[bb], err = e.readImage(bb); err != nil {
			return nil, err
		}
	}

	e.zone = systemZone(im)

	sorted := append([]revfs.ProtectedFile(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	for _, pf := range sorted {
		if _, dup := e.byIno[uint64(pf.ID)]; dup {
			return nil, fmt.Errorf("ext4: file %d listed twice", pf.ID)
		}
		t, err := e.newTracked(uint64(pf.ID), false)
		if err != nil {
			return nil, fmt.Errorf("ext4: protected file %d (%s): %w", pf.ID, pf.Path, err)
		}
		t.path = pf.Path
		t.noteSize(0, t.view.size) // what the blocks written before Open go with
		if !t.view.inode.IsRegular() {
			return nil, fmt.Errorf("ext4: protected file %d (%s) is not a regular file (mode %#o)", pf.ID, pf.Path, t.view.inode.Mode)
		}
		if t.view.err != nil || len(t.view.unknown) > 0 {
			return nil, fmt.Errorf("ext4: protected file %d (%s): extent tree does not parse: %v", pf.ID, pf.Path, t.view.err)
		}
		e.files = append(e.files, t)
		e.byIno[t.ino] = t
	}
	// The directories on each protected path, from the root: found by
	// path, checked against the ID, and watched with the names the path
	// goes through (checkNames).
	for _, f := range e.files {
		if err := e.watchPath(im, f); err != nil {
			e.log.Warn("ext4: the directories on a protected path are not watched", "file", f.ino, "path", f.path, "err", err)
			continue
		}
		if f.parent.view.entries[uint32(f.ino)] == 0 {
			return nil, fmt.Errorf("ext4: protected file %d (%s) has no entry in its directory", f.ino, f.path)
		}
	}
	for _, d := range e.dirs {
		// Their views were decoded before their names were known.
		if d.view = e.computeView(d, e.source(nil)); d.view.err != nil {
			return nil, fmt.Errorf("ext4: directory %d on a protected path: %w", d.ino, d.view.err)
		}
		for b, blk := range d.view.used {
			e.meta[b] = blk
		}
		for name, want := range d.names {
			if got := d.view.named[name]; uint64(got) != want.child {
				return nil, fmt.Errorf("ext4: entry %q of directory %d names inode %d, not %d (path %s)", name, d.ino, got, want.child, want.file.path)
			}
		}
	}
	if err := e.openJournal(opts.Committed); err != nil {
		return nil, err
	}
	if len(e.flushVs) == 0 {
		// Committed bytes the image shows as zeroes (holes, unwritten
		// extents) must have been sealed as zeroes; a recovery compared
		// them already (sealedContent), so this finds only what no
		// recovery shows.
		for _, f := range e.files {
			if v, ok := e.sealedGaps(f, opts.Committed[revfs.FileID(f.ino)]); !ok {
				e.log.Error("ext4: committed bytes of a protected file read as zeroes, unlike the sealed ones", "file", f.ino, "path", f.path, "violation", v.String())
				e.flushVs = append(e.flushVs, v)
			}
		}
	}
	e.forgetFreeBlocks()
	for _, f := range e.files {
		if c := opts.Committed[revfs.FileID(f.ino)]; c > 0 {
			e.setCommitted(f, c)
			if f.view.size < c && !slices.ContainsFunc(e.flushVs, func(v revfs.Violation) bool {
				return v.Kind == revfs.KindSizeDecreased && v.File == revfs.FileID(f.ino)
			}) {
				// Sealed bytes the file no longer holds: its inode was
				// changed, or the journal transactions that grew it were
				// erased, while the device did not watch (a forged
				// journal it refused to replay, or the image edited
				// offline). Raised at the first flush.
				e.log.Error("ext4: a protected file is shorter than what is sealed", "file", f.ino, "path", f.path, "size", f.view.size, "sealed", c)
				e.flushVs = append(e.flushVs, revfs.Violation{Kind: revfs.KindSizeDecreased, File: revfs.FileID(f.ino),
					Detail: fmt.Sprintf("at open: size %d, below the %d bytes sealed", f.view.size, c)})
			}
		}
		f.dataJournalled = e.modeData || f.view.inode.Flags&layout.InodeFlagJournalData != 0
		// With a journal, the size found at Open was committed (home
		// inodes are written only after their transaction commits, and
		// the data before it in ordered and journal mode).
		f.journalled = f.journalled || e.jnl != nil
		e.updateCoherent(f)
	}
	e.reindex()
	return e, nil
}

// forgetFreeBlocks removes from the written set the blocks the newest
// bitmaps show free, except those a protected file maps. A bitmap that
// frees a block can be in the image while the set still lists the block:
// after a power cut (the set is durable as of the FLUSH before), or a kill
// between the bitmap's write and its removal from the set. A later owner
// would then count the block as written before writing it. A free block's
// past carries nothing worth keeping; a protected file's blocks are exempt
// because without a journal the bitmap that allocates them may land long
// after their data (e2fsck repairs that bitmap after a crash).
func (e *Engine) forgetFreeBlocks() {
	var keep []lrange // physical ranges mapped by protected files, sorted
	for _, f := range e.files {
		for _, m := range f.view.maps {
			keep = append(keep, lrange{m.Physical, m.Physical + m.Len})
		}
	}
	slices.SortFunc(keep, func(a, b lrange) int { return cmp.Compare(a.lo, b.lo) })
	forget := func(lo, hi uint64) {
		i := sort.Search(len(keep), func(i int) bool { return keep[i].hi > lo })
		for ; lo < hi && i < len(keep) && keep[i].lo < hi; i++ {
			if keep[i].lo > lo {
				e.written.Remove(lo, keep[i].lo-lo)
			}
			lo = max(lo, keep[i].hi)
		}
		if lo < hi {
			e.written.Remove(lo, hi-lo)
		}
	}
	for bb, bm := range e.bitmaps {
		base := uint64(e.sb.FirstDataBlock) + e.bitmapG[bb]*uint64(e.sb.BlocksPerGroup)
		if base >= e.blocks {
			continue
		}
		limit := min(uint64(e.sb.BlocksPerGroup), e.blocks-base, uint64(len(bm))*8)
		bitRuns(limit, func(w uint64) uint64 { return ^word64(bm, w) }, func(lo, hi uint64) {
			forget(base+lo, base+hi)
		})
	}
}

// watchPath tracks every directory on f's path, from the root, with the
// entry name the path takes in it and the inode that entry names (checked
// against f's ID): a rename of the file or of a directory above it, or
// another file put at a name, changes what the path leads to. f.parent is
// the last directory.
func (e *Engine) watchPath(im *layout.Image, f *tracked) error {
	comps := strings.Split(strings.Trim(f.path, "/"), "/")
	if f.path == "" || slices.Contains(comps, "") || slices.Contains(comps, ".") || slices.Contains(comps, "..") {
		return fmt.Errorf("path %q is not a clean relative path", f.path)
	}
	if ino, err := im.Lookup(f.path); err != nil {
		return err
	} else if ino != f.ino {
		return fmt.Errorf("path names inode %d, not %d", ino, f.ino)
	}
	dir := uint64(layout.RootIno)
	var last *tracked
	for i, name := range comps {
		child := f.ino
		if i < len(comps)-1 {
			var err error
			if child, err = im.Lookup(strings.Join(comps[:i+1], "/")); err != nil {
				return err
			}
		}
		d := e.byIno[dir]
		if d == nil {
			var err error
			if d, err = e.newTracked(dir, true); err != nil {
				return fmt.Errorf("directory %d: %w", dir, err)
			}
			e.dirs = append(e.dirs, d)
			e.byIno[dir] = d
		} else if !d.isDir {
			return fmt.Errorf("inode %d is both a protected file and a directory on the path", dir)
		}
		if d.names == nil {
			d.names = map[string]binding{}
		}
		last = d
		if b, ok := d.names[name]; ok && b.child != child {
			return fmt.Errorf("entry %q of directory %d names inode %d for one path and %d for another", name, dir, b.child, child)
		} else if !ok {
			d.names[name] = binding{child: child, file: f}
		}
		dir = child
	}
	f.parent = last
	return nil
}

// blocksFor is the number of filesystem blocks the first n bytes of a
// file take (a partial last block counts).
func (e *Engine) blocksFor(n int64) uint64 {
	return uint64((n + e.bs - 1) / e.bs)
}

// readImage reads filesystem block b as the image holds it now.
func (e *Engine) readImage(b uint64) ([]byte, error) {
	return e.readImageInto(make([]byte, e.bs), b)
}

// readImageInto reads filesystem block b from the image into p (one block).
func (e *Engine) readImageInto(p []byte, b uint64) ([]byte, error) {
	if b >= e.blocks {
		return nil, fmt.Errorf("ext4: block %d outside the filesystem", b)
	}
	if _, err := e.img.ReadAt(p, int64(b)*e.bs); err != nil {
		return nil, fmt.Errorf("ext4: read block %d: %w", b, err)
	}
	return p, nil
}

// readNewest reads the newest version of a home block: a committed
// journalled copy not yet written home, or the image. The result may be
// shared with the journal cache: callers must not modify it.
func (e *Engine) readNewest(b uint64) ([]byte, error) {
	if c, ok := e.overlay[b]; ok && e.jnl != nil {
		return e.jnl.readCopy(c)
	}
	return e.readImage(b)
}

// peekNewest is readNewest for a caller that only looks at the bytes
// before its next call into the engine: an image block is read into a
// buffer the engine reuses, instead of a fresh one per call (coherence
// checks the last block of a file at every update).
func (e *Engine) peekNewest(b uint64) ([]byte, error) {
	if c, ok := e.overlay[b]; ok && e.jnl != nil {
		return e.jnl.readCopy(c)
	}
	if int64(len(e.scratch)) != e.bs {
		e.scratch = make([]byte, e.bs)
	}
	return e.readImageInto(e.scratch, b)
}

// Watches reports whether [off, off+length) touches a watched block.
func (e *Engine) Watches(off, length int64) bool {
	if length <= 0 || off < 0 {
		return false
	}
	e.reindexIfDirty()
	first := uint64(off / e.bs)
	last := uint64((off + length - 1) / e.bs)
	i := sort.Search(len(e.watched), func(i int) bool { return e.watched[i].end > first })
	return i < len(e.watched) && e.watched[i].start <= last
}

// CheckWrite returns the violations writing p at off would cause.
func (e *Engine) CheckWrite(off int64, p []byte) []revfs.Violation {
	e.memo = nil
	vs := e.process(off, p, false)
	if m := e.memo; m != nil {
		if len(vs) > 0 {
			e.memo = nil
		} else {
			m.off, m.p, m.mut = off, bytes.Clone(p), e.mut
		}
	}
	return vs
}

// Wrote records that p now lies at off in the image.
func (e *Engine) Wrote(off int64, p []byte) {
	e.wrote = &wroteReq{off: off, p: p, mut: e.mut}
	e.mut++
	e.process(off, p, true)
	e.wrote, e.memo = nil, nil
}

// takeMemo returns CheckWrite's evaluation of the commit blocks of w when
// w is the request CheckWrite saw (same offset and bytes: the device core
// calls Wrote with it right after writing it) and nothing changed the
// model in between; nil otherwise. The memo is used once.
func (e *Engine) takeMemo(w *hostWrite) *commitMemo {
	m, req := e.memo, e.wrote
	e.memo = nil
	if m == nil || req == nil || m.mut != req.mut || m.off != req.off || w.off != req.off || !bytes.Equal(m.p, req.p) {
		return nil
	}
	return m
}

// wroteReq is the request Wrote is recording, for takeMemo.
type wroteReq struct {
	off int64
	p   []byte
	mut uint64
}

// Flushed marks a host FLUSH: every write before it has landed, so any
// transaction whose commit block arrived before its other blocks is now
// complete and is applied; then coherence is refreshed.
func (e *Engine) Flushed() {
	e.mut++
	if e.jnl != nil {
		// Before the epoch moves: what a journal superblock of this
		// epoch passed must have been written home by now.
		e.flushVs = append(e.flushVs, e.jnl.owedAtFlush()...)
	} else {
		e.flushVs = append(e.flushVs, e.unlinkedAtFlush()...)
	}
	e.epoch++
	if e.jnl != nil {
		e.reindexIfDirty()
		e.jnl.catchUp(map[*tracked]bool{})
		e.jnl.markEpoch()
		e.reindexIfDirty()
	}
	for _, f := range e.files {
		e.updateCoherent(f)
	}
}

var _ revfs.FlushJudge = (*Engine)(nil)

// FlushViolations returns, once, what the last Flushed found (see
// journal.judgeIncomplete).
func (e *Engine) FlushViolations() []revfs.Violation {
	vs := e.flushVs
	e.flushVs = nil
	if len(vs) > 0 {
		// Replaced, not added to: under a response that never calls
		// DiscardAtFlush (honeypot) the list stays one flush long.
		e.undoNext, e.flushUndo = e.flushUndo, nil
	}
	return vs
}

// DiscardAtFlush zeroes, through write, the commit block of the first
// transaction judgeIncomplete raised: a replay then ends the log there, as
// it ended before the forged transaction was written. That transaction
// started where the kernel's next one will (the engine's expected log
// position), so no transaction of the kernel's lies beyond it; the kernel
// overwrites those positions with its next transaction.
func (e *Engine) DiscardAtFlush(write func(b []byte, off int64) error) error {
	undo := e.undoNext
	e.undoNext = nil
	if e.jnl == nil {
		return nil
	}
	zero := make([]byte, e.bs)
	for _, jb := range undo {
		pb, ok := e.jnl.physOf(jb)
		if !ok {
			continue
		}
		e.jnl.cacheDrop(jb) // read from the image from now on
		if err := write(zero, int64(pb)*e.bs); err != nil {
			return err
		}
	}
	return nil
}

// Files returns the state of every protected file, ordered by ID.
func (e *Engine) Files() []revfs.FileState {
	out := make([]revfs.FileState, 0, len(e.files))
	for _, f := range e.files {
		out = append(out, revfs.FileState{
			ID: revfs.FileID(f.ino), Size: f.view.size, Coherent: f.coherent,
			Journalled: f.journalled, DataJournalled: f.dataJournalled, LastTouch: f.lastTouch,
			UnknownMap: len(e.unknownMap(f, 1)) > 0,
		})
	}
	return out
}

// SetCommitted records that the first n bytes of the file are sealed.
func (e *Engine) SetCommitted(id revfs.FileID, n int64) {
	e.mut++
	f := e.file(id)
	if f == nil || n <= f.committed {
		return
	}
	e.setCommitted(f, n)
	e.updateCoherent(f)
}

func (e *Engine) file(id revfs.FileID) *tracked {
	t := e.byIno[uint64(id)]
	if t == nil || t.isDir {
		return nil
	}
	return t
}

// ErrNotCoherent is returned by ReadFile for bytes beyond the coherent prefix.
var ErrNotCoherent = errors.New("ext4: range is not coherent")

// ReadFile reads [off, off+len(p)) of a protected file from the newest
// coherent version of each block.
func (e *Engine) ReadFile(id revfs.FileID, p []byte, off int64) error {
	f := e.file(id)
	if f == nil {
		return fmt.Errorf("ext4: file %d is not protected", id)
	}
	if off < 0 || off+int64(len(p)) > f.coherent {
		return fmt.Errorf("%w: [%d, +%d) with %d coherent bytes of file %d", ErrNotCoherent, off, len(p), f.coherent, id)
	}
	for len(p) > 0 {
		lb := uint64(off / e.bs)
		in := off % e.bs
		m, ok := f.view.lookup(lb)
		if !ok || m.Unwritten {
			z := f.zeroRun(f.view, lb)
			if z == 0 {
				return fmt.Errorf("%w: logical block %d of file %d is not mapped", ErrNotCoherent, lb, id)
			}
			n := min(int64(len(p)), int64(z)*e.bs-in) // a hole or unwritten extent taken as found
			clear(p[:n])
			p, off = p[n:], off+n
			continue
		}
		phys := m.Physical + lb - m.Logical
		if c, ok := e.overlay[phys]; ok && e.jnl != nil {
			n := min(int64(len(p)), e.bs-in)
			blk, err := e.jnl.readCopy(c)
			if err != nil {
				return err
			}
			copy(p[:n], blk[in:in+n])
			p, off = p[n:], off+n
			continue
		}
		// The rest of the extent up to the next block that has a
		// journalled copy lies contiguous in the image: one read straight
		// into p (a pread per block was most of the scheduler's time).
		n := min(int64(len(p)), int64(m.Logical+m.Len-lb)*e.bs-in)
		if len(e.overlay) > 0 {
			for k := uint64(1); int64(k)*e.bs-in < n; k++ {
				if _, ok := e.overlay[phys+k]; ok {
					n = int64(k)*e.bs - in
					break
				}
			}
		}
		if last := phys + uint64((in+n-1)/e.bs); last >= e.blocks {
			return fmt.Errorf("ext4: block %d outside the filesystem", last)
		}
		if _, err := e.img.ReadAt(p[:n], int64(phys)*e.bs+in); err != nil {
			return fmt.Errorf("ext4: read blocks %d-%d: %w", phys, phys+uint64((in+n-1)/e.bs), err)
		}
		p, off = p[n:], off+n
	}
	return nil
}

// systemZone is the filesystem's system zone, the journal's blocks included
// (as the kernel protects the journal inode's). A journal inode that does
// not read leaves its blocks out here; openJournal refuses it anyway.
func systemZone(im *layout.Image) layout.Zone {
	var extra []layout.Span
	if im.SB.FeatureCompat&layout.CompatHasJournal != 0 {
		if in, _, err := im.ReadInode(uint64(im.SB.JournalInum)); err == nil {
			if maps, tree, err := im.FileMap(in); err == nil {
				for _, m := range maps {
					extra = append(extra, layout.Span{Start: m.Physical, End: m.Physical + m.Len})
				}
				for _, b := range tree {
					extra = append(extra, layout.Span{Start: b, End: b + 1})
				}
			}
		}
	}
	return layout.SystemZone(im.SB, im.Groups, extra)
}
