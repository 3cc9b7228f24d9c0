package ext4

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// Sealed bytes under a journal recovery.
//
// At Open, the engine knows what it sealed of each protected file (the
// store's watermark) but not where it found those bytes: the block map it
// froze at sealing was in memory. The home blocks show part of it (the
// inode and extent tree as last checkpointed), and judgeRecovery freezes
// that part; the rest of the committed range may be mapped only by the
// transactions a recovery would replay, which the host wrote, so a host
// that rewrote those transactions in the live log (not judged again while
// the device ran) could map committed bytes to blocks holding something
// else, and Open would freeze the forged map.
//
// So Open compares the bytes the recovered view shows with the sealed
// bytes themselves (the real logs, Options.Sealed), wherever the recovery
// changes them: the committed blocks the recovered map places differently
// from the home map, and those whose block a replayed transaction carries a
// copy of (data=journal). Elsewhere the home blocks hold what was sealed,
// which every write since has been judged against. The kernel checkpoints
// (writes metadata home) within about half a minute of a commit, so an
// honest recovery compares roughly that much appended data; a forged one
// at most the files' committed bytes, once.

// sealedContent reports the committed ranges whose bytes the change (a
// recovery's transactions, res its evaluation) would show differently
// from what was sealed: committed holds the watermarks.
func (j *journal) sealedContent(chg *change, res *result, committed map[revfs.FileID]int64) []revfs.Violation {
	e := j.e
	if e.readSealed == nil {
		return nil
	}
	var vs []revfs.Violation
	for _, f := range e.files {
		c := committed[revfs.FileID(f.ino)]
		nv := res.views[f]
		if c <= 0 || nv == nil || nv.inode == nil {
			continue // a file the change leaves alone shows its home bytes
		}
		if v, ok := e.compareSealed(f, nv, c, chg, "journal recovery would show"); !ok {
			vs = append(vs, v)
		}
	}
	return vs
}

// compareSealed compares file f's first c bytes as view nv shows them,
// where nv or chg changes them from the home view or nv shows zeroes, with
// the sealed bytes; it returns the first difference as a violation, whose
// detail starts with what (what shows the bytes).
func (e *Engine) compareSealed(f *tracked, nv *view, c int64, chg *change, what string) (revfs.Violation, bool) {
	id := revfs.FileID(f.ino)
	nb := e.blocksFor(c)
	maps := normalise(nv.maps, nb)
	todo := mapDiffs(normalise(f.view.maps, nb), maps, nb)
	// Blocks the recovered map leaves as holes or unwritten extents read
	// as zeroes, whatever the home map says: sealed bytes there must be
	// zeroes too (a replay that leaves out the transaction converting an
	// extent, or a home map that never got it, shows zeroes where the
	// device sealed data). One run per gap, found from the map's extents.
	todo = append(todo, gaps(maps, nb)...)
	// Blocks the recovered map keeps but a replayed copy rewrites: for
	// each run, the carried blocks inside it (a search in the sorted
	// copies, not a walk of the file's blocks; runs may overlap in a
	// forged map, and each is searched).
	homes := slices.Clone(chg.homes)
	slices.Sort(homes)
	for _, m := range maps {
		if m.Unwritten {
			continue
		}
		i, _ := slices.BinarySearch(homes, m.Physical)
		for ; i < len(homes) && homes[i] < m.Physical+m.Len; i++ {
			lb := m.Logical + homes[i] - m.Physical
			todo = append(todo, lrange{lb, lb + 1})
		}
	}
	slices.SortFunc(todo, func(a, b lrange) int { return cmp.Compare(a.lo, b.lo) })
	got, want := make([]byte, e.bs), make([]byte, e.bs)
	next := uint64(0) // blocks below it are compared
	for _, r := range todo {
		for lb := max(r.lo, next); lb < r.hi; lb++ {
			n := min(e.bs, c-int64(lb)*e.bs)
			off := int64(lb) * e.bs
			bad := func(why string) (revfs.Violation, bool) {
				return revfs.Violation{Kind: revfs.KindDataChanged, File: id,
					Detail: fmt.Sprintf("%s committed bytes [%d, %d) %s", what, off, off+n, why)}, false
			}
			if nv.unknownIn(lb, lb+1) {
				return bad("through extent-tree nodes never written")
			}
			if err := e.readSealed(id, want[:n], off); err != nil {
				e.log.Warn("ext4: cannot read sealed bytes to compare with the journal's", "file", f.ino, "err", err)
				return revfs.Violation{}, true
			}
			if err := e.recoveredBlock(nv, lb, chg, got); err != nil {
				return bad(fmt.Sprintf("from a block that cannot be read (%v)", err))
			}
			if e.jnl != nil {
				e.jnl.sealedCompared += n
			}
			if !bytes.Equal(got[:n], want[:n]) {
				return bad("holding other bytes than were sealed")
			}
		}
		next = max(next, r.hi)
	}
	return revfs.Violation{}, true
}

// gaps returns the logical ranges of [0, n) that a normalised block map
// leaves unmapped or maps unwritten.
func gaps(maps []layout.Mapping, n uint64) []lrange {
	var out []lrange
	lb := uint64(0)
	for _, m := range maps {
		if m.Logical >= n {
			break
		}
		if m.Logical > lb {
			out = append(out, lrange{lb, m.Logical})
		}
		if m.Unwritten {
			out = append(out, lrange{m.Logical, min(m.Logical+m.Len, n)})
		}
		lb = max(lb, m.Logical+m.Len)
	}
	if lb < n {
		out = append(out, lrange{lb, n})
	}
	return out
}

// sealedGaps compares the committed bytes that file f's current view
// shows as holes or unwritten extents (zeroes) with the sealed bytes, at
// Open: a clean log, or one whose recovery was not applied, shows the home
// map, and the sealed bytes there must be zeroes too. A host that moved
// the log's start past an extent conversion before it was written home,
// while the device did not watch, leaves such a gap.
func (e *Engine) sealedGaps(f *tracked, c int64) (revfs.Violation, bool) {
	if e.readSealed == nil || c <= 0 || f.view.inode == nil {
		return revfs.Violation{}, true
	}
	nb := e.blocksFor(c)
	if len(gaps(normalise(f.view.maps, nb), nb)) == 0 {
		return revfs.Violation{}, true // the usual case
	}
	empty := &change{peek: func(uint64) ([]byte, bool) { return nil, false }}
	return e.compareSealed(f, f.view, c, empty, "at open, the image shows")
}

// recoveredBlock reads into p logical block lb of a file as view nv maps it
// after the change: the newest copy the change carries of its block, else
// the image; zeroes for a hole or an unwritten extent.
func (e *Engine) recoveredBlock(nv *view, lb uint64, chg *change, p []byte) error {
	m, ok := nv.lookup(lb)
	if !ok || m.Unwritten {
		clear(p)
		return nil
	}
	pb := m.Physical + lb - m.Logical
	if pb >= e.blocks {
		return fmt.Errorf("block %d beyond the filesystem", pb)
	}
	if d, ok := chg.peek(pb); ok {
		copy(p, d)
		return nil
	}
	_, err := e.readImageInto(p, pb)
	return err
}
