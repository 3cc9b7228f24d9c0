package ext4

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// hostWrite is one write request seen block by block.
type hostWrite struct {
	e           *Engine
	off, end    int64
	p           []byte
	first, last uint64
}

// block returns the content block b has once the write lands. The result
// may alias the caller's buffer: clone it before keeping it.
func (w *hostWrite) block(b uint64) []byte {
	bs := w.e.bs
	s := int64(b) * bs
	if s >= w.off && s+bs <= w.end {
		return w.p[s-w.off : s-w.off+bs]
	}
	var base []byte
	if d, ok := w.e.meta[b]; ok {
		base = bytes.Clone(d)
	} else if d, err := w.e.readNewest(b); err == nil {
		base = bytes.Clone(d) // readNewest's result may be shared
	} else {
		base = make([]byte, bs)
	}
	lo, hi := max(s, w.off), min(s+bs, w.end)
	copy(base[lo-s:hi-s], w.p[lo-w.off:hi-w.off])
	return base
}

func (w *hostWrite) has(b uint64) bool { return b >= w.first && b <= w.last }

// blame clips bytes [lo, hi) of block b to the request.
func (w *hostWrite) blame(b uint64, lo, hi int) (int64, int64) {
	s := max(int64(b)*w.e.bs+int64(lo), w.off)
	t := min(int64(b)*w.e.bs+int64(hi), w.end)
	if s >= t {
		return w.off, w.end - w.off
	}
	return s, t - s
}

// change is a set of new home-block versions that become visible together:
// one host write, or the transactions completed by one commit block.
type change struct {
	get func(b uint64) ([]byte, bool)
	// peek is get without keeping the block (journal changes only): for
	// reading many data copies once.
	peek    func(b uint64) ([]byte, bool)
	homes   []uint64
	carries map[uint64]bool
	blame   func(b uint64, lo, hi int) (int64, int64)
	journal bool
	// tid returns the transaction whose copy of a carried block the
	// change holds (journal changes only).
	tid func(b uint64) uint32
	// revoked lists the blocks the change's revoke records name (journal
	// changes only; checkRevokes).
	revoked []uint64
}

// result is what evalChange computed, for applyChange.
type result struct {
	views   map[*tracked]*view
	sb      []byte
	gdt     map[uint64][]byte
	bitmaps map[uint64][]byte
	// same holds the tracked inodes whose inode-table block the change
	// carries but whose record and other blocks it leaves as they are:
	// their views cannot change (see unchanged), only their block's other
	// records did.
	same []*tracked
	// journalMap is set when the change carries a block of the journal's
	// map (journal.mapBlocks), whose new version applyChange holds.
	journalMap bool
}

// process checks (apply=false) or records (apply=true) one host write.
func (e *Engine) process(off int64, p []byte, apply bool) []revfs.Violation {
	if len(p) == 0 || off < 0 {
		return nil
	}
	e.reindexIfDirty()
	fsEnd := int64(e.blocks) * e.bs
	if off >= fsEnd {
		return nil // past the filesystem: nothing ext4 will read
	}
	if off+int64(len(p)) > fsEnd {
		p = p[:fsEnd-off]
	}
	w := &hostWrite{e: e, off: off, end: off + int64(len(p)), p: p}
	w.first, w.last = uint64(off/e.bs), uint64((w.end-1)/e.bs)
	if !e.Watches(off, int64(len(p))) {
		// The hot path: nothing watched, only "written since allocation"
		// (delalloc data arrives before the metadata that maps it).
		if apply {
			e.seq++
			e.markWritten(w.first, w.last-w.first+1)
			e.noteRecent(w.first, w.last-w.first+1)
			if len(e.overlay) > 0 {
				for b := w.first; b <= w.last; b++ {
					delete(e.overlay, b)
				}
			}
			e.checkpointed(w)
		}
		return nil
	}
	if e.jnl != nil && e.jnl.isReplay(w) {
		// A journal replay of an older committed copy: the host wrote
		// it, but the model keeps the newest committed version.
		if apply {
			e.seq++
			e.markWritten(w.first, w.last-w.first+1)
		}
		return nil
	}
	touched := map[*tracked]bool{}
	var vs []revfs.Violation
	if apply {
		e.seq++
		e.markWritten(w.first, w.last-w.first+1)
		e.noteRecent(w.first, w.last-w.first+1)
		e.noteData(w, touched)
		e.checkpointed(w)
	} else {
		vs = append(vs, e.checkData(w)...)
	}
	if e.jnl != nil {
		vs = append(vs, e.jnl.process(w, apply, touched)...)
	}
	chg := &change{get: func(b uint64) ([]byte, bool) {
		if w.has(b) {
			return w.block(b), true
		}
		return nil, false
	}, blame: w.blame, carries: map[uint64]bool{}}
	for b := w.first; b <= w.last; b++ {
		if _, ok := e.roles[b]; ok {
			chg.homes = append(chg.homes, b)
			chg.carries[b] = true
			if apply && !e.staleHome(w, b) {
				e.homeWrote[b] = e.epoch
			}
		}
	}
	if len(chg.homes) > 0 {
		v, res := e.evalChange(chg)
		vs = append(vs, v...)
		if apply {
			e.applyChange(chg, res, touched)
		}
	}
	if apply {
		e.reindexIfDirty()
		for _, f := range e.files {
			if touched[f] {
				e.updateCoherent(f)
			}
		}
	}
	return vs
}

