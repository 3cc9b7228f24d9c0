package ext4

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
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
	// names are, for a directory on a protected file's path, the entries
	// the path goes through and the inode each must name (checkNames).
	names map[string]binding

	// files only
	committed int64            // sealed bytes
	sealed    []layout.Mapping // block map of the committed range, normalised
	coherent  int64
	grew      uint64 // event sequence of the newest size increase
	// sizes are the sizes the file grew to, with the event sequence of
	// each (oldest first; see trustedEnd).
	sizes          []sizeMark
	sizesMin       []int64 // sizesMin[i]: the smallest of sizes[i:] (no bound at len(sizes))
	journalled     bool
	dataJournalled bool
	lastTouch      time.Time
	unlinkTried    bool   // the host tried to free the inode (unlink.go)
	linksDropEpoch uint64 // flush epoch in which its link count last fell (no journal; 0: never)
	// asZero are logical block ranges taken as found while they were holes
	// or unwritten extents (asfound.go): they count as zeroes for the
	// coherent prefix until sealed.
	asZero []lrange
	// known is the block map as last known, range by range: a view with
	// unknown ranges keeps there what the views before it showed, so that
	// forgetDropped judges blocks moved under an unknown range once it is
	// known again (knownSet: known was set by forgetDropped at least once;
	// before that the view's maps are the known map).
	known    []layout.Mapping
	knownSet bool
}

// lrange is a logical block range [lo, hi).
type lrange struct{ lo, hi uint64 }

// sizeMark is a size a file grew to, at event sequence seq.
type sizeMark struct {
	seq  uint64
	size int64
}

// maxSizeMarks bounds tracked.sizes; past it the two oldest are merged,
// keeping the later sequence and the smaller size (trustedEnd then trusts
// less, never more).
const maxSizeMarks = 256

// noteSize records that f grew to size at event sequence seq.
func (f *tracked) noteSize(seq uint64, size int64) {
	f.sizes = append(f.sizes, sizeMark{seq, size})
	if len(f.sizes) > maxSizeMarks {
		f.sizes[1].size = min(f.sizes[0].size, f.sizes[1].size)
		f.sizes = slices.Delete(f.sizes, 0, 1)
	}
	f.sizesMin = slices.Grow(f.sizesMin[:0], len(f.sizes)+1)[:len(f.sizes)+1]
	f.sizesMin[len(f.sizes)] = math.MaxInt64
	for i := len(f.sizes) - 1; i >= 0; i-- {
		f.sizesMin[i] = min(f.sizes[i].size, f.sizesMin[i+1])
	}
}

// binding is one step of a protected path: the entry must name child.
type binding struct {
	child uint64
	file  *tracked // a protected file whose path takes this step
}

// view is what a set of block versions says about one inode.
type view struct {
	inode   *layout.Inode // nil when the record does not decode
	size    int64         // the inode's i_size; 0 when it does not decode or is out of range
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
	// named is, for each watched name (tracked.names), the inode its live
	// entry names (namedTwice when two entries name different inodes);
	// a name without a live entry is absent.
	named map[string]uint32
	// namedType is the file type of each watched name's entry, and dxHash
	// the hash version of an htree's root (-1: not an htree root). Neither
	// changes in an honest kernel's hands, and each decides what a lookup
	// of the path finds (checkNames).
	namedType map[string]uint8
	dxHash    int
	// dxMissed are the watched names the directory holds that the
	// kernel's htree lookup would not find (dxMisses; with a journal
	// only: without one a view joins blocks of different moments).
	dxMissed []string
}

// dxHashOff is the offset of dx_root_info.hash_version in an htree's
// block 0: after the "." and ".." entries (12 bytes each) and the 4-byte
// reserved_zero.
const dxHashOff = 0x1C

// dxRootHash returns the hash version of block 0 of an htree, or -1 when
// the block is not a dx_root (the index flag and the root block of a
// directory being converted can arrive apart): ".." must span the rest of
// the block and dx_root_info must be 8 bytes long with reserved_zero 0.
func dxRootHash(d []byte) int {
	if len(d) < 0x20 || binary.LittleEndian.Uint16(d[4:]) != 12 ||
		layout.RecLen(binary.LittleEndian.Uint16(d[16:]), len(d)) != len(d)-12 ||
		binary.LittleEndian.Uint32(d[0x18:]) != 0 || d[0x1D] != 8 {
		return -1
	}
	return int(d[dxHashOff])
}

