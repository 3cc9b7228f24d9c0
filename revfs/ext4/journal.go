package ext4

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// journal follows the jbd2 log inside the journal inode.
type journal struct {
	e *Engine
	// recoveryChecks counts judgeRecovery's evaluations (tests), and
	// sealedCompared the sealed bytes they compared (sealedContent).
	recoveryChecks int
	sealedCompared int64
	// ino is the journal inode as Open found it: its record and extent
	// tree say where the log lies, which the engine never re-reads (a
	// change to them is a layout change, checkInode).
	ino      *tracked
	maps     []layout.Mapping // journal block -> device block, by journal block
	byPhys   []layout.Mapping // the same, by device block
	sb       *jbd2.Superblock
	expect   bool   // pos/seq known: where the next transaction starts
	pos, seq uint32 // journal block and tid of the next transaction
	// epochExpect and epochSeq are expect and seq as the current flush
	// epoch began (markEpoch): a commit block below epochSeq cannot be
	// one of this epoch's reordered writes.
	epochExpect bool
	epochSeq    uint32
	// wrote holds, indexed by journal block, the event sequence of the
	// newest write of the block since its log position was last consumed
	// (epoch 0: none): a journalled copy is as recent as its own write, not
	// as the commit that made it count. A slice, not a map: every journal
	// block the host writes sets an entry and every applied transaction
	// clears its own; it grows to the highest block written (the journal's
	// length, which open bounds).
	wrote []writeMark
	// applied holds, indexed by journal block, the tid of the applied
	// transaction whose part the block last held (liveApplied); it grows
	// as wrote does.
	applied []appliedMark
	// copyOf holds, indexed by journal block, the home block whose pending
	// copy the block holds, plus one (0: none): the reverse of
	// Engine.overlay. A slice for the reason wrote is one: in data=journal
	// every journalled data block sets an entry and its reuse clears it,
	// and a map churned that way cost about half a microsecond a lookup
	// (bench/e2e/RESULTS.md); it grows as wrote does.
	copyOf []uint64
	// ckpt holds the metadata blocks the protected files depend on
	// (Engine.dependsOn) whose newest version is a copy in an applied
	// transaction, not written home since: the tid of that transaction.
	// The kernel writes each home before the log's start passes the
	// transaction (uncheckpointed). A home write, or a revoke record of
	// the block in a later applied transaction (a block freed:
	// jbd2_journal_forget, which never checkpoints it), removes it.
	// Protected data blocks pending a checkpoint are Engine.overlay.
	ckpt map[uint64]pendingHome
	// owed holds the blocks of ckpt and Engine.overlay a journal
	// superblock passed while their transaction had been applied in the
	// same flush epoch (uncheckpointed): their home write may still come
	// before the next flush, which judges them (owedAtFlush).
	owed map[uint64]pendingHome
	// replay holds digests of the committed copies a recovery may write
	// home, from Open with a dirty log until the next journal superblock
	// write (replay.go); nil otherwise.
	replay map[uint64][][sha256.Size]byte
	// flushSeen holds the last sequence of the transaction runs
	// judgeIncomplete raised, so that each is raised once.
	flushSeen map[uint32]bool
	// cache holds, for journal blocks the host wrote, the bytes it wrote
	// (which are what the image holds): the engine reads a transaction's
	// blocks right after they arrive (scan at the commit block, the copies
	// of metadata and of data=journal data, sealing), and reading them back
	// from the image cost a pread and an allocation per block. Entries are
	// never modified in place (a rewrite replaces the slice), so readJ can
	// hand them out without copying. Bounded by maxJournalCache bytes, a
	// slot per block, taken over by the block a cache's worth further
	// round the log (jcache.go); a block not cached is read from the
	// image. Anything that writes journal blocks other than through
	// Wrote (RepairDiscard) must drop them from the cache.
	cache []cachedBlock // jcache.go; allocated with the first block cached
	// pending is set while a commit block the host wrote has not been
	// applied (its transaction was incomplete or not found from the
	// expected position): catchUp then has work to do at the next flush.
	// Without it, catchUp re-scanned the log at every flush.
	pending    bool
	pendingTid uint32 // the newest such commit's tid
	// pendingAt is the journal block of that commit block, 0 when no
	// commit block was seen since pending was set (Open, a new log):
	// checkPending then has nothing a write could complete.
	pendingAt uint32
	// pendingCommits holds the journal blocks of the commit blocks noted
	// pending since pending was last clear, up to maxPendingCommits
	// (pendingMany: more were noted), so that pendingTxs scans the log
	// only for a write that may complete one of them.
	pendingCommits []uint32
	pendingMany    bool
}

// maxPendingCommits bounds journal.pendingCommits. The kernel has a
// handful of transactions in flight at most (a running one, a committing
// one, and those the host reordered within a flush); past this many,
// pendingTxs scans for every write that lies in the log written without a
// gap from the expected position on.
const maxPendingCommits = 64

// maxJournalCache bounds the bytes journal.cache holds. A jbd2 transaction
// is at most a quarter of the journal, but the kernel commits every few
// milliseconds under fsync load: 8 MiB holds many transactions of the
// bench's 16 writers (about 1 MiB each in data=journal) and keeps the
// device's memory small whatever the journal size.
const maxJournalCache = 8 << 20

// journalCopy is a committed journalled copy of a home block that has not
// been written home yet.
type journalCopy struct {
	jblock  uint32
	escaped bool
	seq     uint32
	epoch   uint64 // the flush epoch the engine applied it in
}

// maxJournalBlocks bounds the journal the engine follows, and with it what
// a scan of the log keeps: 16 bytes per logged copy, at most 16 more for
// the revoke records a copy makes matter (jbd2.Transaction.Revoked keeps
// no record that cancels nothing, so revoke blocks cost nothing per
// record), and a jbd2.Transaction (120 bytes) per transaction, of which a
// forged log can make one of every block (a lone commit block). So a whole
// log of this many can cost 480 MiB, one of mke2fs's largest (2^18 blocks,
// unless told otherwise with -J size=, which allows 10,240,000) 30 MiB.
const maxJournalBlocks = 1 << 22

func (e *Engine) openJournal(committed map[revfs.FileID]int64) error {
	if e.sb.FeatureCompat&layout.CompatHasJournal == 0 {
		return nil
	}
	jt, err := e.newTracked(uint64(e.sb.JournalInum), false)
	if err != nil {
		return fmt.Errorf("ext4: journal inode %d: %w", e.sb.JournalInum, err)
	}
	in := jt.view.inode
	if in.Flags&layout.InodeFlagExtents == 0 {
		return fmt.Errorf("ext4: %w: journal inode %d maps its blocks without extents", layout.ErrUnsupported, e.sb.JournalInum)
	}
	if len(jt.view.unknown) > 0 || len(jt.view.maps) == 0 {
		return fmt.Errorf("ext4: journal inode %d has no readable block map", e.sb.JournalInum)
	}
	j := &journal{e: e, ino: jt, maps: jt.view.maps}
	j.byPhys = append([]layout.Mapping(nil), j.maps...)
	sort.Slice(j.byPhys, func(a, b int) bool { return j.byPhys[a].Physical < j.byPhys[b].Physical })
	// Two journal blocks sharing a device block would let a small image
	// describe a log of any length; mke2fs never makes one.
	for i := 1; i < len(j.byPhys); i++ {
		if p := j.byPhys[i-1]; p.Physical+p.Len > j.byPhys[i].Physical {
			return fmt.Errorf("ext4: %w: journal inode %d maps device block %d twice", layout.ErrCorrupt, e.sb.JournalInum, j.byPhys[i].Physical)
		}
	}
	raw, err := j.readJ(0, nil)
	if err != nil {
		return err
	}
	if j.sb, err = jbd2.ParseSuperblock(raw); err != nil {
		return fmt.Errorf("ext4: journal superblock: %w", err)
	}
	if j.sb.BlockSize() != int(e.bs) {
		return fmt.Errorf("ext4: journal block size %d differs from the filesystem's %d", j.sb.BlockSize(), e.bs)
	}
	if j.sb.MaxLen() > maxJournalBlocks {
		return fmt.Errorf("ext4: %w: a journal of %d blocks (limit %d): a scan of the log keeps a record per logged block", layout.ErrUnsupported, j.sb.MaxLen(), maxJournalBlocks)
	}
	if uint64(j.sb.MaxLen()) > j.length() {
		return fmt.Errorf("ext4: journal superblock claims %d blocks, the inode maps %d", j.sb.MaxLen(), j.length())
	}
	e.jnl = j
	e.dirty = true
	if j.sb.Clean() {
		return nil
	}
	// Committed transactions not yet checkpointed: apply them logically,
	// as the kernel's recovery would, without writing the image.
	e.reindex()
	txs, next, nseq, err := jbd2.Scan(j.sb, j.sb.Start(), j.sb.Sequence(), func(jb uint32) ([]byte, error) { return j.readJ(jb, nil) }, int(j.sb.MaxLen()))
	if err != nil && len(txs) == 0 {
		e.log.Warn("ext4: journal scan at open", "err", err)
	}
	if len(txs) > 0 && e.sb.FeatureIncompat&layout.IncompatRecover == 0 {
		// The kernel recovers only a log the superblock says needs it
		// (ext4_load_journal wipes any other), and the engine follows
		// the kernel: the home blocks are what the host will read. The
		// kernel clears needs_recovery only once the log is empty;
		// e2fsck and tune2fs, which recover through the page cache, may
		// write the superblock before the journal's, both after the
		// replayed blocks, so a device stopped between the two sees
		// this with nothing lost. A host that clears it over copies
		// never written home is refused at the write (wipedAtMount);
		// what a wipe loses of the sealed bytes, Open raises below as
		// for any image changed while the device did not watch.
		e.log.Warn("ext4: the journal holds committed transactions but the superblock does not ask for recovery: the host's next mount discards them; not applied",
			"first", txs[0].Sequence, "last", txs[len(txs)-1].Sequence)
	} else if len(txs) > 0 {
		read := func(jb uint32) ([]byte, error) { return j.readJ(jb, nil) }
		began := time.Now()
		vs, undo := j.judgeRecovery(txs, read, committed)
		if j.sealedCompared > 0 {
			e.log.Info("ext4: journal recovery compared with the sealed bytes", "transactions", len(txs),
				"bytes", j.sealedCompared, "took", time.Since(began).Round(time.Millisecond))
		}
		if len(vs) > 0 {
			// Not the kernel's: a transaction the device let through
			// never shrinks or remaps what it sealed. Rewritten in
			// the log while the device ran (a commit block of an
			// applied transaction is not judged again), it would
			// otherwise be applied here unseen and its home writes
			// waved through as a replay. Left out of the model, they
			// are judged as any write; the violations are raised at
			// the first flush (FlushViolations), where discard cuts
			// the log before the first harmful transaction.
			e.log.Error("ext4: the journal's committed transactions would change what is sealed; not applied",
				"first", txs[0].Sequence, "last", txs[len(txs)-1].Sequence, "violation", vs[0].String())
			e.flushVs = append(e.flushVs, vs...)
			e.flushUndo = append(e.flushUndo, undo)
		} else {
			j.rememberReplay(txs)
			j.apply(txs, read, nil, nil, map[*tracked]bool{})
		}
	}
	j.expect, j.pos, j.seq = true, next, nseq
	// Let the first flush look for transactions beyond the recovered ones.
	j.pending, j.pendingTid = true, nseq
	return nil
}

