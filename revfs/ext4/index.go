package ext4

import (
	"sort"
)

// roleKind says why a block is watched.
type roleKind int

const (
	roleSuper      roleKind = iota + 1 // primary superblock
	roleGroupDesc                      // group descriptor table
	roleBitmap                         // a group's block bitmap (frees)
	roleInodeTable                     // inode-table block holding a tracked inode
	roleTree                           // extent tree block of a tracked inode
	roleDir                            // directory block of a watched parent directory
)

type role struct {
	kind  roleKind
	owner *tracked // roleInodeTable, roleTree, roleDir
}

// span is a watched range of blocks [start, end).
type span struct{ start, end uint64 }

// dataSpan maps a run of a protected file's physical blocks back to the
// file's logical blocks.
type dataSpan struct {
	phys, n, logical uint64
	unwritten        bool
	file             *tracked
}

func (e *Engine) reindexIfDirty() {
	if e.dirty {
		e.reindex()
	}
}

// reindex rebuilds the block roles, the data index and the sorted watched
// spans from the model, and drops held blocks nothing refers to any more.
func (e *Engine) reindex() {
	e.dirty = false
	roles := map[uint64][]role{}
	add := func(b uint64, r role) { roles[b] = append(roles[b], r) }
	add(e.sbBlock, role{kind: roleSuper})
	for b := e.gdtFirst; b < e.gdtFirst+e.gdtCount; b++ {
		add(b, role{kind: roleGroupDesc})
	}
	for b := range e.bitmapG {
		add(b, role{kind: roleBitmap})
	}
	var data []dataSpan
	for _, t := range append(append([]*tracked(nil), e.files...), e.dirs...) {
		add(t.inoBlock, role{kind: roleInodeTable, owner: t})
		for _, b := range t.view.tree {
			add(b, role{kind: roleTree, owner: t})
		}
		if t.isDir {
			for _, b := range t.view.dirBlocks {
				add(b, role{kind: roleDir, owner: t})
			}
			continue
		}
		for _, m := range t.view.maps {
			data = append(data, dataSpan{phys: m.Physical, n: m.Len, logical: m.Logical, unwritten: m.Unwritten, file: t})
		}
	}
	sort.Slice(data, func(i, j int) bool { return data[i].phys < data[j].phys })
	e.roles, e.data = roles, data
	e.dataEnd = make([]uint64, len(data))
	for i, d := range data {
		e.dataEnd[i] = d.phys + d.n
		if i > 0 {
			e.dataEnd[i] = max(e.dataEnd[i], e.dataEnd[i-1])
		}
	}

	var spans []span
	for b := range roles {
		spans = append(spans, span{b, b + 1})
	}
	for _, d := range data {
		spans = append(spans, span{d.phys, d.phys + d.n})
	}
	if e.jnl != nil {
		for _, m := range e.jnl.maps {
			spans = append(spans, span{m.Physical, m.Physical + m.Len})
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	merged := spans[:0]
	for _, s := range spans {
		if k := len(merged); k > 0 && s.start <= merged[k-1].end {
			merged[k-1].end = max(merged[k-1].end, s.end)
			continue
		}
		merged = append(merged, s)
	}
	e.watched = merged

	// Drop held versions of blocks no tracked inode refers to any more.
	for b := range e.meta {
		if _, ok := roles[b]; !ok {
			delete(e.meta, b)
		}
	}
	for b := range e.homeWrote {
		if _, ok := roles[b]; !ok {
			delete(e.homeWrote, b)
		}
	}
}

// dataAt returns the data spans overlapping physical blocks [first, last].
// A hostile image may map one block into several files or twice into one,
// so spans may overlap: dataEnd (running maximum of span ends) lets the
// walk stop as soon as no earlier span can reach first.
func (e *Engine) dataAt(first, last uint64) []dataSpan {
	i := sort.Search(len(e.data), func(i int) bool { return e.data[i].phys > last })
	var out []dataSpan
	for j := i - 1; j >= 0 && e.dataEnd[j] > first; j-- {
		if e.data[j].phys+e.data[j].n > first {
			out = append(out, e.data[j])
		}
	}
	return out
}

// overlap clips the span to physical blocks [first, last].
func (d dataSpan) overlap(first, last uint64) (lo, hi uint64, ok bool) {
	lo, hi = max(first, d.phys), min(last+1, d.phys+d.n)
	return lo, hi, lo < hi
}