// staleHome reports whether w writes home block b with the version the
// model already holds: a checkpoint of a transaction already applied. It
// is no newer than a copy logged in the same flush epoch, and must not
// hide it (journal.versions): when the kernel turns a directory into an
// htree, the transaction logs the directory's inode and its new dx_root
// block, while a checkpoint of the inode's previous version may land in
// the same epoch; dropping the logged inode made the engine read the
// dx_root block against the old linear inode ("entry removed"). A write
// home of a version the model does not hold yet does count: it may be
// newer than the copy (the order inside one epoch means nothing).
func (e *Engine) staleHome(w *hostWrite, b uint64) bool {
	cur, ok := e.meta[b]
	return ok && bytes.Equal(cur, w.block(b))
}

// checkpointed records that w wrote its blocks home: a journalled copy
// they had is no longer the only newest version (journal.ckpt).
func (e *Engine) checkpointed(w *hostWrite) {
	if e.jnl == nil {
		return
	}
	for _, m := range []map[uint64]pendingHome{e.jnl.ckpt, e.jnl.owed} {
		if len(m) == 0 {
			continue
		}
		if n := w.last - w.first + 1; n > uint64(len(m)) {
			for b := range m {
				if w.has(b) {
					delete(m, b)
				}
			}
			continue
		}
		for b := w.first; b <= w.last; b++ {
			delete(m, b)
		}
	}
}

// checkData reports writes that change committed bytes of protected files.
func (e *Engine) checkData(w *hostWrite) []revfs.Violation {
	var vs []revfs.Violation
	for _, d := range e.dataAt(w.first, w.last) {
		f := d.file
		if f.committed == 0 {
			continue
		}
		lo, hi, _ := d.overlap(w.first, w.last)
		for pb := lo; pb < hi; pb++ {
			start := int64(d.logical+pb-d.phys) * e.bs
			if start >= f.committed {
				continue
			}
			n := min(e.bs, f.committed-start)
			dev := int64(pb) * e.bs
			s, t := max(dev, w.off), min(dev+n, w.end)
			if s >= t {
				continue
			}
			old, err := e.peekNewest(pb)
			if err == nil && bytes.Equal(old[s-dev:t-dev], w.p[s-w.off:t-w.off]) {
				continue
			}
			vs = appendMerged(vs, revfs.Violation{Kind: revfs.KindDataChanged, File: revfs.FileID(f.ino), Off: s, Len: t - s,
				Detail: fmt.Sprintf("write changes committed bytes [%d,%d) of the file (committed %d)", start+(s-dev), start+(t-dev), f.committed)})
		}
	}
	return vs
}

// appendMerged appends v, merging it into the previous violation when both
// are the same kind on the same file and their ranges touch.
func appendMerged(vs []revfs.Violation, v revfs.Violation) []revfs.Violation {
	if k := len(vs); k > 0 {
		p := &vs[k-1]
		if p.Kind == v.Kind && p.File == v.File && p.Off+p.Len == v.Off {
			p.Len += v.Len
			return vs
		}
	}
	return append(vs, v)
}

// noteData records writes to protected data blocks: their write sequence
// (for the coherence proof) and that a home write supersedes any
// journalled copy.
func (e *Engine) noteData(w *hostWrite, touched map[*tracked]bool) {
	now := e.now()
	for _, d := range e.dataAt(w.first, w.last) {
		lo, hi, _ := d.overlap(w.first, w.last)
		for pb := lo; pb < hi; pb++ {
			e.lastWrite.set(pb, writeMark{e.seq, e.epoch})
			delete(e.overlay, pb)
		}
		d.file.lastTouch = now
		touched[d.file] = true
	}
	// A home write of any other journalled block also supersedes its copy.
	if len(e.overlay) > 0 {
		for b := w.first; b <= w.last; b++ {
			delete(e.overlay, b)
		}
	}
}

// evalChange computes the new views the change produces and the
// violations they amount to, without changing the model.
func (e *Engine) evalChange(chg *change) ([]revfs.Violation, *result) {
	res := &result{views: map[*tracked]*view{}, gdt: map[uint64][]byte{}, bitmaps: map[uint64][]byte{}}
	var vs []revfs.Violation
	affected := map[*tracked]bool{}
	var same []*tracked
	for _, b := range chg.homes {
		roles := e.roles[b]
		if len(roles) == 0 {
			continue
		}
		nb, ok := chg.get(b)
		if !ok {
			continue
		}
		for _, r := range roles {
			switch r.kind {
			case roleSuper:
				raw := nb[e.sbOff : e.sbOff+layout.SuperBlockSize]
				vs = append(vs, e.checkSuper(raw, chg, b)...)
				res.sb = bytes.Clone(raw)
			case roleGroupDesc:
				vs = append(vs, e.checkGroupDescs(b, nb, chg)...)
				res.gdt[b] = bytes.Clone(nb)
			case roleBitmap:
				res.bitmaps[b] = bytes.Clone(nb)
			case roleJournal:
				res.journalMap = true
			case roleInodeTable:
				if e.unchanged(r.owner, nb) {
					same = append(same, r.owner)
					continue
				}
				affected[r.owner] = true
			default:
				affected[r.owner] = true
			}
		}
	}
	for _, t := range same {
		if !affected[t] {
			res.same = append(res.same, t)
		}
	}
	ts := make([]*tracked, 0, len(affected))
	for t := range affected {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *tracked) int { return cmp.Compare(a.ino, b.ino) })
	src := e.source(chg.get)
	for _, t := range ts {
		res.views[t] = e.computeView(t, src)
	}
	for _, t := range ts {
		if !t.isDir {
			vs = append(vs, e.checkFile(t, res.views[t], chg)...)
			continue
		}
		parent := false
		for _, f := range e.files {
			if f.parent == t {
				parent = true
				vs = append(vs, e.checkEntry(f, t, res.views[t], chg)...)
			}
		}
		vs = append(vs, e.checkNames(t, res.views[t], chg, !parent)...)
	}
	if res.journalMap && e.jnl != nil {
		// After the files' own violations, which name what they touch.
		vs = append(vs, e.jnl.checkInode(chg)...)
	}
	return vs, res
}

