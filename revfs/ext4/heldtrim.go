package ext4

import (
	"github.com/indelible-worm/indelible/revfs"
)

// Without a journal, a TRIM of a protected file's extent tree block is
// held: the device accepts it and leaves the block as it is
// (revfs.TrimHolder).
//
// ext4 folds a tree of at most four extents back into its inode
// (ext4_ext_try_to_merge_up, after an unwritten-extent conversion merges
// two extents) and frees the leaf; without a journal the block is free at
// once, and with -o discard ext4 trims it there and then
// (ext4_mb_clear_bb: ext4_issue_discard), while the inode that stops
// pointing at it is still only in the host's cache. The device sees the
// TRIM of a block the newest inode it has still uses, before that inode.
// A TRIM promises nothing about what the block reads afterwards
// (REQ_OP_DISCARD; zeroing is WRITE_ZEROES, which stays refused), so the
// device may leave the block alone: the image keeps the leaf the model
// holds, and the host loses nothing, since ext4 never reads a block it
// freed.
//
// A held TRIM whose block the inode still uses once a FLUSH has passed
// since is reported as an unknown-tree range of the file (unknownMap): the
// device raises it when it stays (StallUnknownTree, worm/stalls.go), which
// is what a TRIM an attacker sends to a protected leaf comes to. The
// honest kernel writes the inode without the leaf, or writes the leaf again
// (the block allocated anew), and the hold ends.

// heldTrim is a TRIM of block b of owner's tree the device did not carry
// out (Engine.held).
type heldTrim struct {
	owner *tracked
	epoch uint64 // Engine.epoch at the TRIM
}

// maxHeldTrims bounds Engine.held: past it, a TRIM is judged as before
// (CheckDiscard). The honest kernel has one per tree folded back since the
// owner's inode was last written.
const maxHeldTrims = 1024

var _ revfs.TrimHolder = (*Engine)(nil)

// HoldTrim implements revfs.TrimHolder: without a journal, a TRIM that
// covers extent tree blocks of protected files and nothing else the
// engine watches (no other metadata, no committed data) is held.
func (e *Engine) HoldTrim(off, length int64) bool {
	if e.jnl != nil || length <= 0 || off < 0 {
		return false
	}
	e.reindexIfDirty()
	fsEnd := int64(e.blocks) * e.bs
	if off >= fsEnd {
		return false
	}
	end := min(off+length, fsEnd)
	first, last := uint64(off/e.bs), uint64((end-1)/e.bs)
	for _, d := range e.dataAt(first, last) {
		lo, _, _ := d.overlap(first, last)
		if int64(d.logical+lo-d.phys)*e.bs < d.file.committed {
			return false // CheckDiscard raises it
		}
	}
	blocks := e.metaBlocksIn(first, last)
	if len(blocks) == 0 || len(e.held)+len(blocks) > maxHeldTrims {
		return false
	}
	owners := make([]*tracked, len(blocks))
	for i, b := range blocks {
		for _, r := range e.roles[b] {
			if r.kind != roleTree || r.owner == nil || r.owner.isDir || (owners[i] != nil && owners[i] != r.owner) {
				return false
			}
			owners[i] = r.owner
		}
		if owners[i] == nil {
			return false
		}
	}
	e.mut++
	if e.held == nil {
		e.held = map[uint64]heldTrim{}
	}
	for i, b := range blocks {
		e.held[b] = heldTrim{owner: owners[i], epoch: e.epoch}
		e.log.Info("ext4: trim of a protected file's extent tree block held (no journal: the inode that stops using it comes later)", "block", b, "file", owners[i].ino)
	}
	return true
}

// settleHeld ends the holds whose block its owner no longer uses, and,
// when written is not empty, those the host wrote again.
func (e *Engine) settleHeld(first, n uint64) {
	for b, h := range e.held {
		if (n > 0 && b >= first && b < first+n) || h.owner.view == nil || !h.owner.view.usesTree(b) {
			delete(e.held, b)
		}
	}
}

// heldUnknown reports whether f's view still uses a block whose TRIM was
// held before the last FLUSH.
func (e *Engine) heldUnknown(f *tracked) bool {
	for b, h := range e.held {
		if h.owner == f && h.epoch < e.epoch && f.view != nil && f.view.usesTree(b) {
			return true
		}
	}
	return false
}