// namedTwice marks a watched name two live entries give to different
// inodes: which one the kernel finds depends on its search, and an honest
// kernel never makes a second entry of a name.
const namedTwice = ^uint32(0)

// source returns the newest version of a block and whether it is trusted:
// true for versions the host wrote or committed (or the engine already
// holds), false for bytes merely found in the image, which may be stale.
type source func(b uint64) ([]byte, bool, error)

func (v *view) freed() bool {
	return v.inode != nil && (v.inode.Mode == 0 || v.inode.LinksCount == 0)
}

// lookup finds the mapping holding logical block lb.
func (v *view) lookup(lb uint64) (layout.Mapping, bool) {
	m, ok, _ := v.around(lb)
	return m, ok
}

// around finds the mapping holding logical block lb; when none does, it
// returns where the next mapping starts (math.MaxUint64 when none follows).
func (v *view) around(lb uint64) (m layout.Mapping, covered bool, next uint64) {
	rest := v.mapsFrom(lb)
	if len(rest) == 0 {
		return layout.Mapping{}, false, math.MaxUint64
	}
	if rest[0].Logical <= lb {
		return rest[0], true, 0
	}
	return layout.Mapping{}, false, rest[0].Logical
}

// mapsFrom returns the mappings from the first one that ends after logical
// block lb (the mappings are sorted by logical block).
func (v *view) mapsFrom(lb uint64) []layout.Mapping {
	i := sort.Search(len(v.maps), func(i int) bool { return v.maps[i].Logical+v.maps[i].Len > lb })
	return v.maps[i:]
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
	blk, off, err := layout.InodeAddr(e.sb, e.groups, ino)
	if err != nil {
		return nil, err
	}
	t := &tracked{ino: ino, isDir: isDir, inoBlock: blk, inoOff: off}
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
		// A block the host has not written since it was allocated holds
		// whatever an earlier owner left, possibly an old extent leaf of
		// this very inode (ext4 folds a leaf back into the inode and may
		// reuse the block), checksum and all: it is not a version.
		if e.opening {
			// At Open the image as it is is the baseline.
			d, err := e.readNewest(b)
			return d, err == nil, err
		}
		if e.missOn && b == e.missBlock {
			e.missHit = true
		}
		if !e.written.Contains(b, 1) {
			return nil, false, errNotWritten
		}
		d, err := e.readNewest(b)
		return d, false, err
	}
}

// ownTreeSource returns src for t's extent tree blocks. Without a journal,
// the version of a block the engine holds for another inode's tree is not
// a version of t's: ext4 frees a leaf when it folds a small tree back into
// its inode (ext4_ext_try_to_merge_up) and may at once allocate the block
// as another file's new leaf; the inode-table block pointing that file at
// it (the two inodes often share it) can land before the new leaf, and
// before the other inode stops pointing at it, and the held version, the
// other inode's extents, would map that inode's blocks into t. Such a
// block reads as if found in the image: it must carry t's checksum and
// agree with t's committed block map, or its range is unknown until the
// host writes it (treeWalk.node). A version the host writes now (src's
// pending layer), and the blocks t's current view already uses, are t's.
func (e *Engine) ownTreeSource(t *tracked, src source) source {
	if e.jnl != nil || e.opening || t.view == nil {
		// With a journal, a new leaf commits with the index naming it.
		return src
	}
	return func(b uint64) ([]byte, bool, error) {
		d, trusted, err := src(b)
		if err != nil || !trusted || t.view.usesTree(b) {
			return d, trusted, err
		}
		if held, ok := e.meta[b]; ok && len(held) > 0 && len(d) == len(held) && &d[0] == &held[0] {
			return d, false, nil
		}
		return d, trusted, err
	}
}

// mayFold reports whether ext4 may have folded the view's tree back into
// the inode and freed its leaf: a single leaf under the root whose extents,
// joined where they continue each other (an unwritten-extent conversion
// merges them), fit in the inode (ext4_ext_try_to_merge_up; the only way
// the kernel frees the leaf of a file that only grows). The maps under an
// unknown leaf are absent, so an unknown leaf stays foldable.
func (v *view) mayFold() bool {
	if len(v.tree) != 1 {
		return false
	}
	n := 0
	for i, m := range v.maps {
		if i == 0 || v.maps[i-1].Logical+v.maps[i-1].Len != m.Logical || v.maps[i-1].Physical+v.maps[i-1].Len != m.Physical {
			n++
		}
	}
	return n <= rootExtents
}

