package ext4

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// The journal's own block map.
//
// The engine reads the log where the journal inode (s_journal_inum) mapped
// it at Open, and never re-reads that map: the journal's blocks are watched
// from then on as the log, and a later mount follows whatever the inode
// says then. A host that rewrites the inode's extents or size (its record
// shares an inode-table block with other inodes, often protected ones)
// could move or resize the journal under the engine, which would keep
// reading the old place while the kernel's recovery, and the device's next
// Open, read the new one. So the blocks holding the journal inode's record
// and its extent tree are watched like the superblock, and any change to
// what they map is a layout change.
//
// The kernel never writes the journal inode: jbd2 maps it once at mount
// (jbd2_journal_init_inode, bmap), ext4 keeps it out of the VFS, and no
// transaction dirties it. It does write the inode-table block holding it,
// whenever another inode of that block changes, but from its buffer, with
// the journal's record as it was read. Only what locates the log is
// compared (the mapping, the extent tree's blocks, the size, whether the
// inode is live), not the timestamps or the checksum.

// mapBlocks returns the blocks that say where the journal lies: the
// inode-table block holding its record, then its extent tree blocks (none
// when the extents fit in the inode).
func (j *journal) mapBlocks() []uint64 {
	return append([]uint64{j.ino.inoBlock}, j.ino.view.tree...)
}

// checkInode reports a change that carries one of the journal's map
// blocks and changes where or how long the journal is.
func (j *journal) checkInode(chg *change) []revfs.Violation {
	e, t := j.e, j.ino
	carriesTree := slices.ContainsFunc(t.view.tree, func(b uint64) bool { return chg.carries[b] })
	if nb, ok := chg.get(t.inoBlock); ok && !carriesTree {
		// The usual case: another inode of the block changed.
		n := e.sb.InodeSizeBytes()
		old := t.view.used[t.inoBlock]
		if len(nb) >= t.inoOff+n && bytes.Equal(old[t.inoOff:t.inoOff+n], nb[t.inoOff:t.inoOff+n]) {
			return nil
		}
	}
	// The new view reads the change's blocks over the ones Open read (the
	// reference: the engine never adopts another journal map), over what
	// the host has written.
	base := e.source(nil)
	nv := e.computeView(t, func(b uint64) ([]byte, bool, error) {
		if d, ok := chg.get(b); ok {
			return d, true, nil
		}
		if d, ok := t.view.used[b]; ok {
			return d, true, nil
		}
		return base(b)
	})
	why := journalMapChange(t.view, nv)
	if why == "" {
		return nil
	}
	var off, n int64
	switch {
	case chg.carries[t.inoBlock]:
		off, n = chg.blame(t.inoBlock, t.inoOff, t.inoOff+e.sb.InodeSizeBytes())
	default:
		for _, b := range t.view.tree {
			if chg.carries[b] {
				off, n = chg.blame(b, 0, int(e.bs))
				break
			}
		}
	}
	return []revfs.Violation{{Kind: revfs.KindLayoutChanged, Off: off, Len: n,
		Detail: fmt.Sprintf("journal inode %d: %s (the engine follows the journal where it was at open)", t.ino, why)}}
}

// journalMapChange describes how nv, a new view of the journal inode,
// changes where the journal lies or how long it is compared with old, or
// returns "" when it does not.
func journalMapChange(old, nv *view) string {
	in := nv.inode
	switch {
	case in == nil:
		return fmt.Sprintf("record no longer parses: %v", nv.err)
	case nv.freed():
		return fmt.Sprintf("freed (mode %#o, links %d)", in.Mode, in.LinksCount)
	case !in.IsRegular() || in.Flags&layout.InodeFlagExtents == 0 || in.Flags&layout.InodeFlagInlineData != 0:
		return fmt.Sprintf("no longer a regular file mapped by extents (mode %#o, flags %s)", in.Mode, in.Flags)
	case nv.err != nil:
		return fmt.Sprintf("extent tree no longer parses: %v", nv.err)
	case len(nv.unknown) > 0:
		return fmt.Sprintf("extent tree points at blocks %v the host has not written", nv.tree)
	case nv.size != old.size:
		return fmt.Sprintf("size %d -> %d", old.size, nv.size)
	case !slices.Equal(nv.tree, old.tree):
		// Even with the same mapping: the engine would keep watching the
		// old tree blocks, and the new ones could change it unseen.
		return fmt.Sprintf("extent tree blocks %v -> %v", old.tree, nv.tree)
	}
	// However the extents are split, the same blocks in the same order
	// are the same journal.
	if a, b := normalise(old.maps, math.MaxUint64), normalise(nv.maps, math.MaxUint64); !slices.Equal(a, b) {
		return fmt.Sprintf("block map %s -> %s", extentsString(a), extentsString(b))
	}
	return ""
}

// extentsString writes a block map as debugfs does: (logical
// range):physical range, "uninit" for unwritten extents.
func extentsString(maps []layout.Mapping) string {
	var b strings.Builder
	for i, m := range maps {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%d-%d):%d-%d", m.Logical, m.Logical+m.Len-1, m.Physical, m.Physical+m.Len-1)
		if m.Unwritten {
			b.WriteString(" uninit")
		}
	}
	return b.String()
}
