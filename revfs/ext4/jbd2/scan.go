package jbd2

import "fmt"

// A LoggedBlock is one journalled copy: the home block it stands for and the
// journal-relative block index (0 = the journal superblock) where the copy
// lies.
type LoggedBlock struct {
	Home    uint64
	JBlock  uint32
	Escaped bool // first 4 bytes stored as zero; Unescape a copy before use
}

// Transaction is one complete, committed transaction found in the log.
type Transaction struct {
	Sequence   uint32
	Start, End uint32        // journal-relative: first block (descriptor or revoke) and the commit block
	Blocks     []LoggedBlock // in log order; a home block may appear more than once (last wins)

	// Revoked holds the home blocks this transaction's revoke blocks
	// revoke, each once, leaving out the records that cancel no copy a
	// kept one does not (see scanner.revokes): for any run of consecutive
	// transactions of one scan, replaying them (ReplayPlan) or applying
	// them in log order gives what all the records would, and a log full
	// of revoke blocks (blocksize/4 records each) costs no memory per
	// record.
	Revoked []uint64
	Commit  Commit

	// Skipped holds copies whose csum v2/v3 tag checksum does not match
	// their contents, so they are not in Blocks. The kernel's recovery
	// does not replay such a copy; unless a revoke record (kept in Revoked
	// as for any copy) cancels it, it replays the others, then fails with
	// -EFSBADCRC and the filesystem does not mount (fs/jbd2/recovery.c,
	// do_one_pass).
	Skipped []LoggedBlock
}

// Scan walks the log forward from journal block start expecting sequence
// seq, as jbd2's PASS_SCAN does (wrapping from LogEnd() to First()), and
// returns every complete, valid (checksums ok, commit block present)
// transaction, in order, stopping at the first block that is not the next
// valid piece of the log. It returns where the next transaction would start
// and its sequence. read returns the contents of a journal-relative block
// (the caller maps it to a device block through the journal inode's
// extents), as the host last wrote it — including the commit block whose
// arrival prompted the scan. maxBlocks bounds the work: the number of log
// positions walked.
//
// The log ends — without error — at a block that lacks the magic, carries
// another sequence, is of an unexpected type, or fails a check: a descriptor
// or revoke block with a bad tail checksum or bad layout, a commit block
// with a bad checksum (v1, v2 or v3). The transaction in progress there is
// dropped. This is stricter than the kernel in one corner: when a
// descriptor or revoke block fails its checksum, the kernel keeps scanning
// to the commit block and then either declares the rest stale (older commit
// time) or fails the mount with -EFSBADCRC; Scan stops at once, which gives
// the same set of replayable transactions in the first case and refuses to
// guess in the second.
//
// Errors: a read error or a read returning a block of the wrong size (with
// the transactions complete before it), ErrTooLong when maxBlocks ran out
// before the log ended (txs, next and nextSeq are valid: call again from
// next to go on), ErrCorrupt when start lies outside the log or the walk
// went a whole lap around the log without ending. In every case txs holds
// only complete, valid transactions and next/nextSeq the point after them.
//
// Memory: besides a Transaction per transaction and its copies (16 bytes
// each), Scan keeps at most two revoke records per copy
// (Transaction.Revoked), however many records the revoke blocks hold, and
// once it has met a revoke block, a map entry per home block it logged. It
// reads each revoke block a second time when its transaction commits, to
// keep the records that the transaction's own copies make matter.
//
// Fast commits: Scan ignores the fast-commit area [LogEnd, MaxLen). A fast
// commit made by fsync lands there without a full commit; an engine must
// treat the full jbd2 commit that follows as the point of coherence (the
// indelible init does not enable fast_commit).
func Scan(sb *Superblock, start, seq uint32, read func(jblock uint32) ([]byte, error), maxBlocks int) (txs []Transaction, next, nextSeq uint32, err error) {
	return ScanWithSums(sb, start, seq, read, nil, nil, maxBlocks)
}

