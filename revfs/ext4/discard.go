package ext4

import (
	"bytes"
	"encoding/binary"
	"slices"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
)

// The discard response and the journal.
//
// For a home write the device core restores the blamed bytes of the
// request itself, and the image keeps the protected version. A violation
// that arrives through the journal is different: it is raised by the
// commit block, but the offending bytes are those of a journalled copy the
// host wrote earlier, already in the image. Dropping the commit block keeps
// the copy from ever being replayed, but it also ends the valid log there:
// every later transaction is lost to a replay (the kernel's recovery, or
// audit's reader, stops at the first missing commit), and the engine loses
// track of the log. So the engine repairs the transaction instead, before
// its commit block lands:
//
//   - the protected bytes of every copy a replay would write (the last copy
//     of each home block in the transactions the commit block completes)
//     are restored from the model: the inode record, the extent or
//     directory block, the group descriptor, the committed bytes of a
//     journalled data block — whatever range a violation blamed;
//   - the copy is stored escaped or not as its new first four bytes
//     require, and its descriptor tag (escape flag, csum v2/v3 checksum)
//     and the descriptor's tail checksum are recomputed, so that a replay
//     accepts the copy (a copy failing its tag checksum fails the kernel's
//     recovery, and with it the mount).
//
// The repaired transaction is checked again, both as a replay sees it and
// as the engine applies it; the restoration runs until neither raises a
// violation (restoring an inode record brings its old extent tree back
// under check) or gives up. It gives up, and the device core drops the
// commit block as for any other write, when a blamed block is not carried
// by a copy, when restoring stops making progress, or with checksum v1
// (FeatureCompatChecksum: the commit block holds a CRC over every copy,
// which this does not rewrite). The commit block itself lands unchanged:
// with csum v2/v3 its checksum covers only itself.
//
// A transaction whose commit block the host wrote before the rest of it is
// judged at the write that completes it (journal.checkPending), which may
// be a copy, a descriptor or a revoke block: the repair is the same, and
// the blocks of the transaction that the request carries land repaired
// with it. The commit block is already in the image; with csum v2/v3 it
// needs no rewrite, and with checksum v1 the repair is made only when the
// commit blocks carry no CRC (the kernel then checks none); otherwise the
// device drops the blamed bytes, which breaks the CRC, and a replay stops
// before the transaction.
//
// This is sound because a replay writes exactly the copies the check sees,
// and after the repair none of them changes protected data: the image
// replayed shows the committed file, like the model. Everything outside the
// blamed ranges stays as the host's kernel wrote it, as with a discarded
// home write. The device core writes the repaired blocks and makes them
// durable before the commit block: a crash in between leaves a transaction
// without its commit, which no replay applies.

// maxRepairRounds bounds the restore-and-check loop of one repair. Each
// round restores what the last check blamed; a record restored can expose
// an extent block, which exposes nothing further, so a handful suffices.
const maxRepairRounds = 8

// blamed is a byte range [lo, hi) of home block b that a violation blamed,
// and whether the change checked carries a journalled copy of b.
type blamed struct {
	b       uint64
	lo, hi  int
	carried bool
}

// loggedAt is the latest copy of a home block in a run of transactions and
// the index of the transaction holding it.
type loggedAt struct {
	lb jbd2.LoggedBlock
	tx int
}