// rootExtents is how many extents i_block (60 bytes) holds after its header.
const rootExtents = (60 - layout.ExtentEntrySize) / layout.ExtentEntrySize

// usesTree reports whether b is one of the view's extent tree blocks.
func (v *view) usesTree(b uint64) bool { return slices.Contains(v.tree, b) }

// computeView decodes inode t and its extent tree (and, for a directory,
// its entries) from src.
func (e *Engine) computeView(t *tracked, src source) *view {
	v := &view{used: map[uint64][]byte{}, dxHash: -1}
	blk, _, err := src(t.inoBlock)
	if err != nil {
		v.err, v.errAt = err, t.inoBlock
		return v
	}
	v.used[t.inoBlock] = blk
	if t.inoOff+e.sb.InodeSizeBytes() > len(blk) {
		// The engine never adopts a new inode size (layoutChange); this
		// only guards the slice.
		v.err, v.errAt = fmt.Errorf("%w: inode %d: record at %d+%d outside its block", layout.ErrCorrupt, t.ino, t.inoOff, e.sb.InodeSizeBytes()), t.inoBlock
		return v
	}
	raw := blk[t.inoOff : t.inoOff+e.sb.InodeSizeBytes()]
	in, err := layout.ParseInode(raw)
	if err != nil {
		v.err, v.errAt = err, t.inoBlock
		return v
	}
	v.inode = in
	if err := e.inodeCsumError(t, raw); err != nil {
		v.err, v.errAt = err, t.inoBlock
		return v
	}
	// The kernel refuses an inode whose i_size is negative as a signed
	// 64-bit number, and never writes one larger than extents can map
	// (2^32 blocks): either is forged metadata, and left unchecked it
	// would overflow every size computation after it.
	if s := in.Size(); s > uint64(1)<<32*uint64(e.bs) {
		v.err, v.errAt = fmt.Errorf("%w: inode %d: size %d is beyond what extents can map", layout.ErrCorrupt, t.ino, s), t.inoBlock
		return v
	}
	v.size = int64(in.Size())
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
	w := treeWalk{e: e, v: v, src: e.ownTreeSource(t, src), seen: map[uint64]bool{},
		seed:   layout.InodeSeed(e.fsSeed, uint32(t.ino), in.Generation),
		sealed: t.sealed, sealedN: e.blocksFor(t.committed), checks: e.checksNew(t)}
	if t.ino != uint64(e.sb.JournalInum) {
		w.zone = e.zone // the journal inode maps the journal's blocks, part of the zone
	}
	// Without a journal, a protected file's extents may overlap for a
	// moment (unknownOverlaps); a directory's keep the strict rule.
	w.tornOK = e.jnl == nil && !t.isDir
	w.foldable = w.tornOK && !e.opening && t.view != nil && t.view.mayFold()
	w.node(in.Block[:], -1, 0, 1<<32, 0, t.inoBlock, true)
	if v.err == nil {
		slices.SortFunc(v.maps, func(a, b layout.Mapping) int { return cmp.Compare(a.Logical, b.Logical) })
		if w.tornOK {
			v.maps = v.unknownOverlaps(v.maps)
		}
		for i := 1; i < len(v.maps); i++ {
			if v.maps[i].Logical < v.maps[i-1].Logical+v.maps[i-1].Len {
				v.err, v.errAt = fmt.Errorf("%w: extents overlap at logical block %d", layout.ErrCorrupt, v.maps[i].Logical), t.inoBlock
				break
			}
		}
	}
	if t.isDir && v.err == nil {
		e.readDir(v, src, w.seed, t.names)
	}
	return v
}

var errNotWritten = errors.New("ext4: block not written since allocation")