// ScanWithSums is Scan given, besides read, the BlockSum of journal blocks
// whose contents the caller has already summed: sums(jb) returns the
// BlockSum of what read(jb) would return, or false. A journalled copy with a
// sum has its v2/v3 checksum checked without being read (dataChecksumBase):
// the engine sums each block as the host writes it, while its bytes are
// still in the CPU's caches, instead of reading every copy of a
// data=journal transaction again when its commit block arrives.
//
// held, when not nil, reports home blocks of which the caller holds a
// journalled copy from an earlier scan: a revoke record naming one is kept
// (the first in the scan, and after a copy as for any block) although no
// transaction of this scan logs it.
func ScanWithSums(sb *Superblock, start, seq uint32, read func(jblock uint32) ([]byte, error), sums func(jblock uint32) (uint32, bool), held func(home uint64) bool, maxBlocks int) (txs []Transaction, next, nextSeq uint32, err error) {
	first, end := sb.First(), sb.LogEnd()
	if start < first || start >= end {
		return nil, start, seq, fmt.Errorf("%w: scan start %d outside the log [%d, %d)", ErrCorrupt, start, first, end)
	}
	s := scanner{sb: sb, read: read, sums: sums, held: held, pos: start, budget: maxBlocks, lap: int(end - first)}
	for {
		tx, ok, err := s.transaction(seq)
		if err == nil && ok {
			err = s.revokes(&tx, txs)
		}
		if err != nil || !ok {
			return txs, tx.Start, seq, err
		}
		txs = append(txs, tx)
		seq++
	}
}

type scanner struct {
	sb     *Superblock
	read   func(uint32) ([]byte, error)
	sums   func(uint32) (uint32, bool) // may be nil
	pos    uint32                      // next block to look at
	budget int                         // positions left before ErrTooLong
	lap    int                         // positions left before the walk has gone all the way round

	held      func(uint64) bool // may be nil (ScanWithSums)
	revokeAt  []blockRun        // the revoke blocks of the transaction being read
	revokeEnd uint32            // the position after the last of them
	// rev follows, once the scan has met a revoke block, the home blocks
	// whose revoke records may still cancel something (revokes).
	rev map[uint64]revokeState
}

// revokeState is where a scan last logged a home block and last kept a
// revoke record for it: 1 + the transaction's index in the scan, 0 for
// none.
type revokeState struct{ logged, revoked uint32 }

// blockRun is n consecutive log positions from first.
type blockRun struct{ first, n uint32 }

// take returns the current position and advances past it, wrapping at the
// end of the log like the kernel's wrap() macro.
func (s *scanner) take() (uint32, error) {
	if s.budget <= 0 {
		return 0, ErrTooLong
	}
	if s.lap <= 0 {
		return 0, fmt.Errorf("%w: log runs a whole lap around the journal without ending", ErrCorrupt)
	}
	s.budget--
	s.lap--
	p := s.pos
	s.pos = s.sb.NextBlock(p)
	return p, nil
}

func (s *scanner) get(jb uint32) ([]byte, error) {
	b, err := s.read(jb)
	if err != nil {
		return nil, fmt.Errorf("jbd2: read journal block %d: %w", jb, err)
	}
	if len(b) != s.sb.BlockSize() {
		return nil, fmt.Errorf("%w: read of journal block %d returned %d bytes, want %d", ErrCorrupt, jb, len(b), s.sb.BlockSize())
	}
	return b, nil
}