// unchanged reports whether nb, a new version of t's inode-table block,
// holds t's record byte for byte as the model does, while t's current view
// is complete (no error, no subtree or directory block unknown). Unless the
// change also carries one of t's tree or directory blocks (the caller
// checks through their roles), t's view would come out the same: every
// block it was computed from is held in meta and only a change carrying it
// can replace it. A protected inode shares its inode-table block with
// others (16 records of 256 bytes per 4 KiB block), and every commit that
// logs that block would otherwise re-parse all of them.
func (e *Engine) unchanged(t *tracked, nb []byte) bool {
	v := t.view
	if v == nil || v.inode == nil || v.err != nil || len(v.unknown) > 0 || v.dirUnknown {
		return false
	}
	old, ok := e.meta[t.inoBlock]
	n := e.sb.InodeSizeBytes()
	if !ok || len(old) < t.inoOff+n || len(nb) < t.inoOff+n {
		return false
	}
	return bytes.Equal(old[t.inoOff:t.inoOff+n], nb[t.inoOff:t.inoOff+n])
}

// blameInode returns the device bytes to blame for a change to t: its
// inode record when the change carries it, else the first carried block of
// its tree or directory.
func (e *Engine) blameInode(t *tracked, nv *view, chg *change) (int64, int64) {
	if chg.carries[t.inoBlock] {
		return chg.blame(t.inoBlock, t.inoOff, t.inoOff+e.sb.InodeSizeBytes())
	}
	for _, list := range [][]uint64{nv.tree, t.view.tree, nv.dirBlocks, t.view.dirBlocks} {
		for _, b := range list {
			if chg.carries[b] {
				return chg.blame(b, 0, int(e.bs))
			}
		}
	}
	return chg.blame(t.inoBlock, t.inoOff, t.inoOff+e.sb.InodeSizeBytes())
}

func (e *Engine) blameBlock(t *tracked, nv *view, b uint64, chg *change) (int64, int64) {
	if b != t.inoBlock && chg.carries[b] {
		return chg.blame(b, 0, int(e.bs))
	}
	return e.blameInode(t, nv, chg)
}

// checkFile compares a protected file's new view with its current one.
func (e *Engine) checkFile(f *tracked, nv *view, chg *change) []revfs.Violation {
	id := revfs.FileID(f.ino)
	old := f.view
	viol := func(k revfs.Kind, at uint64, format string, args ...any) []revfs.Violation {
		off, n := e.blameBlock(f, nv, at, chg)
		return []revfs.Violation{{Kind: k, File: id, Off: off, Len: n, Detail: fmt.Sprintf(format, args...)}}
	}
	in := nv.inode
	switch {
	case in == nil:
		return viol(revfs.KindUnparseable, f.inoBlock, "inode %d: %v", f.ino, nv.err)
	case in.Mode == 0 || in.LinksCount == 0:
		f.unlinkTried = true
		return viol(revfs.KindInodeFreed, f.inoBlock, "inode %d freed (mode %#o, links %d)", f.ino, in.Mode, in.LinksCount)
	case old.inode != nil && in.Generation != old.inode.Generation:
		return viol(revfs.KindInodeFreed, f.inoBlock, "inode %d reallocated (generation %d -> %d)", f.ino, old.inode.Generation, in.Generation)
	case !in.IsRegular():
		return viol(revfs.KindTypeChanged, f.inoBlock, "inode %d is no longer a regular file (mode %#o)", f.ino, in.Mode)
	case in.Flags&layout.InodeFlagExtents == 0 || in.Flags&layout.InodeFlagInlineData != 0:
		return viol(revfs.KindTypeChanged, f.inoBlock, "inode %d no longer maps its data with extents (flags %s)", f.ino, in.Flags)
	case old.inode != nil && foreignFlags(old.inode.Flags, in.Flags) != 0:
		return viol(revfs.KindTypeChanged, f.inoBlock, "inode %d flags %s -> %s: %s changed, which no host tool changes on a regular file and which changes how the kernel reads it",
			f.ino, old.inode.Flags, in.Flags, foreignFlags(old.inode.Flags, in.Flags))
	case (old.inode == nil || in.FileACL() != old.inode.FileACL()) && e.badXattrBlock(in.FileACL()) != "":
		return viol(revfs.KindUnparseable, f.inoBlock, "inode %d: extended attribute block %d %s: the kernel refuses the inode",
			f.ino, in.FileACL(), e.badXattrBlock(in.FileACL()))
	case nv.err != nil:
		return viol(revfs.KindUnparseable, nv.errAt, "inode %d: %v", f.ino, nv.err)
	}
	var vs []revfs.Violation
	if e.jnl == nil && old.inode != nil && in.LinksCount < old.inode.LinksCount {
		// A name of the file removed: judged at the flush that ends this
		// epoch, once every block of the change has landed (unlink.go,
		// unlinkedAtFlush).
		f.linksDropEpoch = e.epoch
	}
	if nv.size < f.committed {
		vs = append(vs, viol(revfs.KindSizeDecreased, f.inoBlock, "size %d -> %d (committed %d)", old.size, nv.size, f.committed)...)
	}
	if f.committed > 0 {
		n := e.blocksFor(f.committed)
		// A subtree the host has not written yet cannot be judged; the
		// check runs again when it arrives. Only the part under it waits:
		// the rest of the committed range is judged now, or a host could
		// hide one leaf and remap committed blocks in a sibling it did
		// write. (Meanwhile reindex keeps the committed blocks under the
		// unknown part watched: sealedUncovered.)
		got := normalise(nv.maps, n)
		changed := false
		for _, d := range mapDiffs(got, f.sealed, n) {
			if !nv.unknownCovers(d.lo, d.hi) {
				changed = true
				break
			}
		}
		if changed {
			at := f.inoBlock
			for _, b := range nv.tree {
				if chg.carries[b] {
					at = b
					break
				}
			}
			vs = append(vs, viol(revfs.KindMappingChanged, at, "block map of the committed range (%d blocks) changed: %v -> %v", n, f.sealed, got)...)
		}
	}
	return vs
}