type treeWalk struct {
	e       *Engine
	v       *view
	src     source
	seen    map[uint64]bool
	seed    uint32
	sealed  []layout.Mapping // the committed range's block map
	sealedN uint64           // its length in blocks
	checks  bool             // new tree blocks must carry the checksum (checksNew)
	zone    layout.Zone      // blocks no extent may map (nil: the journal's own walk)
	tornOK  bool             // overlapping extents may be torn copies (unknownOverlaps)
	// foldable: without a journal, the file's tree is one leaf that ext4
	// may have freed (view.mayFold); a leaf version that is not this
	// file's is unknown, not a violation (treeWalk.node).
	foldable bool
}

// placeErr reports a node the kernel refuses for where it stands in the
// tree, though the blocks it maps are where they were, so that every read
// under it fails: an index node without entries (__ext4_ext_check:
// "invalid eh_entries"; read as a hole, its range could be taken as found
// as zeroes), or a node below the root (depth >= 0) whose first entry does
// not start where its index entry says (ext4_valid_extent_entries).
func placeErr(n *layout.ExtentNode, depth int, indexed uint64) error {
	if n.Header.Depth > 0 && n.Header.Entries == 0 {
		return fmt.Errorf("%w: index node without entries", layout.ErrCorrupt)
	}
	if depth < 0 || n.Header.Entries == 0 {
		return nil
	}
	first := uint64(0)
	if len(n.Extents) > 0 {
		first = uint64(n.Extents[0].Block)
	} else {
		first = uint64(n.Index[0].Block)
	}
	if first != indexed {
		return fmt.Errorf("%w: first entry at logical block %d, its index entry says %d", layout.ErrCorrupt, first, indexed)
	}
	return nil
}

// unknownOverlaps returns maps, sorted by logical block, without the
// groups of overlapping mappings that agree on every block they share,
// whose ranges become unknown. Groups that disagree stay, for the caller
// to refuse. For a protected file without a journal only:
//
// Nothing freezes a metadata block while it is written without a journal:
// ext4 copies the inode's extent root into the inode table block
// (ext4_do_update_inode) and writeback sends a leaf's buffer while the
// extent code may be editing them. Merging an extent into its neighbour
// lengthens the first before it moves the others down over the second, so
// for a moment both cover the same blocks, and moving entries leaves one
// twice. The kernel marks the node dirty again when the edit is done, so a
// whole copy follows. A view also joins nodes of different moments (the
// inode or a parent index newer or older than a leaf), which overlap the
// same way. Such a range is unknown, as under a node not written yet: the
// file waits there, and the device raises an indicator when it stays so
// (StallUnknownTree; the kernel refuses overlapping extents). Extents that
// overlap and map a block to different places are a violation at once:
// the kernel's lookup and the device's could read different blocks.
func (v *view) unknownOverlaps(maps []layout.Mapping) []layout.Mapping {
	out := maps[:0]
	for i := 0; i < len(maps); {
		lo, hi := maps[i].Logical, maps[i].Logical+maps[i].Len
		// Each mapping joins the group by overlapping one before it; the
		// group agrees when they all map with the same offset (physical
		// minus logical), which costs one comparison each, not one per
		// pair (a forged leaf can hold many).
		offset := maps[i].Physical - maps[i].Logical
		j := i + 1
		agree := true
		for ; j < len(maps) && maps[j].Logical < hi; j++ {
			agree = agree && maps[j].Physical-maps[j].Logical == offset
			hi = max(hi, maps[j].Logical+maps[j].Len)
		}
		if j == i+1 || !agree {
			out = append(out, maps[i:j]...)
		} else {
			v.unknown = append(v.unknown, lrange{lo, hi})
		}
		i = j
	}
	return out
}

// agrees reports whether extents found in the image (not written by the
// host as a new version) map the committed range exactly as sealed. An
// old leaf of the same inode can sit in a block the kernel is about to
// reuse for a new leaf, checksum and all (ext4 folds a small tree back into
// the inode and may allocate the same block again): such bytes are not
// evidence of a change, only of staleness.
func (w *treeWalk) agrees(xs []layout.Extent) bool {
	for _, x := range xs {
		lo, hi := uint64(x.Block), min(uint64(x.Block)+uint64(x.Length()), w.sealedN)
		// Walk the sealed runs covering [lo, hi): each must continue the
		// extent's physical run with the same written state.
		i := sort.Search(len(w.sealed), func(i int) bool { return w.sealed[i].Logical+w.sealed[i].Len > lo })
		for lb := lo; lb < hi; i++ {
			if i == len(w.sealed) {
				return false
			}
			s := w.sealed[i]
			if s.Logical > lb || s.Unwritten != x.Unwritten() || s.Physical+lb-s.Logical != x.Start()+lb-uint64(x.Block) {
				return false
			}
			lb = s.Logical + s.Len
		}
	}
	return true
}

