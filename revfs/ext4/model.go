package ext4

import (
	"fmt"
	"sort"
	"time"

	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// tracked is an inode the engine follows: a protected file or the parent
// directory of one.
type tracked struct {
	ino      uint64
	isDir    bool
	path     string
	inoBlock uint64 // inode-table block holding the record
	inoOff   int    // record offset in that block
	view     *view
	parent   *tracked // files: the directory holding the entry

	// files only
	committed      int64            // sealed bytes
	sealed         []layout.Mapping // block map of the committed range, normalised
	coherent       int64
	tail           tailMark
	journalled     bool
	dataJournalled bool
	lastTouch      time.Time
}

// lrange is a logical block range [lo, hi).
type lrange struct{ lo, hi uint64 }

// view is what a set of block versions says about one inode.
type view struct {
	inode   *layout.Inode // nil when the record does not decode
	maps    []layout.Mapping
	unknown []lrange // logical ranges under tree nodes not (yet) readable
	tree    []uint64 // every tree block referenced, known or not
	used    map[uint64][]byte
	err     error  // watched metadata that no longer parses
	errAt   uint64 // the block where err was found

	// directories
	dirBlocks  []uint64
	entries    map[uint32]int    // inode -> number of entries naming it
	entryBlock map[uint32]uint64 // inode -> a block holding an entry for it
	dirUnknown bool              // a directory block is not readable yet
}

// source returns the newest version of a block and whether it is trusted:
// true for versions the host wrote or committed (or the engine already
// holds), false for bytes merely found in the image, which may be stale.
type source func(b uint64) ([]byte, bool, error)

func (v *view) freed() bool {
	return v.inode != nil && (v.inode.Mode == 0 || v.inode.LinksCount == 0)
}

// lookup finds the mapping holding logical block lb.
func (v *view) lookup(lb uint64) (layout.Mapping, bool) {
	i := sort.Search(len(v.maps), func(i int) bool { return v.maps[i].Logical+v.maps[i].Len > lb })
	if i < len(v.maps) && v.maps[i].Logical <= lb {
		return v.maps[i], true
	}
	return layout.Mapping{}, false
}

// unknownIn reports whether any logical block in [lo, hi) is under an
// unreadable subtree.
func (v *view) unknownIn(lo, hi uint64) bool {
	for _, u := range v.unknown {
		if u.lo < hi && lo < u.hi {
			return true
		}
	}
	return false
}

func (e *Engine) newTracked(ino uint64, isDir bool) (*tracked, error) {
	g, off, ok := e.sb.InodeLocation(ino)
	if !ok || g >= uint64(len(e.groups)) {
		return nil, fmt.Errorf("inode %d out of range", ino)
	}
	blk := e.groups[g].InodeTable() + off/uint64(e.bs)
	if blk >= e.blocks {
		return nil, fmt.Errorf("inode table block %d outside the filesystem", blk)
	}
	t := &tracked{ino: ino, isDir: isDir, inoBlock: blk, inoOff: int(off % uint64(e.bs))}
	if _, ok := e.meta[blk]; !ok {
		b, err := e.readImage(blk)
		if err != nil {
			return nil, err
		}
		e.meta[blk] = b
	}
	t.view = e.computeView(t, e.source(nil))
	if t.view.inode == nil {
		return nil, t.view.err
	}
	if isDir && !t.view.inode.IsDir() {
		return nil, fmt.Errorf("inode %d is not a directory", ino)
	}
	if t.view.err != nil {
		return nil, t.view.err
	}
	for b, d := range t.view.used {
		e.meta[b] = d
	}
	t.lastTouch = e.now()
	return t, nil
}

// source layers pending versions (a host write or committed transactions)
// over the blocks the engine holds, over the image.
func (e *Engine) source(pending func(uint64) ([]byte, bool)) source {
	return func(b uint64) ([]byte, bool, error) {
		if pending != nil {
			if d, ok := pending(b); ok {
				return d, true, nil
			}
		}
		if d, ok := e.meta[b]; ok {
			return d, true, nil
		}
		d, err := e.readNewest(b)
		return d, false, err
	}
}

// computeView decodes inode t and its extent tree (and, for a directory,
// its entries) from src.
func (e *Engine) computeView(t *tracked, src source) *view {
	v := &view{used: map[uint64][]byte{}}
	blk, _, err := src(t.inoBlock)
	if err != nil {
		v.err, v.errAt = err, t.inoBlock
		return v
	}
	v.used[t.inoBlock] = blk
	raw := blk[t.inoOff : t.inoOff+e.sb.InodeSizeBytes()]
	in, err := layout.ParseInode(raw)
	if err != nil {
		v.err, v.errAt = err, t.inoBlock
		return v
	}
	v.inode = in
	if v.freed() {
		return v
	}
	if in.Flags&layout.InodeFlagExtents == 0 || in.Flags&layout.InodeFlagInlineData != 0 {
		// Type changes are judged by the caller; nothing to walk.
		return v
	}
	if (t.isDir && !in.IsDir()) || (!t.isDir && !in.IsRegular()) {
		return v
	}
	w := treeWalk{e: e, v: v, src: src, seen: map[uint64]bool{},
		seed: layout.InodeSeed(e.fsSeed, uint32(t.ino), in.Generation)}
	w.node(in.Block[:], -1, 0, 1<<32, t.inoBlock, true)
	if v.err == nil {
		sort.Slice(v.maps, func(i, j int) bool { return v.maps[i].Logical < v.maps[j].Logical })
		for i := 1; i < len(v.maps); i++ {
			if v.maps[i].Logical < v.maps[i-1].Logical+v.maps[i-1].Len {
				v.err, v.errAt = fmt.Errorf("%w: extents overlap at logical block %d", layout.ErrCorrupt, v.maps[i].Logical), t.inoBlock
				break
			}
		}
	}
	if t.isDir && v.err == nil {
		e.readDir(v, src, w.seed)
	}
	return v
}

type treeWalk struct {
	e    *Engine
	v    *view
	src  source
	seen map[uint64]bool
	seed uint32
}

// node decodes one extent node covering logical blocks [lo, hi). at is the
// block holding it (the inode block for the root).
func (w *treeWalk) node(b []byte, depth int, lo, hi uint64, at uint64, trusted bool) {
	v := w.v
	n, err := layout.ParseExtentNode(b)
	if err == nil && depth >= 0 && int(n.Header.Depth) != depth {
		err = fmt.Errorf("%w: depth %d, parent expects %d", layout.ErrCorrupt, n.Header.Depth, depth)
	}
	if err == nil && !trusted && at != 0 && w.e.sb.HasMetadataCsum() && !layout.VerifyExtentTail(w.seed, b, n.Header) {
		err = fmt.Errorf("%w: tail checksum", layout.ErrCorrupt)
	}
	if err != nil {
		if trusted {
			v.err, v.errAt = fmt.Errorf("extent node in block %d: %w", at, err), at
		} else {
			// Bytes found in the image for a node the host has not
			// written yet (no journal: the parent may land first).
			v.unknown = append(v.unknown, lrange{lo, hi})
		}
		return
	}
	for _, x := range n.Extents {
		if uint64(x.Block) < lo || uint64(x.Block)+uint64(x.Length()) > hi {
			v.err, v.errAt = fmt.Errorf("%w: extent at logical %d outside its parent's range [%d,%d)", layout.ErrCorrupt, x.Block, lo, hi), at
			return
		}
		if x.Start() == 0 || x.Start()+uint64(x.Length()) > w.e.blocks {
			v.err, v.errAt = fmt.Errorf("%w: extent at logical %d maps blocks [%d,+%d) outside the filesystem", layout.ErrCorrupt, x.Block, x.Start(), x.Length()), at
			return
		}
		v.maps = append(v.maps, layout.Mapping{Logical: uint64(x.Block), Physical: x.Start(), Len: uint64(x.Length()), Unwritten: x.Unwritten()})
	}
	for i, x := range n.Index {
		c := x.Leaf()
		clo, chi := uint64(x.Block), hi
		if i+1 < len(n.Index) {
			chi = uint64(n.Index[i+1].Block)
		}
		if clo < lo {
			clo = lo
		}
		if c == 0 || c >= w.e.blocks || w.seen[c] || len(v.tree) >= maxTreeBlocks {
			v.err, v.errAt = fmt.Errorf("%w: extent index to block %d (outside, repeated or too many nodes)", layout.ErrCorrupt, c), at
			return
		}
		w.seen[c] = true
		v.tree = append(v.tree, c)
		cb, ctrusted, err := w.src(c)
		if err != nil {
			v.unknown = append(v.unknown, lrange{clo, chi})
			continue
		}
		if ctrusted {
			v.used[c] = cb
		}
		w.node(cb, int(n.Header.Depth)-1, clo, chi, c, ctrusted)
		if v.err != nil {
			return
		}
		if !ctrusted && !v.unknownIn(clo, chi) {
			v.used[c] = cb // verified by its checksum: hold it from now on
		}
	}
}

// readDir collects the entries of every mapped block of a directory.
func (e *Engine) readDir(v *view, src source, seed uint32) {
	v.entries = map[uint32]int{}
	v.entryBlock = map[uint32]uint64{}
	if len(v.unknown) > 0 {
		v.dirUnknown = true
	}
	for _, m := range v.maps {
		if m.Unwritten {
			continue
		}
		for i := uint64(0); i < m.Len; i++ {
			b := m.Physical + i
			if len(v.dirBlocks) >= maxTrackedDirBlocks {
				v.err, v.errAt = fmt.Errorf("%w: directory over %d blocks", layout.ErrCorrupt, maxTrackedDirBlocks), b
				return
			}
			v.dirBlocks = append(v.dirBlocks, b)
			d, trusted, err := src(b)
			if err != nil {
				v.dirUnknown = true
				continue
			}
			ents, perr := layout.ParseDirBlock(d)
			if perr == nil && !trusted && e.sb.HasMetadataCsum() && layout.HasDirTail(d) && !layout.VerifyDirTail(seed, d) {
				perr = fmt.Errorf("%w: directory tail checksum", layout.ErrCorrupt)
			}
			if perr != nil {
				if trusted {
					v.err, v.errAt = fmt.Errorf("directory block %d: %w", b, perr), b
					return
				}
				v.dirUnknown = true
				continue
			}
			v.used[b] = d
			for _, en := range layout.LiveEntries(ents) {
				v.entries[en.Inode]++
				if _, ok := v.entryBlock[en.Inode]; !ok {
					v.entryBlock[en.Inode] = b
				}
			}
		}
	}
}

// normalise clips a block map to logical blocks [0, n) and merges runs
// that continue each other, so that equal mappings compare equal however
// ext4 splits them into extents.
func normalise(maps []layout.Mapping, n uint64) []layout.Mapping {
	var out []layout.Mapping
	for _, m := range maps {
		if m.Logical >= n {
			break
		}
		if m.Logical+m.Len > n {
			m.Len = n - m.Logical
		}
		if k := len(out); k > 0 {
			p := &out[k-1]
			if p.Logical+p.Len == m.Logical && p.Physical+p.Len == m.Physical && p.Unwritten == m.Unwritten {
				p.Len += m.Len
				continue
			}
		}
		out = append(out, m)
	}
	return out
}

func sameMaps(a, b []layout.Mapping) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