// checkNames judges the names a protected path takes in directory d (see
// Engine.watchPath) in its new view nv: each must still name the inode it
// named, or whoever opens the path gets another file (a rename of the file
// or of a directory above it, another file put at the name, an exchange).
// A name that names nothing is judged only with a journal: without one,
// the blocks of one directory change arrive one by one in any order (see
// checkEntry), and the file's own entry has checkEntry's rules. For a
// directory above the files' parents (ancestor), a removed or unreadable
// directory is judged here too; checkEntry does it for a parent.
func (e *Engine) checkNames(d *tracked, nv *view, chg *change, ancestor bool) []revfs.Violation {
	if len(d.names) == 0 {
		return nil
	}
	blame := func() (int64, int64) {
		for _, b := range nv.dirBlocks {
			if chg.carries[b] {
				return chg.blame(b, 0, int(e.bs))
			}
		}
		return e.blameInode(d, nv, chg)
	}
	viol := func(k revfs.Kind, b binding, format string, args ...any) revfs.Violation {
		off, n := blame()
		return revfs.Violation{Kind: k, File: revfs.FileID(b.file.ino), Off: off, Len: n, Detail: fmt.Sprintf(format, args...)}
	}
	names := slices.Sorted(maps.Keys(d.names))
	first := d.names[names[0]]
	switch {
	case nv.inode == nil || nv.err != nil:
		if ancestor {
			return []revfs.Violation{viol(revfs.KindUnparseable, first, "directory %d on the path %s: %v", d.ino, first.file.path, nv.err)}
		}
		return nil
	case nv.freed() || !nv.inode.IsDir():
		if ancestor {
			return []revfs.Violation{viol(revfs.KindDirEntry, first, "directory %d on the path %s was removed (mode %#o, links %d)", d.ino, first.file.path, nv.inode.Mode, nv.inode.LinksCount)}
		}
		return nil
	case nv.dirUnknown || len(nv.unknown) > 0:
		return nil // a directory block the host has not written yet
	}
	var vs []revfs.Violation
	for _, name := range names {
		b := d.names[name]
		got, ok := nv.named[name]
		switch {
		case ok && got == namedTwice:
			vs = append(vs, viol(revfs.KindDirEntry, b, "directory %d holds two entries %q for different inodes: the path %s may lead to another file than inode %d", d.ino, name, b.file.path, b.child))
		case ok && uint64(got) != b.child:
			vs = append(vs, viol(revfs.KindDirEntry, b, "entry %q of directory %d names inode %d, not %d: the path %s leads to another file", name, d.ino, got, b.child, b.file.path))
		case !ok && e.jnl != nil && !(b.child == b.file.ino && nv.entries[uint32(b.child)] == 0):
			// (A file's last entry gone is checkEntry's.)
			vs = append(vs, viol(revfs.KindDirEntry, b, "entry %q of directory %d, naming inode %d, is gone: the path %s leads nowhere", name, d.ino, b.child, b.file.path))
		case ok && d.view.namedType[name] != 0 && nv.namedType[name] != 0 && nv.namedType[name] != d.view.namedType[name]:
			// (0, unknown, was seen in a view of a root being turned
			// into an htree without a journal: not judged.)
			vs = append(vs, viol(revfs.KindDirEntry, b, "entry %q of directory %d changes its file type %d -> %d: readers of the path %s are told it is another kind of file", name, d.ino, d.view.namedType[name], nv.namedType[name], b.file.path))
		}
	}
	for _, name := range nv.dxMissed {
		if b, ok := d.names[name]; ok && !slices.Contains(d.view.dxMissed, name) {
			vs = append(vs, viol(revfs.KindDirEntry, b, "the htree index of directory %d no longer leads to its entry %q: the kernel's lookup of %s misses it (the path leads nowhere)", d.ino, name, b.file.path))
		}
	}
	if d.view.dxHash >= 0 && nv.dxHash >= 0 && nv.dxHash != d.view.dxHash {
		vs = append(vs, viol(revfs.KindDirEntry, first, "htree of directory %d changes its hash version %d -> %d: the kernel's lookup of %s would miss the name", d.ino, d.view.dxHash, nv.dxHash, first.file.path))
	}
	return vs
}