// node decodes one extent node covering logical blocks [lo, hi), whose
// index entry (none for the root) says it starts at logical block indexed.
// at is the block holding it (the inode block for the root).
func (w *treeWalk) node(b []byte, depth int, lo, hi, indexed uint64, at uint64, trusted bool) {
	v := w.v
	n, err := layout.ParseExtentNode(b)
	if errors.Is(err, layout.ErrOverlap) && trusted && w.tornOK {
		// Possibly torn (view.unknownOverlaps): the overlaps are judged once
		// the whole tree is read.
		n, err = layout.ParseExtentNodeOverlapping(b)
	}
	if err == nil && depth >= 0 && int(n.Header.Depth) != depth {
		err = fmt.Errorf("%w: depth %d, parent expects %d", layout.ErrCorrupt, n.Header.Depth, depth)
	}
	// A tree block (not the root in i_block) found in the image must carry
	// this inode's checksum to be taken; a new version the host wrote
	// must too, or the kernel refuses it (__ext4_ext_check: EFSBADCRC).
	if err == nil && depth >= 0 && w.e.sb.HasMetadataCsum() && (!trusted || w.checks && w.e.isNew(at, b) || w.foldable) &&
		!layout.VerifyExtentTail(w.seed, b, n.Header) {
		err = fmt.Errorf("%w: tail checksum", layout.ErrCorrupt)
	}
	if err != nil && trusted && depth >= 0 && w.foldable {
		// Without a journal, the leaf of a tree ext4 may have folded back
		// into the inode (treeWalk.foldable) can hold what its next owner
		// wrote there before this inode stopped pointing at it: another
		// file's leaf or data. Nor is it a version of this file's tree
		// (the kernel would refuse it: EFSBADCRC, EFSCORRUPTED): unknown,
		// as a node not written yet, until the inode or a whole leaf of
		// this file comes (StallUnknownTree if neither does).
		trusted = false
	}
	if err == nil && !trusted && !w.agrees(n.Extents) {
		err = fmt.Errorf("%w: unwritten copy disagrees with the committed block map", layout.ErrCorrupt)
	}
	if err == nil {
		if err = placeErr(n, depth, indexed); err != nil && trusted && w.tornOK {
			trusted = false // without a journal: maybe a node of another moment (unknownOverlaps)
		}
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
		if z, ok := w.zone.Overlap(x.Start(), uint64(x.Length())); ok {
			v.err, v.errAt = fmt.Errorf("%w: extent at logical %d maps blocks [%d,%d) of filesystem metadata (%s): the kernel refuses the file", layout.ErrCorrupt, x.Block, z.Start, z.End, w.e.systemBlock(z.Start)), at
			return
		}
		if len(v.maps) >= maxTreeExtents {
			v.err, v.errAt = fmt.Errorf("%w: more than %d extents", layout.ErrCorrupt, maxTreeExtents), at
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
		if _, ok := w.zone.Overlap(c, 1); ok {
			v.err, v.errAt = fmt.Errorf("%w: extent index to block %d, in filesystem metadata (%s): the kernel refuses the file", layout.ErrCorrupt, c, w.e.systemBlock(c)), at
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
		w.node(cb, int(n.Header.Depth)-1, clo, chi, uint64(x.Block), c, ctrusted)
		if v.err != nil {
			return
		}
		if !ctrusted && !v.unknownIn(clo, chi) {
			v.used[c] = cb // verified by its checksum: hold it from now on
		}
	}
}

// readDir collects the entries of every mapped block of a directory, and
// what the watched names name.
func (e *Engine) readDir(v *view, src source, seed uint32, watch map[string]binding) {
	v.entries = map[uint32]int{}
	v.entryBlock = map[uint32]uint64{}
	v.dxHash = -1
	if len(watch) > 0 {
		v.named = map[string]uint32{}
		v.namedType = map[string]uint8{}
	}
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
			if perr == nil && trusted && e.verifiesNew() && e.isNew(b, d) {
				// A new version the host wrote: the kernel refuses a leaf
				// whose checksum fails (__ext4_read_dirblock: EFSBADCRC).
				perr = e.dirBlockCsumError(v.inode, seed, m.Logical+i, d)
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
			if m.Logical+i == 0 && v.inode.Flags&layout.InodeFlagIndex != 0 {
				v.dxHash = dxRootHash(d)
			}
			for _, en := range layout.LiveEntries(ents) {
				v.entries[en.Inode]++
				if _, ok := v.entryBlock[en.Inode]; !ok {
					v.entryBlock[en.Inode] = b
				}
				if _, ok := watch[en.Name]; ok {
					if prev, seen := v.named[en.Name]; seen && prev != en.Inode {
						v.named[en.Name] = namedTwice
					} else {
						v.named[en.Name] = en.Inode
						v.namedType[en.Name] = en.FileType
					}
				}
			}
		}
	}
	if e.jnl != nil && !v.dirUnknown {
		v.dxMissed = e.dxMisses(v)
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

// mapDiffs returns the logical ranges of [0, n) where two normalised block
// maps differ: one maps a block the other does not, or they map it to
// different physical blocks or with a different unwritten flag. It walks
// the boundaries of both maps, so its cost is their extent count, not the
// size of the range.
func mapDiffs(a, b []layout.Mapping, n uint64) []lrange {
	if slices.Equal(a, b) {
		return nil // the usual case: reindex asks for every file
	}
	cuts := make([]uint64, 0, 2*(len(a)+len(b))+2)
	cuts = append(cuts, 0, n)
	for _, maps := range [][]layout.Mapping{a, b} {
		for _, m := range maps {
			cuts = append(cuts, min(m.Logical, n), min(m.Logical+m.Len, n))
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	// at returns the mapping of the run starting at logical block lb.
	at := func(maps []layout.Mapping, i *int, lb uint64) (phys uint64, unwritten, mapped bool) {
		for *i < len(maps) && maps[*i].Logical+maps[*i].Len <= lb {
			*i++
		}
		if *i < len(maps) && maps[*i].Logical <= lb {
			m := maps[*i]
			return m.Physical + lb - m.Logical, m.Unwritten, true
		}
		return 0, false, false
	}
	var out []lrange
	ia, ib := 0, 0
	for k := 0; k+1 < len(cuts); k++ {
		lo, hi := cuts[k], cuts[k+1]
		if lo >= n {
			break
		}
		pa, ua, ma := at(a, &ia, lo)
		pb, ub, mb := at(b, &ib, lo)
		if ma == mb && (!ma || (pa == pb && ua == ub)) {
			continue
		}
		if j := len(out); j > 0 && out[j-1].hi == lo {
			out[j-1].hi = hi
			continue
		}
		out = append(out, lrange{lo, hi})
	}
	return out
}

// unknownCovers reports whether logical blocks [lo, hi) all lie under tree
// nodes the view could not read.
// unknownMerged returns v's unknown ranges sorted and merged.
func (v *view) unknownMerged() []lrange {
	us := slices.Clone(v.unknown)
	slices.SortFunc(us, func(a, b lrange) int { return cmp.Compare(a.lo, b.lo) })
	out := us[:0]
	for _, u := range us {
		if k := len(out); k > 0 && u.lo <= out[k-1].hi {
			out[k-1].hi = max(out[k-1].hi, u.hi)
			continue
		}
		out = append(out, u)
	}
	return out
}

// outside returns the parts of [lo, hi) outside ranges (sorted and
// merged, as unknownMerged returns them).
func outside(ranges []lrange, lo, hi uint64) []lrange {
	var out []lrange
	for _, u := range ranges {
		if u.hi <= lo || u.lo >= hi {
			continue
		}
		if u.lo > lo {
			out = append(out, lrange{lo, u.lo})
		}
		lo = max(lo, u.hi)
	}
	if lo < hi {
		out = append(out, lrange{lo, hi})
	}
	return out
}

func (v *view) unknownCovers(lo, hi uint64) bool {
	us := slices.Clone(v.unknown)
	slices.SortFunc(us, func(a, b lrange) int { return cmp.Compare(a.lo, b.lo) })
	for _, u := range us {
		if u.lo > lo {
			return false
		}
		lo = max(lo, u.hi)
		if lo >= hi {
			return true
		}
	}
	return lo >= hi
}