// RepairDiscard applies the discard response to the violations vs that
// the write of p at off raised through jbd2 commit blocks, or by
// completing transactions whose commit block landed first (see
// journal.checkPending; the copies and descriptors the request carries are
// repaired in the request it returns): it repairs the
// committed transactions' journalled copies as described above, writing
// every repaired log block that lies outside the request through write,
// and returns the request to write instead (p, or a copy with the repaired
// blocks that lie inside it) and the violations it did not repair, which
// the caller handles as for any write. The caller must make the repaired
// blocks durable before the request lands. The model does not change (the
// journal cache only forgets the blocks rewritten): the Wrote of the
// commit block reads the repaired log from the image and applies it.
//
// Without a journal there are no copies to repair; what lies outside the
// request is a directory block that already lost a protected file's entry
// when the request is the unlink's inode write: the entry is put back into
// it, and the block applied to the model (restoreGone, unlink.go).
func (e *Engine) RepairDiscard(off int64, p []byte, vs []revfs.Violation, write func(b []byte, off int64) error) ([]byte, []revfs.Violation, error) {
	j := e.jnl
	if j == nil {
		return p, vs, e.restoreGone(vs, write)
	}
	if len(vs) == 0 || len(p) == 0 || off < 0 {
		return p, vs, nil
	}
	v1 := j.sb.HasChecksumV1()
	if v1 && !j.pending {
		return p, vs, nil
	}
	e.reindexIfDirty()
	fsEnd := int64(e.blocks) * e.bs
	if off >= fsEnd {
		return p, vs, nil
	}
	w := &hostWrite{e: e, off: off, end: min(off+int64(len(p)), fsEnd), p: p}
	w.p = p[:w.end-off]
	w.first, w.last = uint64(off/e.bs), uint64((w.end-1)/e.bs)

	patches := map[uint32][]byte{} // journal block -> repaired contents, as stored
	read := func(jb uint32) ([]byte, error) {
		if b, ok := patches[jb]; ok {
			return bytes.Clone(b), nil
		}
		return j.readJ(jb, w)
	}
	handled := make([]bool, len(vs))
	repaired := false
	covered, coveredSeq := false, uint32(0) // as in journal.process
	for pb := w.first; pb <= w.last && !v1; pb++ {
		jb, ok := j.jblockOf(pb)
		if !ok || jb == 0 {
			continue
		}
		h, ok := jbd2.ParseHeader(w.block(pb))
		if !ok || h.BlockType != jbd2.BlockTypeCommit {
			continue
		}
		lo, hi := int64(pb)*e.bs, int64(pb+1)*e.bs
		var mine []int
		for i, v := range vs {
			if !handled[i] && v.Off >= lo && v.Off+v.Len <= hi {
				mine = append(mine, i)
			}
		}
		if len(mine) == 0 {
			continue
		}
		txs, _, nseq := j.find(h.Sequence, read, nil, w) // read sees the repairs: no cached sums
		if len(txs) == 0 {
			continue // nothing this commit block completes raised them
		}
		covered, coveredSeq = true, nseq
		if !j.repair(txs, read, patches) {
			e.log.Warn("ext4: discard: the transaction cannot be repaired; its commit block is dropped", "tid", h.Sequence, "transactions", len(txs))
			continue
		}
		e.log.Info("ext4: discard: journalled copies repaired", "tid", h.Sequence, "transactions", len(txs))
		for _, i := range mine {
			handled[i] = true
		}
		repaired = true
	}
	// A write completing transactions whose commit block came first
	// (journal.checkPending): the same repair, with the copies and the
	// descriptors that lie in the request landing repaired with it.
	if txs, lo, hi := j.pendingTxs(w, read); len(txs) > 0 && !(covered && tidBefore(txs[len(txs)-1].Sequence, coveredSeq)) {
		var mine []int
		for i, v := range vs {
			if !handled[i] && v.Off >= lo && v.Off+v.Len <= hi {
				mine = append(mine, i)
			}
		}
		switch {
		case len(mine) == 0:
		case v1 && v1Summed(txs):
			// The commit block, already in the image, holds a CRC over
			// the copies: dropping the blamed bytes breaks it, and a
			// replay stops before these transactions.
		case !j.repair(txs, read, patches):
			e.log.Warn("ext4: discard: the transaction cannot be repaired; the blamed bytes of the write are dropped", "first", txs[0].Sequence, "last", txs[len(txs)-1].Sequence)
		default:
			e.log.Info("ext4: discard: journalled copies repaired", "first", txs[0].Sequence, "last", txs[len(txs)-1].Sequence)
			for _, i := range mine {
				handled[i] = true
			}
			repaired = true
		}
	}
	if !repaired {
		return p, vs, nil
	}
	// The engine's journal cache holds what the host wrote to these
	// blocks: from now on they are read from the image, repaired.
	for jb := range patches {
		j.cacheDrop(jb)
	}
	q, cloned := p, false
	jbs := make([]uint32, 0, len(patches))
	for jb := range patches {
		jbs = append(jbs, jb)
	}
	slices.Sort(jbs)
	for _, jb := range jbs {
		pb, _ := j.physOf(jb)
		dev := int64(pb) * e.bs
		b := patches[jb]
		if lo, hi := max(dev, w.off), min(dev+e.bs, w.end); lo < hi {
			if !cloned {
				q, cloned = bytes.Clone(p), true
			}
			copy(q[lo-off:hi-off], b[lo-dev:hi-dev])
			if lo == dev && hi == dev+e.bs {
				continue // wholly inside the request: it lands with it
			}
		}
		if err := write(b, dev); err != nil {
			return nil, nil, err
		}
	}
	var rest []revfs.Violation
	for i, v := range vs {
		if !handled[i] {
			rest = append(rest, v)
		}
	}
	return q, rest, nil
}

// v1Summed reports whether a commit block of txs carries a checksum v1
// CRC (a checksum v1 commit may carry none, which the kernel accepts while
// no earlier commit of the log carried one).
func v1Summed(txs []jbd2.Transaction) bool {
	for _, tx := range txs {
		if tx.Commit.ChecksumType != 0 || tx.Commit.ChecksumSize != 0 || tx.Commit.Checksum != 0 {
			return true
		}
	}
	return false
}