// checkEntry reports a protected file whose entry left its directory d in
// d's new view nv.
func (e *Engine) checkEntry(f, d *tracked, nv *view, chg *change) []revfs.Violation {
	id := revfs.FileID(f.ino)
	blameAt := func(b uint64) (int64, int64) {
		if chg.carries[b] {
			return chg.blame(b, 0, int(e.bs))
		}
		return e.blameInode(d, nv, chg)
	}
	switch {
	case nv.inode == nil || nv.err != nil:
		off, n := blameAt(nv.errAt)
		return []revfs.Violation{{Kind: revfs.KindUnparseable, File: id, Off: off, Len: n, Detail: fmt.Sprintf("directory %d of file %d: %v", d.ino, f.ino, nv.err)}}
	case nv.freed() || !nv.inode.IsDir():
		off, n := blameAt(d.inoBlock)
		return []revfs.Violation{{Kind: revfs.KindDirEntry, File: id, Off: off, Len: n, Detail: fmt.Sprintf("directory %d holding file %d was removed (mode %#o, links %d)", d.ino, f.ino, nv.inode.Mode, nv.inode.LinksCount)}}
	case nv.dirUnknown || len(nv.unknown) > 0:
		return nil // a directory block the host has not written yet
	case nv.entries[uint32(f.ino)] > 0:
		delete(e.gone, f.ino) // back (or never gone)
	case d.view.entries[uint32(f.ino)] > 0:
		if e.jnl == nil && !f.unlinkTried {
			// Without a journal the blocks of one directory change
			// (a rename into another block, an htree split) reach the
			// device one by one, in any order: a block without the entry
			// does not mean the entry is gone. An attempt to free the
			// inode does (checkFile); until then the removal is only
			// remembered (unlink.go), and judged at the flush if the
			// link count fell in this epoch (unlinkedAtFlush).
			e.noteGone(f, d, nv)
			e.log.Info("ext4: entry of a protected file not in its directory's known blocks", "file", f.ino, "dir", d.ino)
			return nil
		}
		off, n := blameAt(d.view.entryBlock[uint32(f.ino)])
		return []revfs.Violation{{Kind: revfs.KindDirEntry, File: id, Off: off, Len: n, Detail: fmt.Sprintf("entry of file %d (%s) removed from directory %d", f.ino, f.path, d.ino)}}
	}
	return nil
}

// checkSuper compares a new primary superblock with the current one: any
// change to what locates data (geometry, features that change layout, the
// journal, the UUID) means a new mkfs or a resize. needs_recovery may come
// and go (every mount sets it), but not while the journal holds copies
// the protected files depend on (wipedAtMount).
func (e *Engine) checkSuper(raw []byte, chg *change, b uint64) []revfs.Violation {
	off, n := chg.blame(b, e.sbOff, e.sbOff+layout.SuperBlockSize)
	viol := func(format string, args ...any) []revfs.Violation {
		return []revfs.Violation{{Kind: revfs.KindLayoutChanged, Off: off, Len: n, Detail: fmt.Sprintf(format, args...)}}
	}
	nsb, err := layout.ParseSuperBlock(raw)
	if err != nil {
		return viol("superblock no longer parses: %v", err)
	}
	if d := layoutChange(e.sb, nsb); d != "" {
		return viol("%s", d)
	}
	if e.jnl != nil && nsb.FeatureIncompat&layout.IncompatRecover == 0 {
		if why := e.jnl.wipedAtMount(); why != "" {
			return viol("%s", why)
		}
	}
	return nil
}

// layoutChange describes how superblock nsb changes the layout o
// describes, or returns "" when it keeps it: the engine refuses a new
// layout, and never adopts one (its tracked inodes, bitmaps and tables
// are located with the old one).
func layoutChange(o, nsb *layout.SuperBlock) string {
	const incompatMask = ^layout.IncompatRecover // set and cleared by every mount
	const roMask = layout.ROCompatMetadataCsum | layout.ROCompatBigalloc | layout.ROCompatGDTCsum |
		layout.ROCompatHasSnapshot | layout.ROCompatSharedBlocks | layout.ROCompatReplica
	switch {
	case nsb.UUID != o.UUID:
		return "filesystem UUID changed (new mkfs?)"
	case nsb.BlocksCount() != o.BlocksCount():
		return fmt.Sprintf("block count %d -> %d (resize)", o.BlocksCount(), nsb.BlocksCount())
	case nsb.LogBlockSize != o.LogBlockSize || nsb.LogClusterSize != o.LogClusterSize:
		return fmt.Sprintf("block size %d -> %d", o.BlockSize(), nsb.BlockSize())
	case nsb.BlocksPerGroup != o.BlocksPerGroup || nsb.InodesPerGroup != o.InodesPerGroup ||
		nsb.InodeSizeBytes() != o.InodeSizeBytes() || nsb.DescSizeBytes() != o.DescSizeBytes() ||
		nsb.FirstDataBlock != o.FirstDataBlock || nsb.InodesCount != o.InodesCount:
		return "group geometry changed"
	case nsb.FeatureIncompat&incompatMask != o.FeatureIncompat&incompatMask:
		return fmt.Sprintf("incompatible features %s -> %s", o.FeatureIncompat, nsb.FeatureIncompat)
	case nsb.FeatureROCompat&roMask != o.FeatureROCompat&roMask:
		return fmt.Sprintf("read-only-compatible features %s -> %s", o.FeatureROCompat, nsb.FeatureROCompat)
	case nsb.FeatureCompat&layout.CompatHasJournal != o.FeatureCompat&layout.CompatHasJournal || nsb.JournalInum != o.JournalInum:
		return fmt.Sprintf("journal changed (has_journal %v, inode %d -> %d)", nsb.FeatureCompat&layout.CompatHasJournal != 0, o.JournalInum, nsb.JournalInum)
	case o.FeatureIncompat&layout.IncompatCsumSeed != 0 && nsb.ChecksumSeedField != o.ChecksumSeedField:
		return "checksum seed changed"
	// The kernel never rewrites these (ext4_fill_super only adds a hash
	// signedness flag to a filesystem that has none), and each changes
	// what the host finds: another seed or hash makes htree lookups of
	// existing names miss them (ENOENT), another first inode makes the
	// protected inode a reserved one (EUCLEAN). A red team's finding.
	case nsb.HashSeed != o.HashSeed:
		// (Not s_def_hash_version: each htree's root names its own
		// hash, the default only applies to new ones.)
		return "directory hash seed changed: htree lookups of existing names would miss them"
	case o.Flags&hashFlags != 0 && nsb.Flags&hashFlags != o.Flags&hashFlags:
		return fmt.Sprintf("directory hash signedness flags %#x -> %#x", o.Flags&hashFlags, nsb.Flags&hashFlags)
	case nsb.FirstIno != o.FirstIno:
		return fmt.Sprintf("first non-reserved inode %d -> %d", o.FirstIno, nsb.FirstIno)
	}
	return ""
}

