package ext4

import (
	"cmp"
	"slices"
	"sort"
)

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

// keepWritten and forgetWritten are settleDropped's two fixed answers.
func keepWritten(droppedSpan, uint64, uint64) bool   { return false }
func forgetWritten(droppedSpan, uint64, uint64) bool { return true }

// maxDropped bounds Engine.dropped: past it, the span with the lowest
// blocks is forgotten at once, as if claimed.
const maxDropped = 1024

// drop sets blocks aside (see above). Engine.dropped is kept sorted by
// physical block and its spans disjoint: a block set aside again replaces
// its older record.
func (e *Engine) drop(s droppedSpan) {
	if s.n == 0 {
		return
	}
	e.settleDropped(s.phys, s.n, keepWritten)
	if len(e.dropped) >= maxDropped {
		old := e.dropped[0]
		e.written.Remove(old.phys, old.n)
		e.dropped = slices.Delete(e.dropped, 0, 1)
	}
	i, _ := slices.BinarySearchFunc(e.dropped, s.phys, func(d droppedSpan, p uint64) int { return cmp.Compare(d.phys, p) })
	e.dropped = slices.Insert(e.dropped, i, s)
}

// markWritten records that the host wrote blocks [first, first+n): they
// count as written, whoever maps them later.
func (e *Engine) markWritten(first, n uint64) {
	e.written.Add(first, n)
	if len(e.held) > 0 {
		e.settleHeld(first, n)
	}
	if len(e.dropped) > 0 {
		e.settleDropped(first, n, keepWritten)
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
	// Blocks t set aside that now lie past its size were dropped for
	// good (a truncate): a later append over them must write them again.
	// The size is the inode's, known even when parts of its tree are not.
	if !nv.freed() {
		end := e.blocksFor(nv.size)
		for _, s := range slices.Clone(e.dropped) {
			if !s.tree && s.ino == t.ino && s.logical+s.n > end {
				lo := s.phys + max(s.logical, end) - s.logical
				e.settleDropped(lo, s.phys+s.n-lo, forgetWritten)
			}
		}
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
// written. It costs a binary search when nothing set aside overlaps.
func (e *Engine) settleDropped(first, n uint64, forget func(s droppedSpan, lo, hi uint64) bool) {
	end := first + n
	i := sort.Search(len(e.dropped), func(i int) bool { return e.dropped[i].phys+e.dropped[i].n > first })
	j := i
	for j < len(e.dropped) && e.dropped[j].phys < end {
		j++
	}
	if i == j {
		return
	}
	var rest []droppedSpan
	for _, s := range e.dropped[i:j] {
		lo, hi := max(s.phys, first), min(s.phys+s.n, end)
		if forget(s, lo, hi) {
			e.written.Remove(lo, hi-lo)
		}
		if s.phys < lo {
			rest = append(rest, droppedSpan{phys: s.phys, n: lo - s.phys, logical: s.logical, ino: s.ino, tree: s.tree})
		}
		if hi < s.phys+s.n {
			rest = append(rest, droppedSpan{phys: hi, n: s.phys + s.n - hi, logical: s.logical + hi - s.phys, ino: s.ino, tree: s.tree})
		}
	}
	e.dropped = slices.Replace(e.dropped, i, j, rest...)
}