// transaction reads one transaction with tid seq from s.pos. ok is false
// (with a nil error) where the valid log ends; tx.Start is always where the
// transaction began, so the caller can report it as the next start.
func (s *scanner) transaction(seq uint32) (tx Transaction, ok bool, err error) {
	tx = Transaction{Sequence: seq, Start: s.pos}
	s.revokeAt = s.revokeAt[:0]
	v1 := s.sb.HasChecksumV1()
	crc := ^uint32(0) // checksum v1 running crc32_be over descriptors and copies
	for {
		jb, err := s.take()
		if err != nil {
			return tx, false, err
		}
		b, err := s.get(jb)
		if err != nil {
			return tx, false, err
		}
		h, isMeta := ParseHeader(b)
		if !isMeta || h.Sequence != seq {
			return tx, false, nil
		}
		switch h.BlockType {
		case BlockTypeDescriptor:
			tags, err := ParseDescriptor(s.sb, b)
			if err != nil {
				return tx, false, nil
			}
			if v1 {
				crc = crc32Be(crc, b)
			}
			if err := s.copies(&tx, tags, seq, v1, &crc); err != nil {
				return tx, false, err
			}
		case BlockTypeRevoke:
			if _, _, err := revokeRecords(s.sb, b); err != nil {
				return tx, false, nil
			}
			// Its records are taken once the transaction is complete
			// (revokes): which matter depends on its copies.
			if k := len(s.revokeAt) - 1; k >= 0 && s.revokeEnd == jb {
				s.revokeAt[k].n++
			} else {
				s.revokeAt = append(s.revokeAt, blockRun{jb, 1})
			}
			s.revokeEnd = s.sb.NextBlock(jb)
		case BlockTypeCommit:
			c, err := ParseCommit(s.sb, b)
			if err != nil {
				return tx, false, nil
			}
			if v1 && !v1CommitOK(c, crc) {
				return tx, false, nil
			}
			tx.End, tx.Commit = jb, *c
			return tx, true, nil
		default:
			return tx, false, nil
		}
	}
}