// hashFlags are s_flags' EXT2_FLAGS_SIGNED_HASH and EXT2_FLAGS_UNSIGNED_HASH.
const hashFlags = 0x1 | 0x2

// checkGroupDescs compares the descriptors in a new version of a group
// descriptor table block: moving a bitmap or inode table is a new layout.
func (e *Engine) checkGroupDescs(b uint64, nb []byte, chg *change) []revfs.Violation {
	ds := e.sb.DescSizeBytes()
	per := int(e.bs) / ds
	var vs []revfs.Violation
	for i := 0; i < per; i++ {
		g := int(b-e.gdtFirst)*per + i
		if g >= len(e.groups) {
			break
		}
		gd, err := layout.ParseGroupDesc(nb[i*ds:], ds)
		o := e.groups[g]
		if err != nil || gd.BlockBitmap() != o.BlockBitmap() || gd.InodeBitmap() != o.InodeBitmap() || gd.InodeTable() != o.InodeTable() {
			off, n := chg.blame(b, i*ds, (i+1)*ds)
			vs = appendMergedLayout(vs, revfs.Violation{Kind: revfs.KindLayoutChanged, Off: off, Len: n,
				Detail: fmt.Sprintf("group %d descriptor moves its bitmaps or inode table", g)})
		}
	}
	return vs
}

func appendMergedLayout(vs []revfs.Violation, v revfs.Violation) []revfs.Violation {
	if k := len(vs); k > 0 && vs[k-1].Off+vs[k-1].Len == v.Off {
		vs[k-1].Len += v.Len
		vs[k-1].Detail = "group descriptors move bitmaps or inode tables"
		return vs
	}
	return append(vs, v)
}

// applyChange makes the change's versions the model.
func (e *Engine) applyChange(chg *change, res *result, touched map[*tracked]bool) {
	now := e.now()
	if res.sb != nil {
		if nsb, err := layout.ParseSuperBlock(res.sb); err == nil && layoutChange(e.sb, nsb) == "" {
			e.sb, e.rawSB = nsb, res.sb
		}
		if d, ok := chg.get(e.sbBlock); ok {
			e.meta[e.sbBlock] = bytes.Clone(d)
		}
	}
	for b, d := range res.gdt {
		e.noteGroupDescs(b, e.meta[b], d)
		e.meta[b] = d
	}
	for b, d := range res.bitmaps {
		e.applyBitmap(b, d)
	}
	if res.journalMap && e.jnl != nil {
		// Held as the newest version of the block (a partial write is
		// merged into it), as for the superblock; the journal's map
		// stays the one Open found.
		for _, b := range e.jnl.mapBlocks() {
			if d, ok := chg.get(b); ok && !bytes.Equal(e.meta[b], d) {
				e.meta[b] = bytes.Clone(d)
			}
		}
	}
	for _, t := range res.same {
		// The view stays; the block's other records changed.
		if d, ok := chg.get(t.inoBlock); ok && !bytes.Equal(e.meta[t.inoBlock], d) {
			e.meta[t.inoBlock] = bytes.Clone(d)
		}
		t.lastTouch = now
		if !t.isDir {
			touched[t] = true
			continue
		}
		for _, f := range e.files {
			if f.parent == t {
				f.lastTouch = now
			}
		}
	}
	// Every inode's dropped blocks are set aside before any view claims
	// blocks: one write can move a block from one file to another.
	for t, nv := range res.views {
		e.forgetDropped(t, t.view, nv)
	}
	for t, nv := range res.views {
		old := t.view
		t.view = nv
		e.claimDropped(t, nv)
		for b, d := range nv.used {
			// Most blocks a view uses are the versions meta already
			// holds (immutable): copy only new ones. The view then holds
			// meta's copy, not the request's buffer (which the NBD
			// server reuses once the request is answered).
			if cur, ok := e.meta[b]; ok && bytes.Equal(cur, d) {
				nv.used[b] = cur
				continue
			}
			c := bytes.Clone(d)
			e.meta[b] = c
			nv.used[b] = c
		}
		t.lastTouch = now
		if !t.isDir {
			touched[t] = true
			if nv.inode != nil && old.inode != nil && (nv.size != old.size || !slices.Equal(nv.maps, old.maps)) {
				t.journalled = chg.journal
			}
			if nv.inode != nil && (old.inode == nil || nv.size > old.size) {
				t.grew = e.seq
				t.noteSize(e.seq, nv.size)
			}
			e.markMapped(t, old, nv)
			if nv.inode != nil && nv.inode.Flags&layout.InodeFlagJournalData != 0 {
				t.dataJournalled = true
			}
		} else {
			for _, f := range e.files {
				if f.parent == t {
					f.lastTouch = now
				}
			}
		}
	}
	e.dirty = true
}