// repair restores the protected bytes of the copies txs would replay and
// stages the repaired log blocks in patches. It reports false, staging
// nothing, when the transactions cannot be made harmless this way.
func (j *journal) repair(txs []jbd2.Transaction, read func(uint32) ([]byte, error), patches map[uint32][]byte) bool {
	e := j.e
	fixed := map[uint64][]byte{} // home block -> repaired copy, unescaped
	for round := 0; ; round++ {
		vs, spots, get := j.recheck(txs, read, fixed)
		if len(vs) == 0 {
			break
		}
		if round == maxRepairRounds {
			return false
		}
		progress := false
		for _, v := range vs {
			if v.Off < 0 || v.Off >= int64(len(spots)) {
				return false
			}
			s := spots[v.Off]
			if !s.carried || s.lo < 0 || s.hi > int(e.bs) || s.lo >= s.hi {
				return false
			}
			cur, ok := fixed[s.b]
			if !ok {
				d, ok := get(s.b)
				if !ok {
					return false
				}
				cur = bytes.Clone(d)
			}
			old, err := e.modelBlock(s.b)
			if err != nil {
				return false
			}
			if !bytes.Equal(cur[s.lo:s.hi], old[s.lo:s.hi]) {
				copy(cur[s.lo:s.hi], old[s.lo:s.hi])
				progress = true
			}
			fixed[s.b] = cur
		}
		if !progress {
			return false
		}
	}
	if len(fixed) == 0 {
		return false // nothing to restore: the violations came from elsewhere
	}
	return j.stage(txs, read, fixed, patches)
}

// recheck evaluates txs with the repaired copies in fixed, both as a
// replay writes them (every latest copy) and as the engine will apply them
// (copies older than a home write left out), and returns the violations
// with Off indexing the spots they blamed, and the replay view's block
// getter.
func (j *journal) recheck(txs []jbd2.Transaction, read func(uint32) ([]byte, error), fixed map[uint64][]byte) ([]revfs.Violation, []blamed, func(uint64) ([]byte, bool)) {
	var spots []blamed
	var replayGet func(uint64) ([]byte, bool)
	var out []revfs.Violation
	for _, replay := range []bool{true, false} {
		var chg *change
		rec := func(b uint64, lo, hi int) (int64, int64) {
			spots = append(spots, blamed{b: b, lo: lo, hi: hi, carried: chg.carries[b]})
			return int64(len(spots) - 1), 0
		}
		chg = j.versions(txs, read, rec, replay)
		base := chg.get
		chg.get = func(b uint64) ([]byte, bool) {
			if d, ok := fixed[b]; ok && chg.carries[b] {
				return d, true
			}
			return base(b)
		}
		if replay {
			replayGet = chg.get
		}
		vs, _ := j.judge(chg, rec)
		out = append(out, vs...)
	}
	return out, spots, replayGet
}

// replayViolations checks the copies of txs that chg, the change the
// model takes, leaves out because a home write of the same block landed in
// the same flush epoch or a later one (see journal.change). A replay writes
// them all the same, so they must not change protected data either. With
// the real kernel such a home write is older than the copy (jbd2 writes a
// block home only after the commit that logged it, and the device sees the
// commit block before it completes) or it is an attacker's: the raw write
// under the mounted filesystem that the discard response restored, while
// the host's page cache kept the attacker's block, which the kernel then
// journals. Violations already in have are not repeated.
func (j *journal) replayViolations(txs []jbd2.Transaction, read func(uint32) ([]byte, error), blame func(uint64, int, int) (int64, int64), chg *change, have []revfs.Violation) []revfs.Violation {
	if !j.shadows(txs) {
		return nil // the usual case, checked without allocating
	}
	rchg := j.versions(txs, read, blame, true)
	if len(rchg.homes) == len(chg.homes) {
		return nil // nothing left out
	}
	vs, _ := j.judge(rchg, blame)
	return unseen(vs, have)
}

// shadows reports whether a home write may make journal.change leave out
// a copy of txs (it tests every copy, not only the last of each block).
func (j *journal) shadows(txs []jbd2.Transaction) bool {
	if len(j.e.homeWrote) == 0 {
		return false
	}
	for _, tx := range txs {
		for _, lb := range tx.Blocks {
			if w, ok := j.e.homeWrote[lb.Home]; ok && w >= j.wroteEpoch(lb.JBlock) {
				return true
			}
		}
	}
	return false
}

// modelBlock is the version of home block b the model holds: the one
// whose protected bytes a repair restores.
func (e *Engine) modelBlock(b uint64) ([]byte, error) {
	if d, ok := e.meta[b]; ok {
		return d, nil
	}
	return e.readNewest(b)
}

// tagSite locates the descriptor tag of one journalled copy.
type tagSite struct {
	desc uint32 // journal block of the descriptor
	off  int    // byte offset of the tag in it
}