// revokes fills tx.Revoked, once tx (the scan's transaction after prev)
// is complete, from the revoke blocks read for it. A revoke record cancels
// the copies of its block in its own transaction and earlier ones (the
// kernel's rule, which journal.versions in the engine follows too). A
// record is kept, once per transaction, when the scan logged its block
// (a copy in Blocks or in Skipped, whose revocation decides whether the
// kernel's recovery fails) in this transaction or in one at or after
// the transaction of the block's last kept record; or, the scan having
// neither logged nor revoked the block before, when the caller holds a
// copy of it (held). A record left out can only cancel copies from
// transactions before the last kept record's, which cancels them already:
// a run of consecutive transactions that holds such a copy and the record
// holds the kept record too. So each copy makes at most two records count
// (one in its own transaction, one after it), whatever the revoke blocks
// hold.
//
// The revoke blocks are read again here, with the transaction's copies
// known: keeping their records until the commit block would cost memory
// per record. A block that no longer reads as it did is an error.
func (s *scanner) revokes(tx *Transaction, prev []Transaction) error {
	if s.rev == nil {
		if len(s.revokeAt) == 0 {
			return nil // the usual case: no revoke block yet in this scan
		}
		s.rev = map[uint64]revokeState{}
		for i := range prev {
			s.logged(prev[i].Blocks, uint32(i)+1)
			s.logged(prev[i].Skipped, uint32(i)+1)
		}
	}
	n := uint32(len(prev)) + 1
	s.logged(tx.Blocks, n)
	s.logged(tx.Skipped, n)
	if len(s.rev) == 0 && s.held == nil {
		return nil // nothing logged nor held: no record can matter
	}
	for _, run := range s.revokeAt {
		jb := run.first
		for k := uint32(0); k < run.n; k, jb = k+1, s.sb.NextBlock(jb) {
			if err := s.revokeBlock(tx, jb, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// revokeBlock keeps the records of the revoke block at jb that matter
// (revokes) for tx, the scan's nth transaction.
func (s *scanner) revokeBlock(tx *Transaction, jb, n uint32) error {
	b, err := s.get(jb)
	if err != nil {
		return err
	}
	h, _ := ParseHeader(b)
	rec, end, err := revokeRecords(s.sb, b)
	if err != nil || h.Sequence != tx.Sequence {
		return fmt.Errorf("%w: revoke block %d of transaction %d changed during the scan", ErrCorrupt, jb, tx.Sequence)
	}
	for off := RevokeHeaderSize; off+rec <= end; off += rec {
		r := revokeRecord(b, off, rec)
		st, known := s.rev[r]
		if st.revoked == n {
			continue // kept already for this transaction
		}
		if known && st.logged != 0 && st.logged >= st.revoked || !known && s.held != nil && s.held(r) {
			tx.Revoked = append(tx.Revoked, r)
			st.revoked = n
			s.rev[r] = st
		}
	}
	return nil
}

// logged records that the transaction numbered n (1-based in the scan)
// logs blocks.
func (s *scanner) logged(blocks []LoggedBlock, n uint32) {
	for _, lb := range blocks {
		st := s.rev[lb.Home]
		st.logged = n
		s.rev[lb.Home] = st
	}
}

// copies walks the journalled copies a descriptor announces. Their contents
// are read only when a checksum covers them.
func (s *scanner) copies(tx *Transaction, tags []Tag, seq uint32, v1 bool, crc *uint32) error {
	verify := s.sb.HasCsumV2V3()
	v3 := s.sb.incompat&FeatureIncompatCsumV3 != 0
	var base uint32 // dataChecksumBase(seq), once a copy has a sum
	haveBase := false
	for _, t := range tags {
		jb, err := s.take()
		if err != nil {
			return err
		}
		lb := LoggedBlock{Home: t.Home, JBlock: jb, Escaped: t.Escaped()}
		if !verify && !v1 {
			tx.Blocks = append(tx.Blocks, lb)
			continue
		}
		var sum uint32
		summed := false
		if !v1 && s.sums != nil {
			if bs, ok := s.sums(jb); ok {
				if !haveBase {
					base, haveBase = s.sb.dataChecksumBase(seq), true
				}
				sum, summed = base^bs, true
			}
		}
		if !summed {
			b, err := s.get(jb)
			if err != nil {
				return err
			}
			if v1 {
				*crc = crc32Be(*crc, b)
			}
			if verify {
				sum = s.sb.DataChecksum(seq, b)
			}
		}
		if verify {
			if !v3 {
				sum &= 0xFFFF
			}
			if sum != t.Checksum {
				tx.Skipped = append(tx.Skipped, lb)
				continue
			}
		}
		tx.Blocks = append(tx.Blocks, lb)
	}
	return nil
}

// v1CommitOK applies the kernel's checksum v1 test: the commit carries the
// running crc32_be, or says it carries none.
func v1CommitOK(c *Commit, crc uint32) bool {
	if c.ChecksumType == ChecksumTypeCRC32 && c.ChecksumSize == ChecksumSizeCRC32 && c.Checksum == crc {
		return true
	}
	return c.ChecksumType == 0 && c.ChecksumSize == 0 && c.Checksum == 0
}

// ReplayPlan applies the kernel's replay rules to txs (consecutive
// transactions from one Scan) and returns, for every home block that
// recovery would write, the journalled copy it would write: the last copy
// in log order, unless a revoke record in the same or a later transaction
// cancels it (jbd2_journal_test_revoke: a revoke with tid >= the copy's tid
// wins).
func ReplayPlan(txs []Transaction) map[uint64]LoggedBlock {
	rv := Revocations(txs)
	plan := map[uint64]LoggedBlock{}
	for i, tx := range txs {
		for _, lb := range tx.Blocks {
			if rv.Cancels(lb.Home, i) {
				continue
			}
			plan[lb.Home] = lb
		}
	}
	return plan
}

// RevokeIndex holds, for each home block the revoke records of a run of
// consecutive transactions name, the index (in the run) of the last
// transaction revoking it.
type RevokeIndex map[uint64]int

// Revocations indexes the revoke records of txs; nil when there are none
// (the usual case).
func Revocations(txs []Transaction) RevokeIndex {
	var rv RevokeIndex
	for i, tx := range txs {
		for _, r := range tx.Revoked {
			if rv == nil {
				rv = RevokeIndex{}
			}
			rv[r] = i
		}
	}
	return rv
}

// Cancels reports whether a revoke record cancels a copy of home block h
// logged by the run's ith transaction. The kernel's recovery
// (jbd2_journal_test_revoke) skips a copy when a record for its block has a
// tid at or after the copy's: a transaction's revoke records cancel its own
// copies as well as earlier ones, whatever their order in the log.
func (rv RevokeIndex) Cancels(h uint64, i int) bool {
	r, ok := rv[h]
	return ok && r >= i
}