// forgetDropped sets aside the blocks a tracked inode stopped using: tree
// blocks no longer referenced and data blocks beyond the committed range
// no longer mapped. ext4 frees them, and without a journal it may hand
// them out again before the device ever sees their bitmap bit clear; a new
// owner must write them before they count. Without a journal, tree blocks
// and data blocks inside the new size are forgotten only once another
// owner claims them (dropped.go: the view may join an inode and a leaf of
// different moments; a file does not lose blocks inside its size).
func (e *Engine) forgetDropped(t *tracked, old, nv *view) {
	if nv.inode == nil || nv.err != nil {
		return
	}
	if len(nv.unknown) == 0 {
		// (An incomplete view may leave tree blocks out.)
		keep := map[uint64]bool{}
		for _, b := range nv.tree {
			keep[b] = true
		}
		for _, b := range old.tree {
			switch {
			case keep[b]:
			case e.jnl == nil:
				e.drop(droppedSpan{phys: b, n: 1, ino: t.ino, tree: true})
			default:
				e.written.Remove(b, 1)
			}
		}
	}
	if t.isDir {
		return
	}
	known := old.maps
	if t.knownSet {
		known = t.known
	}
	unknown := nv.unknownMerged() // sorted once for the walk below
	t.known, t.knownSet = knownMap(known, nv.maps, unknown), true
	if slices.Equal(known, nv.maps) {
		return
	}
	// Data blocks below inside are set aside: without a journal, when the
	// inode still counts as many blocks as before (i_blocks), so that it
	// did not free any (a truncate or a punched hole lowers it; a view
	// joining the inode with an older leaf does not).
	inside := uint64(0)
	if e.jnl == nil && old.inode != nil && nv.inode.Blocks() >= old.inode.Blocks() {
		inside = e.blocksFor(nv.size)
	}
	from := e.blocksFor(t.committed)
	// Walk each known mapping past the committed blocks in pieces that
	// the new maps cover in one way (one new mapping, or none); both map
	// linearly, so a piece keeps its physical blocks or loses all of
	// them. Pieces under the new view's unknown ranges are not judged:
	// the known map keeps them for the next view.
	for _, m := range known {
		lb, end := max(m.Logical, from), m.Logical+m.Len
		for lb < end {
			n, covered, next := nv.around(lb)
			stop := min(end, next)
			if covered {
				stop = min(end, n.Logical+n.Len)
				if n.Physical+lb-n.Logical == m.Physical+lb-m.Logical {
					lb = stop
					continue
				}
			}
			for _, r := range outside(unknown, lb, stop) {
				e.dropData(t, m, r.lo, r.hi, inside)
			}
			lb = stop
		}
	}
}

// dropData forgets, or sets aside below block inside, the physical blocks
// of mapping m at logical blocks [lo, hi), which t no longer maps there.
func (e *Engine) dropData(t *tracked, m layout.Mapping, lo, hi, inside uint64) {
	if aside := min(hi, max(lo, inside)); aside > lo {
		e.drop(droppedSpan{phys: m.Physical + lo - m.Logical, n: aside - lo, logical: lo, ino: t.ino})
		lo = aside
	}
	if lo < hi {
		e.written.Remove(m.Physical+lo-m.Logical, hi-lo)
	}
}

// knownMap is the known block map after a view with block map maps and
// unknown ranges unknown (sorted and merged): maps, and under the unknown
// ranges what known held there, sorted by logical block.
func knownMap(known, maps []layout.Mapping, unknown []lrange) []layout.Mapping {
	if len(unknown) == 0 {
		return maps
	}
	out := slices.Clone(maps)
	for _, u := range unknown {
		for _, m := range known {
			lo, hi := max(m.Logical, u.lo), min(m.Logical+m.Len, u.hi)
			if lo < hi {
				out = append(out, layout.Mapping{Logical: lo, Physical: m.Physical + lo - m.Logical, Len: hi - lo, Unwritten: m.Unwritten})
			}
		}
	}
	slices.SortFunc(out, func(a, b layout.Mapping) int { return cmp.Compare(a.Logical, b.Logical) })
	return out
}

// applyBitmap takes a new version of a block bitmap: blocks whose bit goes
// from 1 to 0 were freed, so they no longer count as written (a later
// owner must write them again before its bytes are trusted), except, in a
// journal commit, blocks written after its log (keptFrom).
func (e *Engine) applyBitmap(b uint64, nb []byte) {
	old := e.bitmaps[b]
	base := uint64(e.sb.FirstDataBlock) + e.bitmapG[b]*uint64(e.sb.BlocksPerGroup)
	var limit uint64
	if base < e.blocks {
		limit = min(uint64(e.sb.BlocksPerGroup), e.blocks-base, uint64(len(old))*8, uint64(len(nb))*8)
	}
	bitRuns(limit, func(w uint64) uint64 { return word64(old, w) &^ word64(nb, w) }, func(lo, hi uint64) {
		from := base + lo
		for _, k := range e.keptFrom(base+lo, base+hi) {
			e.written.Remove(from, k.start-from)
			from = k.end
		}
		e.written.Remove(from, base+hi-from)
	})
	e.bitmaps[b] = nb
}