// stage turns the repaired copies into log blocks as jbd2 stores them:
// each copy escaped as its first bytes require, its tag's escape flag and
// checksum set, and every descriptor touched given a new tail checksum.
func (j *journal) stage(txs []jbd2.Transaction, read func(uint32) ([]byte, error), fixed map[uint64][]byte, patches map[uint32][]byte) bool {
	sb := j.sb
	latest, _ := replayCopies(txs)
	staged := map[uint32][]byte{}
	sites := map[int]map[uint32]tagSite{}
	v3 := sb.Incompat()&jbd2.FeatureIncompatCsumV3 != 0
	v2 := sb.Incompat()&jbd2.FeatureIncompatCsumV2 != 0
	homes := make([]uint64, 0, len(fixed))
	for h := range fixed {
		homes = append(homes, h)
	}
	slices.Sort(homes)
	for _, h := range homes {
		at, ok := latest[h]
		if !ok {
			return false
		}
		if sites[at.tx] == nil {
			if sites[at.tx] = j.tagSites(txs[at.tx], read); sites[at.tx] == nil {
				return false
			}
		}
		site, ok := sites[at.tx][at.lb.JBlock]
		if !ok {
			return false
		}
		stored := bytes.Clone(fixed[h])
		escape := len(stored) >= 4 && binary.BigEndian.Uint32(stored) == jbd2.JournalMagic
		if escape {
			clear(stored[:4])
		}
		staged[at.lb.JBlock] = stored
		desc, ok := staged[site.desc]
		if !ok {
			d, err := read(site.desc)
			if err != nil || len(d) != sb.BlockSize() {
				return false
			}
			desc = bytes.Clone(d) // read's result may be shared
			staged[site.desc] = desc
		}
		tag := desc[site.off:]
		flags := binary.BigEndian.Uint16(tag[6:]) &^ uint16(jbd2.TagFlagEscape)
		if escape {
			flags |= uint16(jbd2.TagFlagEscape)
		}
		binary.BigEndian.PutUint16(tag[6:], flags)
		sum := sb.DataChecksum(txs[at.tx].Sequence, stored)
		switch {
		case v3:
			binary.BigEndian.PutUint32(tag[12:], sum)
		case v2:
			binary.BigEndian.PutUint16(tag[4:], uint16(sum))
		}
	}
	if sb.HasCsumV2V3() {
		for _, tx := range sites {
			for _, s := range tx {
				d, ok := staged[s.desc]
				if !ok {
					continue
				}
				tail := len(d) - jbd2.BlockTailSize
				binary.BigEndian.PutUint32(d[tail:], sb.BlockChecksum(d, tail))
			}
		}
	}
	for jb, b := range staged {
		patches[jb] = b
	}
	return true
}

// tagSites walks one transaction from its first block to its commit block
// as jbd2's scan does and returns where the tag of each copy lies. nil
// means the log no longer reads as the transaction found.
func (j *journal) tagSites(tx jbd2.Transaction, read func(uint32) ([]byte, error)) map[uint32]tagSite {
	sb := j.sb
	sites := map[uint32]tagSite{}
	pos := tx.Start
	for n := uint32(0); n <= sb.MaxLen(); n++ {
		b, err := read(pos)
		if err != nil || len(b) != sb.BlockSize() {
			return nil
		}
		h, ok := jbd2.ParseHeader(b)
		if !ok || h.Sequence != tx.Sequence {
			return nil
		}
		switch h.BlockType {
		case jbd2.BlockTypeDescriptor:
			c := pos
			for _, off := range tagOffsets(sb, b) {
				c = sb.NextBlock(c)
				sites[c] = tagSite{desc: pos, off: off}
			}
			pos = c
		case jbd2.BlockTypeRevoke:
		case jbd2.BlockTypeCommit:
			if pos != tx.End {
				return nil
			}
			return sites
		default:
			return nil
		}
		pos = sb.NextBlock(pos)
	}
	return nil
}

// tagOffsets lists the byte offsets of a descriptor block's tags, walking
// them as jbd2.ParseDescriptor (and the kernel's count_tags) does.
func tagOffsets(sb *jbd2.Superblock, b []byte) []int {
	end := len(b)
	if sb.HasCsumV2V3() {
		end -= jbd2.BlockTailSize
	}
	n := sb.TagBytes()
	var out []int
	for off := jbd2.HeaderSize; off+n <= end; {
		out = append(out, off)
		flags := jbd2.TagFlag(binary.BigEndian.Uint16(b[off+6:]))
		off += n
		if flags&jbd2.TagFlagSameUUID == 0 {
			off += 16
		}
		if flags&jbd2.TagFlagLastTag != 0 {
			break
		}
	}
	return out
}
