package ext4

// Blocks a tracked inode stopped using are not forgotten at once: they are
// set aside (Engine.dropped) and forgotten only when something else claims
// them.
//
// Without a journal, ext4 writes an inode and its extent blocks one by one,
// in any order, each as it stood when it was written: a view joins an
// inode and tree blocks of different moments. The kernel's own extent
// changes make such a mix map fewer blocks than either moment did. A file
// growing through unwritten extents (the default dioread_nolock writeback)
// goes from 4 extents in the inode to a leaf block and back to the inode
// when the conversions merge them (ext4_ext_try_to_merge_up), over and
// over; a new inode pointing at the leaf, seen with the leaf's previous
// version, lacks the blocks appended since. Forgetting those blocks at once
// loses data the host wrote once and will not write again: sealing stalls
// at "not written since allocation" for good (I3).
//
// Forgetting exists for the block's next owner: ext4 may hand a freed block
// out again before the device sees its bitmap bit clear, and the new owner
// must write it before its bytes count. So a set-aside block is forgotten
// when a view maps it anywhere else (another inode, another logical block,
// data where it was a tree block or the reverse), and kept when the inode
// that dropped it maps it again as it did (its own bytes, at the same
// place). A host write to it ends the question: it is written.

// droppedSpan is a run of physical blocks a tracked inode stopped using:
// data mapped from logical block logical, or one tree block.
type droppedSpan struct {
	phys, n uint64
	logical uint64 // data: the logical block at phys
	ino     uint64
	tree    bool
}

// maxDropped bounds Engine.dropped: past it, the oldest span is forgotten
// at once, as if claimed.
const maxDropped = 1024

// drop sets blocks aside (see above).
func (e *Engine) drop(s droppedSpan) {
	if s.n == 0 {
		return
	}
	if len(e.dropped) >= maxDropped {
		old := e.dropped[0]
		e.written.Remove(old.phys, old.n)
		e.dropped = append(e.dropped[:0], e.dropped[1:]...)
	}
	e.dropped = append(e.dropped, s)
}

// markWritten records that the host wrote blocks [first, first+n): they
// count as written, whoever maps them later.
func (e *Engine) markWritten(first, n uint64) {
	e.written.Add(first, n)
	if len(e.dropped) > 0 {
		e.settleDropped(first, n, func(droppedSpan, uint64, uint64) bool { return false })
	}
}

// claimDropped settles the set-aside blocks that view nv of t maps: kept
// where t maps them as it did before dropping them, forgotten anywhere
// else.
func (e *Engine) claimDropped(t *tracked, nv *view) {
	if len(e.dropped) == 0 || nv.inode == nil {
		return
	}
	for _, b := range nv.tree {
		e.settleDropped(b, 1, func(s droppedSpan, _, _ uint64) bool {
			return !(s.tree && s.ino == t.ino)
		})
	}
	if t.isDir {
		return
	}
	for _, m := range nv.maps {
		e.settleDropped(m.Physical, m.Len, func(s droppedSpan, lo, _ uint64) bool {
			same := !s.tree && s.ino == t.ino &&
				s.logical+lo-s.phys == m.Logical+lo-m.Physical
			return !same
		})
	}
}

// settleDropped removes [first, first+n) from the set-aside spans; where
// forget says so for a span's overlap [lo, hi), those blocks are no longer
// written.
func (e *Engine) settleDropped(first, n uint64, forget func(s droppedSpan, lo, hi uint64) bool) {
	end := first + n
	out := e.dropped[:0]
	var cut []droppedSpan
	for _, s := range e.dropped {
		lo, hi := max(s.phys, first), min(s.phys+s.n, end)
		if lo >= hi {
			out = append(out, s)
			continue
		}
		if forget(s, lo, hi) {
			e.written.Remove(lo, hi-lo)
		}
		if s.phys < lo {
			out = append(out, droppedSpan{phys: s.phys, n: lo - s.phys, logical: s.logical, ino: s.ino, tree: s.tree})
		}
		if hi < s.phys+s.n {
			cut = append(cut, droppedSpan{phys: hi, n: s.phys + s.n - hi, logical: s.logical + hi - s.phys, ino: s.ino, tree: s.tree})
		}
	}
	e.dropped = append(out, cut...)
}
