package ext4

import (
	"cmp"
	"slices"
	"sort"

	"github.com/indelible-worm/indelible/revfs/ext4/layout"
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
	roleJournal                        // inode-table block of the journal inode, or a block of its extent tree
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
//
// The roles of the superblock, the descriptor table and the block bitmaps
// (static: the engine refuses any layout change) and the spans of those and
// of the journal are built once; a reindex, which follows every change to
// the model (every applied jbd2 transaction), only replaces the roles of the
// tracked inodes' blocks from the previous reindex. Rebuilding everything
// made each change cost, in time and garbage, a map entry per block group
// (8192 on a 1 TiB image).
func (e *Engine) reindex() {
	e.dirty = false
	if len(e.held) > 0 {
		e.settleHeld(0, 0)
	}
	if e.staticRoles == nil {
		e.buildStatic()
		e.buildStaticSpans()
	}
	if (e.jnl != nil) != e.staticJnl {
		// The journal's roles and spans are static too, once it is open.
		e.buildStatic()
		e.buildStaticSpans()
	}
	roles := e.roles
	// Undo the previous reindex's roles of tracked inodes' blocks.
	oldDyn := e.dynBlocks
	for _, b := range oldDyn {
		if s, ok := e.staticRoles[b]; ok {
			roles[b] = s
		} else {
			delete(roles, b)
		}
	}
	var dyn []uint64
	add := func(b uint64, r role) {
		cur := roles[b]
		// Never append into a slice shared with staticRoles.
		roles[b] = append(cur[:len(cur):len(cur)], r)
		dyn = append(dyn, b)
	}
	data := e.data[:0]
	runs := e.dataRuns[:0] // where each file's spans start in data
	for _, list := range [][]*tracked{e.files, e.dirs} {
		for _, t := range list {
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
			runs = append(runs, len(data))
			for _, m := range t.view.maps {
				data = append(data, dataSpan{phys: m.Physical, n: m.Len, logical: m.Logical, unwritten: m.Unwritten, file: t})
			}
			for _, m := range e.sealedUncovered(t) {
				data = append(data, dataSpan{phys: m.Physical, n: m.Len, logical: m.Logical, unwritten: m.Unwritten, file: t})
			}
		}
	}
	e.dynBlocks = dyn
	e.dataRuns = runs
	data, e.dataSpare = sortDataSpans(data, runs, e.dataSpare)
	e.data = data
	if cap(e.dataEnd) < len(data) {
		e.dataEnd = make([]uint64, len(data))
	}
	e.dataEnd = e.dataEnd[:len(data)]
	for i, d := range data {
		e.dataEnd[i] = d.phys + d.n
		if i > 0 {
			e.dataEnd[i] = max(e.dataEnd[i], e.dataEnd[i-1])
		}
	}

	// The watched spans: the static ones, the tracked metadata blocks
	// (few: sorted here) and the data spans (sorted above), merged.
	meta := make([]span, 0, len(dyn))
	for _, b := range dyn {
		meta = append(meta, span{b, b + 1})
	}
	slices.SortFunc(meta, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	dataSpans := make([]span, 0, len(data))
	for _, d := range data {
		dataSpans = append(dataSpans, span{d.phys, d.phys + d.n})
	}
	e.watched = mergeSpans(e.watched[:0], e.staticSpans, mergeSpans(nil, meta, dataSpans))

	// Drop held versions of blocks no tracked inode refers to any more.
	// meta holds no bitmaps: a sweep costs the tracked blocks and the
	// descriptor table. homeWrote is only ever set for blocks with roles,
	// and static roles never go, so only the previous dynamic blocks can
	// have lost theirs.
	for b := range e.meta {
		if _, ok := roles[b]; !ok {
			delete(e.meta, b)
		}
	}
	for _, b := range oldDyn {
		if _, ok := roles[b]; !ok {
			delete(e.homeWrote, b)
		}
	}
}

// sortDataSpans sorts data by physical block. The spans come as runs, one
// per file (runs holds where each starts), each in logical order, which is
// nearly always physical order too: a reindex follows every applied jbd2
// transaction, and sorting the whole list each time was most of its cost.
// Each run is sorted on its own only if it is not already, then the runs
// are merged pairwise, through spare (returned for reuse).
func sortDataSpans(data []dataSpan, runs []int, spare []dataSpan) ([]dataSpan, []dataSpan) {
	byPhys := func(a, b dataSpan) int { return cmp.Compare(a.phys, b.phys) }
	bounds := make([]int, 0, len(runs)+1)
	for i, start := range runs {
		end := len(data)
		if i+1 < len(runs) {
			end = runs[i+1]
		}
		if start == end {
			continue
		}
		if r := data[start:end]; !slices.IsSortedFunc(r, byPhys) {
			slices.SortFunc(r, byPhys)
		}
		bounds = append(bounds, start)
	}
	bounds = append(bounds, len(data))
	if cap(spare) < len(data) {
		spare = make([]dataSpan, len(data))
	}
	spare = spare[:len(data)]
	src, dst := data, spare
	for len(bounds) > 2 {
		next := bounds[:0:0]
		for i := 0; i+1 < len(bounds); i += 2 {
			lo, mid := bounds[i], bounds[i+1]
			hi := mid
			if i+2 < len(bounds) {
				hi = bounds[i+2]
			}
			a, b, k := lo, mid, lo
			for a < mid && b < hi {
				if src[b].phys < src[a].phys {
					dst[k] = src[b]
					b++
				} else {
					dst[k] = src[a]
					a++
				}
				k++
			}
			k += copy(dst[k:], src[a:mid])
			copy(dst[k:], src[b:hi])
			next = append(next, lo)
		}
		next = append(next, len(data))
		bounds = next
		src, dst = dst, src
	}
	return src, dst
}

// buildStatic builds the roles that never change: the primary superblock,
// the group descriptor table, the block bitmaps, and the blocks that say
// where the journal lies (the journal inode's record and extent tree: the
// engine follows the log where Open found it, so any change to them is a
// layout change, journal.checkInode).
func (e *Engine) buildStatic() {
	st := map[uint64][]role{}
	add := func(b uint64, r role) { st[b] = append(st[b], r) }
	add(e.sbBlock, role{kind: roleSuper})
	for b := e.gdtFirst; b < e.gdtFirst+e.gdtCount; b++ {
		add(b, role{kind: roleGroupDesc})
	}
	for b := range e.bitmapG {
		add(b, role{kind: roleBitmap})
	}
	if j := e.jnl; j != nil {
		for _, b := range j.mapBlocks() {
			add(b, role{kind: roleJournal})
		}
	}
	e.staticRoles = st
	e.roles = make(map[uint64][]role, len(st))
	for b, rs := range st {
		e.roles[b] = rs
	}
	e.dynBlocks = nil
}

// buildStaticSpans sorts and merges the spans of the static roles and of
// the journal (the journal inode's map is fixed too: changing it is a
// layout change).
func (e *Engine) buildStaticSpans() {
	var spans []span
	for b := range e.staticRoles {
		spans = append(spans, span{b, b + 1})
	}
	if e.jnl != nil {
		for _, m := range e.jnl.maps {
			spans = append(spans, span{m.Physical, m.Physical + m.Len})
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	e.staticSpans = mergeSpans(nil, spans, nil)
	e.staticJnl = e.jnl != nil
}

// mergeSpans appends to dst the union of two lists of spans sorted by
// start, merging spans that overlap or touch.
func mergeSpans(dst, a, b []span) []span {
	for len(a) > 0 || len(b) > 0 {
		var s span
		if len(b) == 0 || (len(a) > 0 && a[0].start <= b[0].start) {
			s, a = a[0], a[1:]
		} else {
			s, b = b[0], b[1:]
		}
		if k := len(dst); k > 0 && s.start <= dst[k-1].end {
			dst[k-1].end = max(dst[k-1].end, s.end)
			continue
		}
		dst = append(dst, s)
	}
	return dst
}

// sealedUncovered returns the parts of a file's committed block map that
// its current view does not map to the same blocks: the committed range
// under a tree node the host has not written yet, or remapped by a write
// the honeypot response let land. Those blocks stay watched as the file's
// data, so that a write changing committed bytes is judged even while the
// view cannot say whose they are (a host that points the root at an
// unwritten index block would otherwise unwatch the whole committed range,
// overwrite it, and then write a leaf restoring the old map).
func (e *Engine) sealedUncovered(t *tracked) []layout.Mapping {
	if t.committed <= 0 || len(t.sealed) == 0 {
		return nil
	}
	n := e.blocksFor(t.committed)
	var out []layout.Mapping
	for _, d := range mapDiffs(normalise(t.view.maps, n), t.sealed, n) {
		for _, m := range t.sealed {
			lo, hi := max(m.Logical, d.lo), min(m.Logical+m.Len, d.hi)
			if lo >= hi {
				continue
			}
			out = append(out, layout.Mapping{Logical: lo, Physical: m.Physical + lo - m.Logical, Len: hi - lo, Unwritten: m.Unwritten})
		}
	}
	return out
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