// CheckDiscard reports TRIM or WRITE_ZEROES over committed data or watched
// metadata.
func (e *Engine) CheckDiscard(off, length int64) []revfs.Violation {
	if length <= 0 || off < 0 {
		return nil
	}
	e.reindexIfDirty()
	end := off + length
	fsEnd := int64(e.blocks) * e.bs
	if off >= fsEnd {
		return nil
	}
	end = min(end, fsEnd)
	first, last := uint64(off/e.bs), uint64((end-1)/e.bs)
	var vs []revfs.Violation
	for _, d := range e.dataAt(first, last) {
		f := d.file
		lo, hi, _ := d.overlap(first, last)
		for pb := lo; pb < hi; pb++ {
			start := int64(d.logical+pb-d.phys) * e.bs
			if start >= f.committed {
				continue
			}
			dev := int64(pb) * e.bs
			s, t := max(dev, off), min(dev+min(e.bs, f.committed-start), end)
			if s < t {
				vs = appendMerged(vs, revfs.Violation{Kind: revfs.KindDiscard, File: revfs.FileID(f.ino), Off: s, Len: t - s,
					Detail: "discard over committed data"})
			}
		}
	}
	for _, b := range e.metaBlocksIn(first, last) {
		for _, r := range e.roles[b] {
			if r.kind == roleBitmap {
				continue
			}
			var id revfs.FileID
			if r.owner != nil && !r.owner.isDir {
				id = revfs.FileID(r.owner.ino)
			}
			dev := int64(b) * e.bs
			s, t := max(dev, off), min(dev+e.bs, end)
			vs = append(vs, revfs.Violation{Kind: revfs.KindDiscard, File: id, Off: s, Len: t - s,
				Detail: fmt.Sprintf("discard over watched metadata block %d", b)})
			break
		}
	}
	return vs
}

// metaBlocksIn lists the blocks with roles in [first, last], in order,
// walking the watched spans so a huge discard costs what it touches.
func (e *Engine) metaBlocksIn(first, last uint64) []uint64 {
	var out []uint64
	i := sort.Search(len(e.watched), func(i int) bool { return e.watched[i].end > first })
	for ; i < len(e.watched) && e.watched[i].start <= last; i++ {
		s := e.watched[i]
		lo, hi := max(s.start, first), min(s.end, last+1)
		if hi-lo > uint64(len(e.roles)) {
			for b := range e.roles {
				if b >= lo && b < hi {
					out = append(out, b)
				}
			}
			continue
		}
		for b := lo; b < hi; b++ {
			if _, ok := e.roles[b]; ok {
				out = append(out, b)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Discarded records a TRIM or WRITE_ZEROES that landed: the blocks no
// longer hold what the host wrote, and watched metadata reads as zeroes.
func (e *Engine) Discarded(off, length int64) {
	e.mut++
	if length <= 0 || off < 0 {
		return
	}
	e.reindexIfDirty()
	fsEnd := int64(e.blocks) * e.bs
	if off >= fsEnd {
		return
	}
	end := min(off+length, fsEnd)
	first, last := uint64(off/e.bs), uint64((end-1)/e.bs)
	e.written.Remove(first, last-first+1)
	for _, b := range e.metaBlocksIn(first, last) {
		dev := int64(b) * e.bs
		s, t := max(dev, off), min(dev+e.bs, end)
		e.process(s, make([]byte, t-s), true)
	}
	for _, d := range e.dataAt(first, last) {
		lo, hi, _ := d.overlap(first, last)
		for pb := lo; pb < hi; pb++ {
			delete(e.overlay, pb)
		}
	}
	if j := e.jnl; j != nil {
		// Zeroed log blocks no longer hold the copies they held.
		for _, m := range j.byPhys {
			lo, hi := max(m.Physical, first), min(m.Physical+m.Len, last+1)
			for pb := lo; pb < hi; pb++ {
				j.reused(uint32(m.Logical+pb-m.Physical), map[*tracked]bool{})
			}
		}
	}
	e.written.Remove(first, last-first+1)
	for _, f := range e.files {
		e.updateCoherent(f)
	}
}

// recentWrite is a host write the engine recorded (Engine.recent).
type recentWrite struct{ first, n, seq uint64 }

// maxRecent bounds Engine.recent; past it the older half is dropped, and
// blocks only they wrote are forgotten when freed, as without the list.
const maxRecent = 1 << 16

// noteRecent records a host write of n blocks from first (Engine.recent).
func (e *Engine) noteRecent(first, n uint64) {
	if e.jnl == nil {
		return
	}
	if len(e.recent) >= maxRecent {
		e.recent = append(e.recent[:0], e.recent[len(e.recent)/2:]...)
	}
	e.recent = append(e.recent, recentWrite{first, n, e.seq})
}

// keptFrom returns, sorted and disjoint, the parts of [lo, hi) that a
// journal commit being applied frees but that stay written: the host wrote
// them after the commit's first log block (Engine.freedAfter).
//
// With data=writeback, ext4 frees a data block for reuse at once, not
// when the transaction freeing it commits (fs/ext4/mballoc.c,
// ext4_mb_clear_bb: only EXT4_FREE_BLOCKS_METADATA blocks, or data blocks
// in the other modes, wait in ext4_mb_free_metadata). The next transaction
// can allocate the block to another file, and writeback write its data,
// while jbd2 is still writing the frozen copy of the bitmap that shows it
// free: the new owner's data reaches the device before the commit that
// frees the block. The old owner's last write does not: ext4 waits for a
// file's writeback and direct I/O before it frees its blocks, inside a
// handle of that transaction, and jbd2 writes the transaction's log only
// once all its handles are done. A write after the first log block is the
// new owner's.
func (e *Engine) keptFrom(lo, hi uint64) []span {
	if e.freeing == nil {
		return nil
	}
	if e.freedAfter == 0 {
		// Only a commit that frees blocks needs it: found once, on the
		// first freed run, rather than for every commit applied.
		if e.freedAfter = e.jnl.firstLogWrite(*e.freeing); e.freedAfter == 0 {
			e.freeing = nil // unknown: nothing is kept
			return nil
		}
	}
	i := sort.Search(len(e.recent), func(i int) bool { return e.recent[i].seq > e.freedAfter })
	var out []span
	for _, w := range e.recent[i:] {
		if s, t := max(w.first, lo), min(w.first+w.n, hi); s < t {
			out = append(out, span{s, t})
		}
	}
	slices.SortFunc(out, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	return mergeSpans(nil, out, nil)
}