// judgeRecovery judges the transactions a recovery would replay at Open
// against what the device sealed (committed, the store's watermarks), before
// any of them is applied: each protected file keeps, for the judgment, the
// committed range its home blocks already show (min of the watermark and
// its size before the replay), so that the replay may not shrink it below
// the watermark nor remap that range; and where the replay would show
// other committed bytes than the home blocks do (a map only the journal
// holds, a data=journal copy), those bytes must be the sealed ones
// (sealedContent). Data copies are not judged as writes here: a crash in
// the middle of a checkpoint legitimately leaves home data older than the
// journal's. It returns the violations and the commit block of the first
// transaction that raises one.
func (j *journal) judgeRecovery(txs []jbd2.Transaction, read func(uint32) ([]byte, error), committed map[revfs.FileID]int64) ([]revfs.Violation, uint32) {
	e := j.e
	for _, f := range e.files {
		if c := committed[revfs.FileID(f.ino)]; c > 0 {
			// Frozen: the part of the committed range the home map
			// shows mapped and written. A replay may legitimately map
			// the rest (a hole the journal fills) or convert it (an
			// unwritten extent written by an I/O whose conversion
			// committed but was not checkpointed): compareSealed judges
			// those blocks by their content.
			e.setCommitted(f, min(c, f.view.size, e.writtenMapped(f.view, c)))
		}
	}
	defer func() {
		// Open sets the watermarks for good once the log is dealt with.
		for _, f := range e.files {
			f.committed, f.sealed = 0, nil
		}
	}()
	// check judges a recovery of txs; when its structure raises nothing,
	// it also compares the committed bytes it would show with the sealed
	// ones (sealedContent).
	check := func(txs []jbd2.Transaction) []revfs.Violation {
		j.recoveryChecks++
		chg := j.change(txs, read, noBlame)
		vs, res := e.evalChange(chg)
		for _, f := range e.files {
			nv, c := res.views[f], committed[revfs.FileID(f.ino)]
			if nv != nil && nv.inode != nil && nv.size < c && nv.size >= f.committed {
				vs = append(vs, revfs.Violation{Kind: revfs.KindSizeDecreased, File: revfs.FileID(f.ino),
					Detail: fmt.Sprintf("journal recovery would leave size %d, below the %d bytes sealed", nv.size, c)})
			}
		}
		if len(vs) == 0 {
			vs = j.sealedContent(chg, res, committed)
		}
		return vs
	}
	vs := check(txs)
	if len(vs) == 0 {
		return nil, 0
	}
	// The transaction to cut the log before: one whose prefix raises a
	// violation while the prefix before it does not, found by bisection
	// (the replay of no transaction raises none). A search from the
	// start would judge prefix after prefix, each longer: a forged log of
	// a million lone commit blocks before a harmful one would keep Open
	// busy for days.
	lo, hi := 0, len(txs)-1 // txs[:hi+1] raises one; txs[:lo] none
	for lo < hi {
		if mid := (lo + hi) / 2; len(check(txs[:mid+1])) > 0 {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return vs, txs[lo].End
}

// writtenMapped returns how many of the first n bytes of view v its map
// shows mapped and written, from the start without a gap.
func (e *Engine) writtenMapped(v *view, n int64) int64 {
	nb := e.blocksFor(n)
	lb := uint64(0)
	for _, m := range normalise(v.maps, nb) {
		if m.Logical != lb || m.Unwritten || v.unknownIn(m.Logical, m.Logical+m.Len) {
			break
		}
		lb = m.Logical + m.Len
	}
	return min(n, int64(lb)*e.bs)
}

// length is the number of journal blocks the inode maps.
func (j *journal) length() uint64 {
	last := j.maps[len(j.maps)-1]
	return last.Logical + last.Len
}

// physOf maps a journal block to its device block.
func (j *journal) physOf(jb uint32) (uint64, bool) {
	i := sort.Search(len(j.maps), func(i int) bool { return j.maps[i].Logical+j.maps[i].Len > uint64(jb) })
	if i < len(j.maps) && j.maps[i].Logical <= uint64(jb) && !j.maps[i].Unwritten {
		return j.maps[i].Physical + uint64(jb) - j.maps[i].Logical, true
	}
	return 0, false
}

// jblockOf maps a device block to its journal block.
func (j *journal) jblockOf(pb uint64) (uint32, bool) {
	i := sort.Search(len(j.byPhys), func(i int) bool { return j.byPhys[i].Physical+j.byPhys[i].Len > pb })
	if i < len(j.byPhys) && j.byPhys[i].Physical <= pb {
		return uint32(j.byPhys[i].Logical + pb - j.byPhys[i].Physical), true
	}
	return 0, false
}

// readJ reads journal block jb as it is once w (if any) lands. The result
// may be shared (the cache): callers must not modify it.
func (j *journal) readJ(jb uint32, w *hostWrite) ([]byte, error) {
	pb, ok := j.physOf(jb)
	if !ok {
		return nil, fmt.Errorf("ext4: journal block %d is not mapped", jb)
	}
	if w != nil && w.has(pb) {
		return bytes.Clone(w.block(pb)), nil
	}
	if c, ok := j.cached(jb); ok {
		return c.b, nil
	}
	return j.e.readImage(pb)
}

// sumJ returns the jbd2.BlockSum of journal block jb as readJ(jb, w) would
// return it, when the cache has it (see jbd2.ScanWithSums).
func (j *journal) sumJ(jb uint32, w *hostWrite) (uint32, bool) {
	pb, ok := j.physOf(jb)
	if !ok || (w != nil && w.has(pb)) {
		return 0, false
	}
	c, ok := j.cached(jb)
	if !ok || !c.summed || len(c.b) != j.sb.BlockSize() {
		return 0, false
	}
	return c.sum, true
}

// readCopy reads a committed journalled copy, unescaped. The result may be
// shared: callers must not modify it.
func (j *journal) readCopy(c journalCopy) ([]byte, error) {
	b, err := j.readJ(c.jblock, nil)
	if err != nil {
		return nil, err
	}
	if c.escaped {
		b = bytes.Clone(b)
		jbd2.Unescape(b)
	}
	return b, nil
}

// wroteAt returns the mark of jb's newest write since its log position
// was last consumed, if any.
func (j *journal) wroteAt(jb uint32) (writeMark, bool) {
	if int64(jb) >= int64(len(j.wrote)) {
		return writeMark{}, false
	}
	m := j.wrote[jb]
	return m, m.epoch != 0
}

// wroteEpoch is the flush epoch of jb's newest write (0: none).
func (j *journal) wroteEpoch(jb uint32) uint64 {
	m, _ := j.wroteAt(jb)
	return m.epoch
}

// setWrote records a write of jb (m.epoch is at least 1: Engine.epoch
// starts there).
func (j *journal) setWrote(jb uint32, m writeMark) {
	j.wrote = growFor(j.wrote, jb)
	j.wrote[jb] = m
}

// setApplied records that log block jb holds part of applied transaction
// tid (see liveApplied).
func (j *journal) setApplied(jb uint32, tid uint32) {
	j.applied = growFor(j.applied, jb)
	j.applied[jb] = appliedMark{tid: tid, set: true}
}

// copyAt returns the home block whose pending copy jb holds, if any.
func (j *journal) copyAt(jb uint32) (uint64, bool) {
	if int64(jb) >= int64(len(j.copyOf)) || j.copyOf[jb] == 0 {
		return 0, false
	}
	return j.copyOf[jb] - 1, true
}

// setCopy records that jb holds the pending copy of home.
func (j *journal) setCopy(jb uint32, home uint64) {
	j.copyOf = growFor(j.copyOf, jb)
	j.copyOf[jb] = home + 1
}

// growFor returns s, grown with zero values to index jb if it is shorter:
// the per-journal-block slices grow to the highest block used.
func growFor[T any](s []T, jb uint32) []T {
	if n := int64(jb) + 1; n > int64(len(s)) {
		s = append(s, make([]T, n-int64(len(s)))...)
	}
	return s
}

// clearWrote forgets jb's write: its log position was consumed.
func (j *journal) clearWrote(jb uint32) {
	if int64(jb) < int64(len(j.wrote)) {
		j.wrote[jb] = writeMark{}
	}
}

// needed reports whether a cached journal block may still be read: it was
// written since its log position was last consumed (an open or
// not-yet-applied transaction), or it holds a committed copy not yet
// written home.
func (j *journal) needed(jb uint32) bool {
	if _, ok := j.wroteAt(jb); ok {
		return true
	}
	home, ok := j.copyAt(jb)
	if !ok {
		return false
	}
	c, ok := j.e.overlay[home]
	return ok && c.jblock == jb
}

// notePending records that the commit block of tid seq, at journal block
// jb, arrived without its transaction being applied.
func (j *journal) notePending(seq, jb uint32) {
	if !j.pending || !tidBefore(seq, j.pendingTid) {
		j.pendingTid, j.pendingAt = seq, jb
	}
	j.pending = true
	switch {
	case slices.Contains(j.pendingCommits, jb):
	case len(j.pendingCommits) < maxPendingCommits:
		j.pendingCommits = append(j.pendingCommits, jb)
	default:
		j.pendingMany = true
	}
}

// settle clears pending once the engine has applied every transaction up
// to the newest commit block noted.
func (j *journal) settle() {
	if j.pending && j.expect && tidBefore(j.pendingTid, j.seq) {
		j.pending, j.pendingAt = false, 0
		j.pendingCommits, j.pendingMany = j.pendingCommits[:0], false
	}
}

// process handles the journal blocks of one host write: the journal
// superblock, and commit blocks, which complete transactions.
func (j *journal) process(w *hostWrite, apply bool, touched map[*tracked]bool) []revfs.Violation {
	e := j.e
	i := sort.Search(len(j.byPhys), func(i int) bool { return j.byPhys[i].Physical+j.byPhys[i].Len > w.first })
	if i == len(j.byPhys) || j.byPhys[i].Physical > w.last {
		return nil
	}
	var vs []revfs.Violation
	type commit struct {
		pb  uint64
		jb  uint32
		seq uint32
	}
	var commits []commit
	rewrite := -1 // index in vs of the last rewrite of a live applied block
	copies := groupCopier{w: w}
	for pb := max(w.first, j.byPhys[i].Physical); pb <= w.last; pb++ {
		jb, ok := j.jblockOf(pb)
		if !ok {
			continue
		}
		nb := w.block(pb)
		if apply {
			j.setWrote(jb, writeMark{e.seq, e.epoch})
			j.reused(jb, touched)
			j.cachePut(jb, copies.block(pb)) // the bytes the host wrote (journal.cache)
		}
		if jb == 0 {
			vs = append(vs, j.superblock(nb, pb, w, apply)...)
			continue
		}
		if !apply && j.liveApplied(jb) {
			if old, err := j.readJ(jb, nil); err == nil && !bytes.Equal(old, nb) {
				off, n := w.blame(pb, 0, int(e.bs))
				v := revfs.Violation{Kind: revfs.KindLayoutChanged, Off: off, Len: n,
					Detail: fmt.Sprintf("journal block %d rewritten: it belongs to a transaction the engine applied, still live in the log (from block %d, transaction %d)", jb, j.sb.Start(), j.sb.Sequence())}
				if k := len(vs) - 1; k >= 0 && k == rewrite && vs[k].Off+vs[k].Len == v.Off {
					vs[k].Len += v.Len // one violation for a run of rewritten blocks
				} else {
					rewrite = len(vs)
					vs = append(vs, v)
				}
			}
		}
		if h, ok := jbd2.ParseHeader(nb); ok && h.BlockType == jbd2.BlockTypeCommit {
			if !apply && j.epochExpect && tidBefore(h.Sequence, j.epochSeq) {
				// A commit block of a transaction before the one the log
				// was at when this flush epoch began: only ever the same
				// bytes written again (a page of a 1 KiB-block log
				// written back whole). New bytes are a commit the kernel
				// did not write: tids only grow, and one below the log's
				// would be skipped as applied. (Inside the epoch the
				// engine may have gone past a transaction whose commit
				// block it has not seen yet: writes come in any order.)
				if old, err := j.readJ(jb, nil); err == nil && !bytes.Equal(old, nb) {
					off, n := w.blame(pb, 0, int(e.bs))
					vs = append(vs, revfs.Violation{Kind: revfs.KindLayoutChanged, Off: off, Len: n,
						Detail: fmt.Sprintf("journal block %d: a new commit block of transaction %d, before the log's next transaction %d: tids only grow", jb, h.Sequence, j.epochSeq)})
				}
			}
			commits = append(commits, commit{pb, jb, h.Sequence})
		}
	}
	if apply {
		now := e.now()
		for _, f := range e.files {
			if f.dataJournalled {
				f.lastTouch = now
			}
		}
	}
	read := func(jb uint32) ([]byte, error) { return j.readJ(jb, w) }
	var memo *commitMemo
	if apply {
		memo = j.e.takeMemo(w)
	} else if len(commits) > 0 && j.memoable(w) {
		memo = &commitMemo{}
		if !e.written.Contains(w.first, 1) {
			// Wrote adds the block to the written set first; the
			// evaluation must not have asked for it (see memoable).
			e.missOn, e.missBlock, e.missHit = true, w.first, false
			defer func() { e.missOn = false }()
		}
	}
	// covered: a commit block of w completes transactions, which were
	// evaluated from the expected log position up to it (find), so
	// checkPending need not judge them again.
	covered, coveredSeq := false, uint32(0)
	for k, c := range commits {
		if j.expect && tidBefore(c.seq, j.seq) {
			continue // an old commit block rewritten: already applied
		}
		var ev commitEval
		if apply && memo != nil && k < len(memo.evals) && memo.evals[k].seq == c.seq {
			ev = memo.evals[k]
		} else {
			ev = j.evalCommit(c.seq, c.pb, read, w)
			vs = append(vs, ev.vs...)
			if !apply && len(ev.txs) > 0 {
				vs = append(vs, j.replayViolations(ev.txs, read, ev.blame, ev.chg, vs)...)
			}
		}
		if !apply && memo != nil {
			memo.evals = append(memo.evals, ev)
		}
		if len(ev.txs) == 0 {
			if apply {
				j.notePending(c.seq, c.jb)
			}
			continue
		}
		covered, coveredSeq = true, ev.nseq
		if apply {
			j.apply(ev.txs, read, ev.chg, ev.res, touched)
			j.expect, j.pos, j.seq = true, ev.next, ev.nseq
			j.settle()
		}
	}
	if !apply && j.pending {
		vs = append(vs, j.checkPending(w, read, covered, coveredSeq, vs)...)
	}
	if e.missOn && e.missHit {
		memo = nil
	}
	if !apply && memo != nil && len(vs) == 0 {
		// The engine's Wrote of this request usually follows at once:
		// let it apply what was just evaluated (see Engine.takeMemo).
		j.e.memo = memo
	}
	if !apply && len(vs) > 0 {
		// The device core may now have the log blocks repaired in the
		// image (RepairDiscard), not through Wrote. RepairDiscard drops
		// what it rewrites; violations are rare, so forget everything
		// too rather than depend on every such path doing so.
		j.cacheReset()
	}
	return vs
}

// appliedMark is the applied transaction a log block was part of.
type appliedMark struct {
	tid uint32
	set bool
}

// liveApplied reports whether journal block jb holds part of a transaction
// the engine has applied that the log still holds live: one at or after
// the transaction the journal superblock names as the log's start. jbd2
// never writes such a block: it writes the log at its head, and reuses
// space only after a superblock write (with FUA) has moved the start past
// it. A host that writes there rewrites a transaction the engine has
// judged and applied, which a recovery would replay as it then reads.
func (j *journal) liveApplied(jb uint32) bool {
	sb := j.sb
	if !j.expect || sb.Clean() || int64(jb) >= int64(len(j.applied)) {
		return false
	}
	a := j.applied[jb]
	return a.set && !tidBefore(a.tid, sb.Sequence()) && tidBefore(a.tid, j.seq)
}

// commitEval is what a commit block completes and how that evaluates.
type commitEval struct {
	seq        uint32 // the commit block's tid
	txs        []jbd2.Transaction
	next, nseq uint32
	blame      func(uint64, int, int) (int64, int64)
	chg        *change
	res        *result
	vs         []revfs.Violation
}

// evalCommit finds the transactions the commit block of tid seq at device
// block pb completes and evaluates them as one change.
func (j *journal) evalCommit(seq uint32, pb uint64, read func(uint32) ([]byte, error), w *hostWrite) commitEval {
	ev := commitEval{seq: seq}
	ev.txs, ev.next, ev.nseq = j.find(seq, read, func(jb uint32) (uint32, bool) { return j.sumJ(jb, w) }, w)
	if len(ev.txs) == 0 {
		return ev
	}
	bs := int(j.e.bs)
	ev.blame = func(uint64, int, int) (int64, int64) { return w.blame(pb, 0, bs) }
	ev.chg = j.change(ev.txs, read, ev.blame)
	ev.vs, ev.res = j.judge(ev.chg, ev.blame)
	return ev
}

// commitMemo carries CheckWrite's evaluation of a commit block write to the
// Wrote of the same request, which would otherwise scan and evaluate the
// same transactions again (the most expensive thing the engine does).
type commitMemo struct {
	off   int64
	p     []byte // the request's buffer: same slice, same length
	mut   uint64 // Engine.mut when it was made
	evals []commitEval
}

// memoable reports whether evaluating the commit blocks of w gives the same
// answer before the write lands (CheckWrite) as after (Wrote): w is one
// journal block holding no committed copy and no role of its own. Landing
// it then changes nothing the evaluation reads — the transactions' other
// blocks, their write marks and the held metadata are as they were —
// except the written set, which gains the block: the caller makes sure the
// evaluation never asked whether it was written (Engine.missOn).
func (j *journal) memoable(w *hostWrite) bool {
	e := j.e
	if w.first != w.last || w.end-w.off != e.bs {
		return false
	}
	jb, ok := j.jblockOf(w.first)
	if !ok || jb == 0 {
		return false
	}
	if home, ok := j.copyAt(jb); ok {
		if c, live := e.overlay[home]; live && c.jblock == jb {
			return false
		}
	}
	_, ok = e.roles[w.first]
	return !ok && len(e.dataAt(w.first, w.first)) == 0
}

// tidBefore compares jbd2 transaction ids with wrap-around (tid_gt).
func tidBefore(a, b uint32) bool { return int32(a-b) < 0 }

// find returns the committed transactions the commit block of tid seq
// completes, scanning from where the engine expects the next transaction;
// when that does not find it (the engine lost track: a recovery or a
// remount moved the head), from the log's first block, the head the
// journal superblock records, and its tail.
func (j *journal) find(seq uint32, read func(uint32) ([]byte, error), sums func(uint32) (uint32, bool), w *hostWrite) ([]jbd2.Transaction, uint32, uint32) {
	if j.expect && tidBefore(seq, j.seq) {
		return nil, 0, 0 // an old commit block rewritten: already applied
	}
	budget := int(j.sb.MaxLen())
	type cand struct{ pos, seq uint32 }
	var cands []cand
	// Where the log may go on: after the last applied transaction, or
	// from its first block or s_head (a new log after a mount) with the
	// tid it was at. The tid of a new log is the engine's next one, or
	// without one the commit's own (the log's start comes with the
	// superblock, maybe after the commit in the same flush epoch). A
	// transaction found elsewhere with a tid ahead of the engine's would
	// make it skip every later commit of the kernel as old.
	restart := seq
	if j.expect {
		cands = append(cands, cand{j.pos, j.seq})
		restart = j.seq
	}
	cands = append(cands, cand{j.sb.First(), restart})
	if h := j.sb.Head(); h != 0 {
		cands = append(cands, cand{h, restart})
	}
	if !j.sb.Clean() {
		cands = append(cands, cand{j.sb.Start(), j.sb.Sequence()})
	}
	for _, c := range cands {
		if c.pos < j.sb.First() || c.pos >= j.sb.LogEnd() {
			continue
		}
		txs, _, _, err := jbd2.ScanWithSums(j.sb, c.pos, c.seq, read, sums, j.held(), budget)
		if err != nil {
			j.e.log.Debug("ext4: journal scan", "pos", c.pos, "seq", c.seq, "err", err)
		}
		for i, tx := range txs {
			if tx.Sequence != seq {
				continue
			}
			// Drop transactions the engine has already applied.
			k := 0
			for k < len(txs) && j.expect && tidBefore(txs[k].Sequence, j.seq) {
				k++
			}
			for _, t := range txs[k : i+1] {
				if !j.complete(t, w) {
					j.e.log.Debug("ext4: commit block before the rest of its transaction; taken at the next flush", "tid", seq)
					return nil, 0, 0
				}
			}
			return txs[k : i+1], j.after(txs[i].End), txs[i].Sequence + 1
		}
	}
	// Usually the rest of the transaction has not landed yet (reordered
	// within a flush, or a transaction wrapping round the log's end);
	// catchUp takes it at the next flush if it is complete by then.
	j.e.log.Info("ext4: commit block of a transaction not found from the expected log position", "tid", seq, "pos", j.pos, "expect", j.expect)
	return nil, 0, 0
}

// usesAfter returns a tracked inode whose extent tree or directory uses
// block b after the change res describes (its new view, or its current one
// when the change leaves it), or nil.
func (j *journal) usesAfter(b uint64, res *result) *tracked {
	for _, ro := range j.e.roles[b] {
		if (ro.kind != roleTree && ro.kind != roleDir) || ro.owner == nil {
			continue
		}
		v := ro.owner.view
		if res != nil && res.views[ro.owner] != nil {
			v = res.views[ro.owner]
		}
		if v != nil && (slices.Contains(v.tree, b) || slices.Contains(v.dirBlocks, b)) {
			return ro.owner
		}
	}
	return nil
}

// markEpoch records where the log is as a flush epoch begins.
func (j *journal) markEpoch() { j.epochExpect, j.epochSeq = j.expect, j.seq }

// held reports, for jbd2.ScanWithSums, the home blocks whose committed
// copy the engine holds (overlay) or follows until its checkpoint (ckpt)
// from transactions applied before: a
// scan keeps their revoke records although it does not log them, for
// apply to drop the copies they cancel. nil when there are none.
func (j *journal) held() func(uint64) bool {
	if len(j.e.overlay) == 0 && len(j.ckpt) == 0 {
		return nil
	}
	return func(h uint64) bool {
		_, ok := j.e.overlay[h]
		if !ok {
			_, ok = j.ckpt[h]
		}
		return ok
	}
}

// change presents transactions as one set of home-block versions (the
// last copy of each home block wins, as in replay).
func (j *journal) change(txs []jbd2.Transaction, read func(uint32) ([]byte, error), blame func(uint64, int, int) (int64, int64)) *change {
	return j.versions(txs, read, blame, false)
}

// maxVersionsHint caps the sizes versions allocates before it has seen
// which home blocks a run of transactions really carries.
const maxVersionsHint = 1 << 14

// versions is change; with replay, copies older than a home write are kept
// too: a replay writes them regardless (see replayViolations).
func (j *journal) versions(txs []jbd2.Transaction, read func(uint32) ([]byte, error), blame func(uint64, int, int) (int64, int64), replay bool) *change {
	latest, homes := replayCopies(txs)
	// A home write that landed after the copy was logged is newer than
	// the copy: the copy does not count (the host reordered, or the
	// kernel checkpointed a newer version).
	for h, at := range latest {
		if w, ok := j.e.homeWrote[h]; ok && !replay && w >= j.wroteEpoch(at.lb.JBlock) {
			delete(latest, h)
		}
	}
	cache := map[uint64][]byte{}
	chg := &change{journal: true, blame: blame, carries: make(map[uint64]bool, len(latest)), homes: make([]uint64, 0, len(latest))}
	for _, h := range homes {
		if _, ok := latest[h]; ok {
			chg.homes = append(chg.homes, h)
			chg.carries[h] = true
		}
	}
	chg.tid = func(b uint64) uint32 { return txs[latest[b].tx].Sequence }
	for _, tx := range txs {
		chg.revoked = append(chg.revoked, tx.Revoked...)
	}
	chg.peek = func(b uint64) ([]byte, bool) {
		at, ok := latest[b]
		if !ok {
			return nil, false
		}
		lb := at.lb
		if d, ok := cache[b]; ok {
			return d, true
		}
		d, err := read(lb.JBlock)
		if err != nil || int64(len(d)) != j.e.bs {
			return nil, false
		}
		if lb.Escaped {
			d = bytes.Clone(d) // read's result may be shared
			jbd2.Unescape(d)
		}
		return d, true
	}
	chg.get = func(b uint64) ([]byte, bool) {
		d, ok := chg.peek(b)
		if ok {
			cache[b] = d
		}
		return d, ok
	}
	return chg
}

// replayCopies returns the copy of each home block a replay of txs writes
// last (a revoke record cancels the copies of its own transaction and
// earlier ones: jbd2_journal_test_revoke), and the home blocks in the
// order their first such copy appears.
func replayCopies(txs []jbd2.Transaction) (map[uint64]loggedAt, []uint64) {
	// Sized up front: a data=journal transaction logs hundreds of blocks,
	// and growing these maps block by block was a tenth of a commit's
	// evaluation (bench/e2e profiles). The hint is capped: a forged log may
	// tag one home block millions of times.
	n := 0
	for _, tx := range txs {
		n += len(tx.Blocks)
	}
	n = min(n, maxVersionsHint)
	latest := make(map[uint64]loggedAt, n)
	homes := make([]uint64, 0, n)
	rv := jbd2.Revocations(txs)
	for i, tx := range txs {
		for _, lb := range tx.Blocks {
			if rv.Cancels(lb.Home, i) {
				continue // a replay skips it
			}
			if _, ok := latest[lb.Home]; !ok {
				homes = append(homes, lb.Home)
			}
			latest[lb.Home] = loggedAt{lb, i}
		}
	}
	return latest, homes
}

// judge evaluates a change made of journalled versions: the metadata it
// carries (evalChange) and the copies of protected data (checkDataCopies).
func (j *journal) judge(chg *change, blame func(uint64, int, int) (int64, int64)) ([]revfs.Violation, *result) {
	vs, res := j.e.evalChange(chg)
	vs = append(vs, j.checkDataCopies(chg, blame)...)
	return append(vs, j.checkRevokes(chg, res, blame)...), res
}

// checkRevokes reports revoke records that name a block holding a
// protected inode or committed data of a protected file. Recovery skips
// every copy of a revoked block in the revoking transaction and those
// before it, so such a record makes the host's next mount read an older
// version of the inode (a smaller size) or of the data (zeroes), although
// the device applied and sealed the newer one. The kernel never revokes an
// inode-table block (inode tables are never freed), and revokes a data
// block (data=journal) only when freeing it, which a committed range
// never is honestly. Blocks of extent trees and directories are freed and
// revoked honestly, with the change that stops using them: a revoke of one
// whose applied copy has not been written home, while a tracked inode
// still uses it after the change (res), leaves a recovery reading its
// older home version (an index over a leaf never written home: the host
// gets EIO).
func (j *journal) checkRevokes(chg *change, res *result, blame func(uint64, int, int) (int64, int64)) []revfs.Violation {
	e := j.e
	var vs []revfs.Violation
	for _, r := range chg.revoked {
		_, inOverlay := e.overlay[r]
		_, owed := j.ckpt[r]
		if (inOverlay || owed) && !chg.carries[r] {
			if t := j.usesAfter(r, res); t != nil {
				off, n := blame(r, 0, int(e.bs))
				var id revfs.FileID
				if !t.isDir {
					id = revfs.FileID(t.ino)
				}
				vs = append(vs, revfs.Violation{Kind: revfs.KindLayoutChanged, File: id, Off: off, Len: n,
					Detail: fmt.Sprintf("the journal revokes block %d, which inode %d still uses and whose logged version was never written home: recovery would leave the older one", r, t.ino)})
				continue
			}
		}
		// One violation a block: the protected file's inode if the block
		// holds one, else a watched directory's (no one file).
		var owner *tracked
		for _, ro := range e.roles[r] {
			if ro.kind == roleInodeTable && ro.owner != nil && (owner == nil || owner.isDir && !ro.owner.isDir) {
				owner = ro.owner
			}
		}
		if owner != nil {
			var id revfs.FileID
			if !owner.isDir {
				id = revfs.FileID(owner.ino)
			}
			off, n := blame(r, 0, int(e.bs))
			vs = append(vs, revfs.Violation{Kind: revfs.KindLayoutChanged, File: id, Off: off, Len: n,
				Detail: fmt.Sprintf("the journal revokes block %d, the inode table holding inode %d: recovery would skip its logged versions", r, owner.ino)})
		}
		for _, d := range e.dataAt(r, r) {
			f := d.file
			if start := int64(d.logical+r-d.phys) * e.bs; start < f.committed {
				off, n := blame(r, 0, int(e.bs))
				vs = append(vs, revfs.Violation{Kind: revfs.KindDataChanged, File: revfs.FileID(f.ino), Off: off, Len: n,
					Detail: fmt.Sprintf("the journal revokes block %d, committed data of file %d at byte %d: recovery would skip its logged copies", r, f.ino, start)})
			}
		}
	}
	return vs
}

// noBlame places a violation nowhere: for changes judged where no request
// carries them (a flush, Open).
func noBlame(uint64, int, int) (int64, int64) { return 0, 0 }

// unseen returns the violations of vs that are not in have, once each.
func unseen(vs, have []revfs.Violation) []revfs.Violation {
	var out []revfs.Violation
	for _, v := range vs {
		if !slices.Contains(have, v) && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// checkDataCopies reports journalled copies (data=journal) that change
// committed bytes of a protected file.
func (j *journal) checkDataCopies(chg *change, blame func(uint64, int, int) (int64, int64)) []revfs.Violation {
	e := j.e
	var vs []revfs.Violation
	for _, h := range chg.homes {
		for _, d := range e.dataAt(h, h) {
			f := d.file
			start := int64(d.logical+h-d.phys) * e.bs
			if start >= f.committed {
				continue
			}
			n := min(e.bs, f.committed-start)
			nb, ok := chg.get(h)
			if !ok {
				continue
			}
			old, err := e.readNewest(h)
			if err == nil && bytes.Equal(old[:n], nb[:n]) {
				continue
			}
			off, l := blame(h, 0, int(n))
			vs = append(vs, revfs.Violation{Kind: revfs.KindDataChanged, File: revfs.FileID(f.ino), Off: off, Len: l,
				Detail: fmt.Sprintf("journalled copy of block %d changes committed bytes [%d,%d)", h, start, start+n)})
		}
	}
	return vs
}

// apply makes committed transactions the model: metadata versions first,
// then copies of protected data blocks, which count as written and are
// read from the journal until their home write lands.
//
// chg and res are the change and its evaluation when the caller has them
// (nil: computed here).
func (j *journal) apply(txs []jbd2.Transaction, read func(uint32) ([]byte, error), chg *change, res *result, touched map[*tracked]bool) {
	e := j.e
	if chg == nil {
		chg = j.change(txs, read, noBlame)
		res = nil
	}
	if res == nil {
		_, res = e.evalChange(chg)
	}
	e.seq++
	e.freeing = &txs[len(txs)-1]
	e.applyChange(chg, res, touched)
	e.freeing, e.freedAfter = nil, 0
	if m, ok := j.wroteAt(txs[len(txs)-1].End); ok {
		i := sort.Search(len(e.recent), func(i int) bool { return e.recent[i].seq > m.seq })
		e.recent = append(e.recent[:0], e.recent[i:]...)
	} else {
		e.recent = e.recent[:0]
	}
	e.reindex()
	rv := jbd2.Revocations(txs)
	var homes []uint64 // protected data blocks whose copies now count as written
	for i, tx := range txs {
		for _, r := range tx.Revoked {
			if c, ok := e.overlay[r]; ok && !tidBefore(tx.Sequence, c.seq) {
				delete(e.overlay, r)
			}
			if c, ok := j.ckpt[r]; ok && !tidBefore(tx.Sequence, c.tid) {
				delete(j.ckpt, r) // forgotten (jbd2_journal_forget): never checkpointed
			}
		}
		for _, lb := range tx.Blocks {
			if rv.Cancels(lb.Home, i) {
				continue // a replay skips it: the home block stays as it is
			}
			ds := e.dataAt(lb.Home, lb.Home)
			if len(ds) == 0 {
				continue
			}
			at, _ := j.wroteAt(lb.JBlock)
			if w, ok := e.lastWrite.get(lb.Home); ok && w.epoch > at.epoch {
				// Written home in a later flush epoch than this copy was
				// logged in: home is at least as new. A home write in the
				// same epoch is older: jbd2 writes a block home only to
				// checkpoint it, and this transaction's checkpoint comes
				// after its commit block, which a FLUSH separates from
				// its copies; so it checkpoints an earlier version.
				continue
			}
			e.overlay[lb.Home] = journalCopy{jblock: lb.JBlock, escaped: lb.Escaped, seq: tx.Sequence, epoch: e.epoch}
			j.setCopy(lb.JBlock, lb.Home)
			homes = append(homes, lb.Home)
			for _, d := range ds {
				d.file.dataJournalled = true
				touched[d.file] = true
			}
		}
	}
	// The copies are the blocks' newest versions, as of these
	// transactions, whose sizes they go with (proven). Marked after the
	// loop: a mark is a home write for the test above.
	for _, h := range homes {
		e.lastWrite.set(h, writeMark{e.seq, e.epoch})
	}
	addBlockRuns(e.written, homes)
	j.noteCheckpoints(chg)
	j.consume(txs)
}

// noteCheckpoints records the metadata blocks of the protected files whose
// newest version chg (applied) leaves only in the journal: jbd2 writes
// each home (checkpoints it) before the log's start may pass the
// transaction that logged it (see uncheckpointed).
func (j *journal) noteCheckpoints(chg *change) {
	if chg.tid == nil {
		return
	}
	for _, h := range chg.homes {
		if !j.e.dependsOn(h) {
			continue
		}
		if j.ckpt == nil {
			j.ckpt = map[uint64]pendingHome{}
		}
		j.ckpt[h] = pendingHome{tid: chg.tid(h), epoch: j.e.epoch}
	}
}

// pendingHome is a copy of a home block, in applied transaction tid
// (applied in flush epoch epoch), that has not been written home.
type pendingHome struct {
	tid   uint32
	epoch uint64
}

// dependsOn reports whether home block b is metadata a protected file's
// view is read from: the inode-table block of a tracked inode (a protected
// file or a watched directory), a block of a tracked inode's extent tree,
// or a block of a watched directory.
func (e *Engine) dependsOn(b uint64) bool {
	for _, r := range e.roles[b] {
		switch r.kind {
		case roleInodeTable, roleTree, roleDir:
			return true
		}
	}
	return false
}

// addBlockRuns adds blocks to the written set one run of consecutive
// blocks at a time: each Add is also a record in the device's epoch log
// (a system call), and a data=journal transaction carries its files'
// blocks in runs. blocks is sorted in place.
func addBlockRuns(set revfs.BlockSet, blocks []uint64) {
	slices.Sort(blocks)
	for i := 0; i < len(blocks); {
		k := i + 1
		for k < len(blocks) && blocks[k] <= blocks[k-1]+1 {
			k++
		}
		set.Add(blocks[i], blocks[k-1]-blocks[i]+1)
		i = k
	}
}

// reused handles a write over a journal block that still holds the only
// copy of a home block's newest version. jbd2 writes the block home before
// it reuses the log space, so this happens only when the host reorders
// (or forges): the home block then no longer counts as written, and
// coherence waits for its home write.
func (j *journal) reused(jb uint32, touched map[*tracked]bool) {
	// The block's content changes (a write caches it again) or is zeroed.
	j.cacheDrop(jb)
	home, ok := j.copyAt(jb)
	if !ok {
		return
	}
	j.copyOf[jb] = 0
	if c, ok := j.e.overlay[home]; ok && c.jblock == jb {
		delete(j.e.overlay, home)
		j.e.written.Remove(home, 1)
		for _, d := range j.e.dataAt(home, home) {
			touched[d.file] = true
		}
	}
}

// after is the journal block following jb in the circular log.
func (j *journal) after(jb uint32) uint32 {
	if jb+1 >= j.sb.LogEnd() {
		return j.sb.First()
	}
	return jb + 1
}

// complete reports whether every block of tx (descriptor to commit) has
// been written by the host since the engine last consumed that log
// position, counting w. A commit block that lands before the rest of its
// transaction (reordered within a flush, or forged) does not make stale
// log contents count; the transaction is taken at the next flush.
func (j *journal) complete(tx jbd2.Transaction, w *hostWrite) bool {
	p := tx.Start
	for n := uint32(0); n <= j.sb.MaxLen(); n++ {
		_, ok := j.wroteAt(p)
		if !ok && w != nil {
			pb, mapped := j.physOf(p)
			ok = mapped && w.has(pb)
		}
		if !ok {
			return false
		}
		if p == tx.End {
			return true
		}
		p = j.after(p)
	}
	return false
}

// consume forgets the writes of applied transactions' log positions, so
// that the next lap needs fresh ones.
func (j *journal) consume(txs []jbd2.Transaction) {
	for _, tx := range txs {
		p := tx.Start
		for n := uint32(0); n <= j.sb.MaxLen(); n++ {
			j.clearWrote(p)
			j.setApplied(p, tx.Sequence)
			if !j.needed(p) {
				j.cacheDrop(p)
			}
			if p == tx.End {
				break
			}
			p = j.after(p)
		}
	}
}

// superblock checks and records a new version of the journal superblock.
func (j *journal) superblock(nb []byte, pb uint64, w *hostWrite, apply bool) []revfs.Violation {
	refuse := func(kind revfs.Kind, detail string) []revfs.Violation {
		off, n := w.blame(pb, 0, jbd2.SuperblockSize)
		return []revfs.Violation{{Kind: kind, Off: off, Len: n, Detail: detail}}
	}
	nsb, err := jbd2.ParseSuperblock(nb)
	if err != nil {
		return refuse(revfs.KindUnparseable, fmt.Sprintf("journal superblock: %v", err))
	}
	if nsb.BlockSize() != j.sb.BlockSize() || nsb.First() != j.sb.First() || nsb.MaxLen() != j.sb.MaxLen() || nsb.LogEnd() != j.sb.LogEnd() && !j.logEndMayMove(nsb) {
		return refuse(revfs.KindLayoutChanged, fmt.Sprintf("journal geometry changed: first %d maxlen %d log end %d -> first %d maxlen %d log end %d",
			j.sb.First(), j.sb.MaxLen(), j.sb.LogEnd(), nsb.First(), nsb.MaxLen(), nsb.LogEnd()))
	}
	if why := j.startMovedBack(nsb); why != "" {
		return refuse(revfs.KindLayoutChanged, "journal superblock: "+why)
	}
	if why := j.rereads(nsb); why != "" {
		return refuse(revfs.KindLayoutChanged, "journal superblock: "+why)
	}
	why, later := j.uncheckpointed(nsb)
	if why != "" {
		return refuse(revfs.KindLayoutChanged, "journal superblock: "+why)
	}
	if apply {
		j.passed(nsb, later)
		j.sb = nsb
		j.replay = nil // a recovery ends by writing the journal superblock
		switch {
		case nsb.Clean():
			// Unmounted cleanly: the next mount starts a new log.
			j.expect = false
		case !j.expect:
			j.expect, j.pos, j.seq = true, nsb.Start(), nsb.Sequence()
			// A new log: let the next flush look for transactions whose
			// commit block came before this superblock.
			j.pending, j.pendingTid = true, nsb.Sequence()
		}
	}
	return nil
}

// The log's start (s_start, s_sequence) says which transactions a replay
// writes home. jbd2 moves it past a transaction only once the checkpoint
// has written home every block the transaction logged (and flushed),
// unless a later transaction logged the block again (its buffer moves to
// that transaction's checkpoint list) or revoked it (jbd2_journal_forget:
// a freed block is never written home); unmounting, it checkpoints
// everything before it writes the log clean (s_start 0). A superblock
// that passes a transaction whose copy of a block the protected files
// depend on was never written home leaves the kernel, and the device
// after a restart, reading the block's older home version, while the
// engine followed (and may have sealed) the copy.

// uncheckpointed reports why nsb, a journal superblock the host writes,
// passes an applied transaction whose copy of a block the protected files
// depend on has not been written home since, or "" when it does not: a
// block of ckpt still depended on, or a data=journal copy (overlay) inside
// a file's committed range. A copy applied in the current flush epoch
// does not count here: jbd2 writes the commit block, the checkpoint's home
// writes and the superblock with a FLUSH between each, but the host may
// reorder within an epoch (and a test feed squashes them into one), so
// its home write may still arrive; such blocks are returned in later, for
// passed to note as owed and Engine.Flushed to judge.
func (j *journal) uncheckpointed(nsb *jbd2.Superblock) (why string, later map[uint64]pendingHome) {
	fb, ft, found, later := j.notHome(func(_ uint64, tid uint32) bool { return j.passes(nsb, tid) }, true)
	if !found {
		return "", later
	}
	return fmt.Sprintf("%s while block %d's copy in transaction %d, which the protected files depend on, was never written home: the kernel would read the block's older home version",
		movesStart(nsb), fb, ft), nil
}

// notHome finds, among the copies drop selects (by home block and
// transaction), the lowest home block the protected files depend on (a
// block of ckpt, or a data=journal copy inside a committed range) that the
// image does not hold yet, with its transaction. With deferCurrent, copies applied in the
// current flush epoch are returned in later instead (see uncheckpointed).
func (j *journal) notHome(drop func(b uint64, tid uint32) bool, deferCurrent bool) (fb uint64, ft uint32, found bool, later map[uint64]pendingHome) {
	e := j.e
	note := func(b uint64, p pendingHome) {
		if deferCurrent && p.epoch >= e.epoch {
			if later == nil {
				later = map[uint64]pendingHome{}
			}
			later[b] = p
			return
		}
		if !found || b < fb {
			found, fb, ft = true, b, p.tid
		}
	}
	for b, p := range j.ckpt {
		if drop(b, p.tid) && e.dependsOn(b) && !j.homeHolds(b) {
			note(b, p)
		}
	}
	for b, c := range e.overlay {
		if drop(b, c.seq) && e.sealedData(b) && !j.homeHolds(b) {
			note(b, pendingHome{tid: c.seq, epoch: c.epoch})
		}
	}
	return fb, ft, found, later
}

// wipedAtMount reports why a filesystem superblock without needs_recovery
// would lose the protected files' state at the host's next mount, or ""
// when it would not. ext4_load_journal wipes the log of a filesystem that
// does not need recovery, so every transaction still in it is dropped: a
// copy the protected files depend on that was never written home would
// leave the kernel reading the block's older home version. The kernel
// clears needs_recovery (unmount, freeze, remount read-only) only after
// jbd2_journal_flush has written everything home and marked the log empty,
// whose superblock the engine has then seen: copies it owes from that
// epoch (owed, judged at the flush) are not counted again.
func (j *journal) wipedAtMount() string {
	fb, ft, found, _ := j.notHome(func(b uint64, _ uint32) bool { _, owed := j.owed[b]; return !owed }, false)
	if !found {
		return ""
	}
	return fmt.Sprintf("needs_recovery cleared while block %d's copy in transaction %d, which the protected files depend on, was never written home: the host's next mount discards the journal and reads the block's older home version", fb, ft)
}

// homeHolds reports whether the image already holds, at home block b, the
// bytes of the version the engine follows (its journalled copy, or the
// metadata the model holds): a write of the same bytes, which the host
// need not send, or a copy the host wrote home before it committed the
// transaction, is as good as a checkpoint.
func (j *journal) homeHolds(b uint64) bool {
	e := j.e
	want, ok := e.meta[b]
	if c, isCopy := e.overlay[b]; isCopy {
		var err error
		if want, err = j.readCopy(c); err != nil {
			return false
		}
	} else if !ok {
		return false
	}
	got, err := e.readImage(b)
	return err == nil && bytes.Equal(got, want)
}

// movesStart describes what a journal superblock does to the log's start.
func movesStart(nsb *jbd2.Superblock) string {
	if nsb.Clean() {
		return "marks the log empty"
	}
	return fmt.Sprintf("moves the log's start to transaction %d", nsb.Sequence())
}

// owedAtFlush returns, at a host FLUSH, a violation for each block noted
// owed (uncheckpointed) that is still not written home and still one the
// protected files depend on, and forgets them all.
func (j *journal) owedAtFlush() []revfs.Violation {
	if len(j.owed) == 0 {
		return nil
	}
	e := j.e
	bs := make([]uint64, 0, len(j.owed))
	for b := range j.owed {
		bs = append(bs, b)
	}
	slices.Sort(bs)
	var vs []revfs.Violation
	for _, b := range bs {
		if !e.dependsOn(b) && !e.sealedData(b) || j.homeHolds(b) {
			continue
		}
		vs = append(vs, revfs.Violation{Kind: revfs.KindLayoutChanged,
			Detail: fmt.Sprintf("at a flush, the journal superblock %s, passing transaction %d, but its copy of block %d, which the protected files depend on, was not written home: the kernel would read the block's older home version",
				movesStart(j.sb), j.owed[b].tid, b)})
	}
	j.owed = nil
	return vs
}

// passes reports whether nsb, a journal superblock, leaves transaction tid
// out of what a replay reads: it marks the log empty, or starts it at a
// later transaction.
func (j *journal) passes(nsb *jbd2.Superblock, tid uint32) bool {
	return nsb.Clean() || tidBefore(tid, nsb.Sequence())
}

// sealedData reports whether b is a block of a protected file's committed
// range.
func (e *Engine) sealedData(b uint64) bool {
	for _, d := range e.dataAt(b, b) {
		if int64(d.logical+b-d.phys)*e.bs < d.file.committed {
			return true
		}
	}
	return false
}

// passed forgets, as nsb (accepted) moves the log's start, the copies of
// the transactions it passes, except those later holds (uncheckpointed),
// which it notes owed: metadata blocks no protected file depends on any
// more, and data=journal copies past the committed ranges. Their log
// blocks are free for the kernel to reuse, and a replay no longer writes
// them: a data block whose copy is dropped no longer counts as written (as
// in reused), so that coherence waits for its home write.
func (j *journal) passed(nsb *jbd2.Superblock, later map[uint64]pendingHome) {
	e := j.e
	for b, p := range later {
		if j.owed == nil {
			j.owed = map[uint64]pendingHome{}
		}
		j.owed[b] = p
	}
	for b, p := range j.ckpt {
		if _, owed := later[b]; !owed && j.passes(nsb, p.tid) {
			delete(j.ckpt, b)
		}
	}
	var touched []*tracked
	for b, c := range e.overlay {
		if _, owed := later[b]; owed || !j.passes(nsb, c.seq) {
			continue
		}
		delete(e.overlay, b)
		e.written.Remove(b, 1)
		for _, d := range e.dataAt(b, b) {
			touched = append(touched, d.file)
		}
	}
	for _, f := range touched {
		e.updateCoherent(f)
	}
}

// startMovedBack reports, for a journal superblock the host writes, why it
// points a recovery at transactions the engine has already applied, or ""
// when it does not. jbd2 only ever moves the log's start forward: a
// checkpoint to the oldest live transaction (a later tid), a mount to the
// next tid. Pointing the start back lets a forged copy of an applied
// transaction, written over the log where it lay, be replayed at the
// next mount (and, unjudged, at the device's next Open before
// judgeRecovery).
func (j *journal) startMovedBack(nsb *jbd2.Superblock) string {
	if nsb.Clean() {
		return ""
	}
	old := j.sb
	if j.expect {
		// Judged against the engine's own position, not only the last
		// superblock's: tids compare modulo 2^32 (tidBefore is not
		// transitive), so a few forward jumps of a third of the space
		// each would otherwise bring the start back round to an applied
		// transaction. Applied and live are the transactions from the
		// current start up to the next one the engine expects (j.seq);
		// a start before both names an applied transaction whose log
		// blocks were free to rewrite (liveApplied).
		live := uint32(0)
		if !old.Clean() && tidBefore(old.Sequence(), j.seq) {
			live = j.seq - old.Sequence()
		}
		if s := nsb.Sequence(); tidBefore(s, j.seq) && j.seq-s > live {
			return fmt.Sprintf("log start moved back to transaction %d, applied and no longer live (the log started at %d, the next transaction is %d)", s, old.Sequence(), j.seq)
		}
	}
	switch {
	case tidBefore(nsb.Sequence(), old.Sequence()):
		return fmt.Sprintf("log start moved back from transaction %d to %d", old.Sequence(), nsb.Sequence())
	case !old.Clean() && nsb.Sequence() == old.Sequence() && nsb.Start() != old.Start():
		return fmt.Sprintf("transaction %d moved from log block %d to %d", old.Sequence(), old.Start(), nsb.Start())
	case old.Clean() && j.expect && tidBefore(nsb.Sequence(), j.seq):
		return fmt.Sprintf("a clean log restarted at transaction %d, already applied (next is %d)", nsb.Sequence(), j.seq)
	}
	return ""
}

// logEndMayMove reports whether nsb, a journal superblock of the same
// length, may move the end of the log: the fast-commit area takes the
// journal's last blocks, and the kernel sets the feature at mount (on an
// empty log) and clears it at unmount (in the clean superblock). With a
// transaction the engine has applied still live, a new end would change
// where a replay wraps round.
func (j *journal) logEndMayMove(nsb *jbd2.Superblock) bool {
	return !j.replaysApplied(nsb)
}

// replaysApplied reports whether a replay from nsb, a journal superblock,
// would start with transactions the engine has applied: the log is not
// clean, the engine has applied transactions since it was last clean
// (expect), and nsb starts before the next one the engine expects
// (startMovedBack refuses a start before the log's).
func (j *journal) replaysApplied(nsb *jbd2.Superblock) bool {
	return !nsb.Clean() && j.expect && tidBefore(nsb.Sequence(), j.seq)
}

// A journal superblock's feature set says how the log reads: the version
// (a v1 superblock has no features), s_feature_compat/incompat/ro_compat,
// the checksum type and the UUID, which seeds the v2/v3 checksums. 64bit,
// csum v2 and csum v3 set the size of a descriptor tag and the tail of
// descriptor and revoke blocks; checksum v1 and v2/v3 decide which blocks
// a replay accepts. Read with another feature set, a live transaction
// replays other home blocks, or none. The kernel changes the set in these
// ways only (fs/jbd2/journal.c, fs/ext4/super.c):
//
//   - At mount, once the recovery has emptied the log,
//     ext4_load_and_init_journal sets, in memory, 64bit for a 64bit
//     filesystem, the checksums of the mount (set_journal_csum_feature_set:
//     csum v3 with metadata_csum, else checksum v1 with journal_checksum;
//     async_commit with journal_async_commit; the others cleared) and
//     fast_commit. They reach the disk with the next superblock write. On a
//     clean log that is the first commit's (journal_reset defers it,
//     JBD2_FLUSHED), which names the new transaction's start before any
//     block of it is written: nothing is live. After a recovery
//     journal_reset has already written the superblock with the old set,
//     so the new one comes with the first log-tail update, when
//     transactions the kernel wrote with it are live. The filesystem's
//     own features (64bit, metadata_csum) reached the disk with the first
//     mount's first commit, so only the mount options can differ there:
//     checksum v1 and async_commit, which change neither the tags nor
//     which of those transactions replay (their commit blocks carry a
//     CRC, or none, which checksum v1 accepts).
//   - jbd2_journal_revoke sets revoke at the first revoke record, whenever
//     that is; it reaches the disk with the next write, live log and all.
//     The recovery reads revoke blocks whether it is set or not.
//   - jbd2_mark_journal_empty (unmount) writes a clean superblock without
//     fast_commit; journal_reset clears it after a recovery.
//
// No remount changes the set (ext4 ignores a journal_checksum change on
// remount). So while transactions the engine has applied are live, the
// kernel's only changes are: revoke set, and checksum v1 (compat) or
// async_commit (incompat) toggled, none of which changes how those
// transactions read. That is the rule: while a transaction the engine
// has applied is still in the log a superblock points a replay at, the
// superblock may change the set in those ways only (checksum v1 not
// alongside csum v2/v3, which the kernel refuses to load); any other
// change is refused, without reading the log (a scan of a large log per
// superblock write would let a host keep the device busy). For
// fast_commit, which moves the log's end, the geometry check above
// decides. Transactions not applied yet are read, from then on, with the
// new set, as a replay would.

// rereads reports why nsb, a journal superblock the host writes, changes
// the feature set in a way the kernel never does while a transaction the
// engine has already applied is live (a replay could read it differently
// from how the engine read it), or "" when it does not.
func (j *journal) rereads(nsb *jbd2.Superblock) string {
	old := j.sb
	if sameFeatureSet(old, nsb) {
		return ""
	}
	if !j.replaysApplied(nsb) {
		return ""
	}
	live := fmt.Sprintf("transactions %d to %d, which the engine has applied, are live in the log", nsb.Sequence(), j.seq-1)
	if nsb.Sequence() == j.seq-1 {
		live = fmt.Sprintf("transaction %d, which the engine has applied, is live in the log", nsb.Sequence())
	}
	change := fmt.Sprintf("features %s -> %s", featureSet(old), featureSet(nsb))
	if old.Disk.FeatureROCompat != nsb.Disk.FeatureROCompat {
		// jbd2 defines no ro_compat feature: with any set, the kernel
		// refuses to load the journal, and the live transactions with it.
		return fmt.Sprintf("%s while %s: the kernel would refuse to replay the log", change, live)
	}
	if !kernelLiveChange(old, nsb) {
		return fmt.Sprintf("%s while %s: the kernel changes only revoke, checksum v1 and async_commit then, and a replay could read the log differently from the engine", change, live)
	}
	return ""
}

// kernelLiveChange reports whether the feature set of nsb differs from
// that of old only as the kernel's may while transactions are live: the
// revoke feature set, checksum v1 or async_commit set or cleared, and
// nothing else (the superblock's version, the other features, the
// checksum type and the UUID as they were; checksum v1 never alongside
// csum v2/v3).
func kernelLiveChange(old, nsb *jbd2.Superblock) bool {
	if old.Disk.Header.BlockType != nsb.Disk.Header.BlockType || old.Disk.FeatureROCompat != nsb.Disk.FeatureROCompat ||
		old.Disk.ChecksumType != nsb.Disk.ChecksumType || old.Disk.UUID != nsb.Disk.UUID {
		return false
	}
	if (old.Compat()^nsb.Compat())&^jbd2.FeatureCompatChecksum != 0 {
		return false
	}
	inc := old.Incompat() ^ nsb.Incompat()
	if inc&^(jbd2.FeatureIncompatRevoke|jbd2.FeatureIncompatAsyncCommit) != 0 {
		return false
	}
	if inc&jbd2.FeatureIncompatRevoke != 0 && nsb.Incompat()&jbd2.FeatureIncompatRevoke == 0 {
		return false // revoke cleared
	}
	return !(nsb.HasChecksumV1() && nsb.HasCsumV2V3())
}

// sameFeatureSet reports whether two journal superblocks read the log
// alike, by the fields that say how (see above).
func sameFeatureSet(a, b *jbd2.Superblock) bool {
	return a.Disk.Header.BlockType == b.Disk.Header.BlockType && a.Compat() == b.Compat() && a.Incompat() == b.Incompat() &&
		a.Disk.FeatureROCompat == b.Disk.FeatureROCompat && a.Disk.ChecksumType == b.Disk.ChecksumType && a.Disk.UUID == b.Disk.UUID
}

// featureSet describes a journal superblock's feature set for a violation.
func featureSet(sb *jbd2.Superblock) string {
	s := fmt.Sprintf("[incompat %s compat %s", sb.Incompat(), sb.Compat())
	if ro := sb.Disk.FeatureROCompat; ro != 0 {
		s += fmt.Sprintf(" ro_compat %#x", ro)
	}
	if sb.HasCsumV2V3() {
		s += fmt.Sprintf(" checksum type %d uuid %x", sb.Disk.ChecksumType, sb.Disk.UUID)
	}
	return s + "]"
}

// catchUp applies transactions whose commit block arrived before the rest
// of the transaction (the host gives no order between two flushes). It
// runs at a flush; a transaction that would raise a violation is left
// alone, so that its home writes are judged against the old model.
func (j *journal) catchUp(touched map[*tracked]bool) {
	if !j.expect || !j.pending {
		return
	}
	read := func(jb uint32) ([]byte, error) { return j.readJ(jb, nil) }
	sums := func(jb uint32) (uint32, bool) { return j.sumJ(jb, nil) }
	txs, next, nseq, err := jbd2.ScanWithSums(j.sb, j.pos, j.seq, read, sums, j.held(), int(j.sb.MaxLen()))
	for i, tx := range txs {
		if !j.complete(tx, nil) {
			j.judgeIncomplete(txs, i, read)
			txs = txs[:i]
			if i > 0 {
				next, nseq = txs[i-1].End, txs[i-1].Sequence+1
			}
			break
		}
	}
	if len(txs) > 0 {
		next = j.after(txs[len(txs)-1].End)
	}
	if len(txs) == 0 {
		if err != nil {
			j.e.log.Debug("ext4: journal catch-up scan", "err", err)
		}
		return
	}
	chg := j.change(txs, read, noBlame)
	vs, res := j.judge(chg, noBlame)
	if len(vs) > 0 {
		// A backstop: checkPending raises at the write that completes
		// such transactions, so they get here only when the response let
		// that write land (honeypot, or discard that could not repair
		// them). A flush cannot raise (revfs.Engine.Flushed returns
		// nothing): left unapplied and pending, they are raised again by
		// the next commit block (find evaluates them with its own
		// transaction, blamed on it, and the discard response repairs
		// them there) and by any write to their blocks (checkPending).
		j.e.log.Error("ext4: committed transactions found at a flush would change protected data; not applied",
			"first", txs[0].Sequence, "last", txs[len(txs)-1].Sequence, "violations", len(vs), "violation", vs[0].String())
		return
	}
	j.apply(txs, read, chg, res, touched)
	j.expect, j.pos, j.seq = true, next, nseq
	j.settle()
}

// judgeIncomplete raises, at a host FLUSH, what the committed
// transactions txs (scanned as a replay reads the log), of which txs[first]
// is the first incomplete one, would change. The kernel writes every block of a transaction before the
// FLUSH that follows its commit block, so at a flush a committed
// transaction with a block the host never wrote is not the kernel's: a
// root attacker wrote a descriptor and a commit block over log positions
// holding an earlier lap's blocks or zeroes (with tags matching them),
// which no write completes and checkPending therefore never judges, but
// which a replay applies. Each run of transactions is raised once
// (flushSeen); the violations wait in Engine.flushVs for the device core
// (FlushViolations). Nothing here is applied to the model.
func (j *journal) judgeIncomplete(txs []jbd2.Transaction, first int, read func(uint32) ([]byte, error)) {
	last := txs[len(txs)-1].Sequence
	if j.flushSeen[last] {
		return
	}
	vs, _ := j.judge(j.change(txs, read, noBlame), noBlame)
	if len(vs) == 0 {
		return
	}
	if j.flushSeen == nil || len(j.flushSeen) > 64 {
		j.flushSeen = map[uint32]bool{}
	}
	j.flushSeen[last] = true
	j.e.flushUndo = append(j.e.flushUndo, txs[first].End)
	for i := range vs {
		vs[i].Detail = fmt.Sprintf("at a flush, committed journal transaction %d has blocks the host never wrote; a replay would apply it: %s",
			txs[first].Sequence, vs[i].Detail)
	}
	j.e.flushVs = append(j.e.flushVs, vs...)
}

// A commit block that lands before the rest of its transaction cannot be
// judged when it arrives: the log does not hold the transaction yet. The
// host decides the order of its writes, so a root attacker can write the
// commit block first and the descriptor and the copies after it; the
// write that completes such a transaction is where it becomes what a
// replay (the kernel's recovery after a crash, audit's reader) applies.
// checkPending judges that write, so the response acts on it: readonly
// refuses it, discard repairs the transaction (RepairDiscard) and the
// corrected bytes land instead, honeypot lets it land and freezes the
// files. catchUp at the next flush only applies what is then harmless.
//
// A refused write leaves the log position it was for holding what it held
// before. With csum v2/v3 the tag of a copy that never landed does not
// match that stale block: a replay skips the copy (the home block keeps
// its contents). With checksum v1 a CRC in the commit block covers every
// block of the transaction: a replay stops before it. Without journal
// checksums (or a checksum v1 commit block carrying none, which the kernel
// accepts) nothing tells a replay that a copy is missing: it writes
// whatever the position held from an earlier lap (an older journalled
// block, or zeroes) to the home block the forged tag names. The device is
// read-only by then and the refused write is on record, but a recovery of
// that image can still damage the home block; so can a transaction whose
// copies the host never writes at all, which the engine never judges (see
// the known limits in doc.go).

// checkPending evaluates, for a write w to the journal while a commit
// block is pending, the transactions from the expected log position that
// are complete once w lands, when w writes one of their blocks; it returns
// their violations (minus those already in have), blamed on w: the bytes
// of the copy that carries a change when w holds it, else w's blocks
// inside the transactions. A commit block of w that completed
// transactions (covered) was evaluated with everything before it, up to
// tid coveredSeq.
func (j *journal) checkPending(w *hostWrite, read func(uint32) ([]byte, error), covered bool, coveredSeq uint32, have []revfs.Violation) []revfs.Violation {
	txs, lo, hi := j.pendingTxs(w, read)
	if len(txs) == 0 || covered && tidBefore(txs[len(txs)-1].Sequence, coveredSeq) {
		return nil
	}
	blame := j.pendingBlame(txs, w, lo, hi)
	chg := j.change(txs, read, blame)
	vs, _ := j.judge(chg, blame)
	vs = append(vs, j.replayViolations(txs, read, blame, chg, vs)...)
	out := unseen(vs, have)
	if len(out) > 0 {
		j.e.log.Warn("ext4: a write completes committed transactions whose commit block came first, and they change protected data",
			"first", txs[0].Sequence, "last", txs[len(txs)-1].Sequence, "violations", len(out))
	}
	return out
}

// pendingTxs returns the transactions that are complete once w lands, as
// catchUp would take them from the expected log position (or, when the
// engine has none, as find looks for the newest pending commit's: from the
// log's first block, its head, its tail), and the device bytes [lo, hi) of
// w that lie in them; none when w writes no block of them. It scans the log
// only when w may complete one: w writes a block of the log, from the
// start on, that lies before a pending commit block, with every block up
// to that commit block written. So the writes of a transaction whose
// commit block came first cost a scan only at the last of them, and the
// kernel's own writes while a commit is pending cost a block
// lookup for each log position from the start to the first one not
// written since it was last used.
func (j *journal) pendingTxs(w *hostWrite, read func(uint32) ([]byte, error)) (txs []jbd2.Transaction, lo, hi int64) {
	if !j.pending || j.pendingAt == 0 {
		return nil, 0, 0
	}
	type cand struct{ pos, seq uint32 }
	var cands []cand
	if j.expect {
		cands = append(cands, cand{j.pos, j.seq})
	} else {
		cands = append(cands, cand{j.sb.First(), j.pendingTid})
		if h := j.sb.Head(); h != 0 {
			cands = append(cands, cand{h, j.pendingTid})
		}
		if !j.sb.Clean() {
			cands = append(cands, cand{j.sb.Start(), j.sb.Sequence()})
		}
	}
	for _, c := range cands {
		if c.pos < j.sb.First() || c.pos >= j.sb.LogEnd() || !j.mayComplete(w, c.pos) {
			continue
		}
		all, _, _, err := jbd2.Scan(j.sb, c.pos, c.seq, read, int(j.sb.MaxLen()))
		if err != nil {
			j.e.log.Debug("ext4: journal scan for a pending commit", "pos", c.pos, "seq", c.seq, "err", err)
		}
		txs = txs[:0]
		for _, tx := range all {
			if !j.complete(tx, w) {
				break
			}
			txs = append(txs, tx)
		}
		if len(txs) == 0 || !j.expect && tidBefore(txs[len(txs)-1].Sequence, j.pendingTid) {
			continue
		}
		if lo, hi, ok := j.span(txs, w); ok {
			return txs, lo, hi
		}
	}
	return nil, 0, 0
}

// mayComplete reports whether w may complete a transaction of the log
// from journal block start: walking the log from there, w writes a block
// before a pending commit block (or, with too many noted, before the
// newest), and every block up to it has been written since its position
// was last used (complete), counting w.
func (j *journal) mayComplete(w *hostWrite, start uint32) bool {
	sawW := false
	p := start
	for n := uint32(0); n <= j.sb.MaxLen(); n++ {
		pb, mapped := j.physOf(p)
		inW := mapped && w.has(pb)
		if _, ok := j.wroteAt(p); !ok && !inW {
			return false // a hole: no transaction reaching past it is complete
		}
		sawW = sawW || inW
		if sawW && (p == j.pendingAt || j.pendingMany || slices.Contains(j.pendingCommits, p)) {
			return true
		}
		if p == j.pendingAt {
			return false
		}
		p = j.after(p)
	}
	return false
}

// span returns the device bytes of w that lie in txs, which follow one
// another in the log from the first one's start to the last one's commit
// block (w is contiguous, and so, nearly always, is the journal).
func (j *journal) span(txs []jbd2.Transaction, w *hostWrite) (lo, hi int64, ok bool) {
	first, last := uint64(0), uint64(0)
	p, end := txs[0].Start, txs[len(txs)-1].End
	for n := uint32(0); n <= j.sb.MaxLen(); n++ {
		if pb, mapped := j.physOf(p); mapped && w.has(pb) {
			if !ok || pb < first {
				first = pb
			}
			if !ok || pb > last {
				last = pb
			}
			ok = true
		}
		if p == end {
			break
		}
		p = j.after(p)
	}
	if !ok {
		return 0, 0, false
	}
	bs := j.e.bs
	return max(int64(first)*bs, w.off), min(int64(last+1)*bs, w.end), true
}

// pendingBlame blames a change that w completes (checkPending) on the
// bytes of the copy carrying it when w writes that copy, else on w's
// blocks inside the transactions, [lo, hi).
func (j *journal) pendingBlame(txs []jbd2.Transaction, w *hostWrite, lo, hi int64) func(uint64, int, int) (int64, int64) {
	latest, _ := replayCopies(txs)
	return func(h uint64, a, b int) (int64, int64) {
		if at, ok := latest[h]; ok {
			if pb, ok := j.physOf(at.lb.JBlock); ok && w.has(pb) {
				if s, n := w.blame(pb, a, b); s >= lo && s+n <= hi {
					return s, n
				}
			}
		}
		return lo, hi - lo
	}
}

// firstLogWrite returns the sequence of the host's first write to the log
// blocks of tx, from its first block to its commit block, or 0 when one of
// them has no write since its log position was last consumed (at Open:
// transactions the host wrote before).
func (j *journal) firstLogWrite(tx jbd2.Transaction) uint64 {
	first := uint64(0)
	for jb, n := tx.Start, uint64(0); n <= j.length(); jb, n = j.after(jb), n+1 {
		m, ok := j.wroteAt(jb)
		if !ok {
			return 0
		}
		if first == 0 || m.seq < first {
			first = m.seq
		}
		if jb == tx.End {
			return first
		}
	}
	return 0
}
