package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// Unlinks without a journal.
//
// With no journal the kernel writes a directory block and the inode it
// unlinks separately, in either order, and a block without a protected
// file's entry proves nothing by itself (a rename may be moving the entry
// to a block not written yet). An attempt to free the inode does prove an
// unlink. So:
//
//   - once the host has tried to free the inode (tracked.unlinkTried), a
//     directory write that drops the entry is a KindDirEntry violation
//     (checkEntry), and the discard response keeps the block's old bytes;
//   - a link count that falls (another name of the file removed: maybe
//     this one) is judged at the FLUSH that ends its epoch, when every
//     block of the change has landed: a directory that then lacks the
//     entry is a KindDirEntry violation (unlinkedAtFlush), the file
//     unlinked while a name outside the watched directories keeps it
//     alive (as a copy of the log directory made with cp -al does). It is
//     raised there, after the fact: the discard response does not put the
//     name back. A FLUSH between the inode write and the directory's lets
//     it through;
//   - a directory write that dropped the entry before that is let through
//     but remembered here (the block's version that held it); when the
//     inode write then raises KindInodeFreed, RepairDiscard puts the
//     entry back into the block as it is now
//     (whatever else changed in it since), so that the discard response
//     leaves both the inode and its name in place.
//
// The host still holds the entry-less block in its cache; if it writes it
// again, the first rule applies.

// goneEntry is a protected file's entry that a directory write removed.
type goneEntry struct {
	file  uint64
	block uint64 // the directory block that held it
	old   []byte // that block before the removal
}

// noteGone remembers that nv, a new view of directory d, lost f's entry.
func (e *Engine) noteGone(f, d *tracked, nv *view) {
	if e.gone[f.ino] != nil {
		return
	}
	b, ok := d.view.entryBlock[uint32(f.ino)]
	if !ok {
		return
	}
	old := d.view.used[b]
	if old == nil || nv.used[b] == nil {
		return // the entry left with the block itself: nothing to put back
	}
	if e.gone == nil {
		e.gone = map[uint64]*goneEntry{}
	}
	e.gone[f.ino] = &goneEntry{file: f.ino, block: b, old: bytes.Clone(old)}
}

// unlinkedAtFlush returns, as a flush ends epoch e.epoch without a
// journal, a violation for each protected file whose link count fell in
// that epoch and whose directory, read whole, no longer names it.
func (e *Engine) unlinkedAtFlush() []revfs.Violation {
	var vs []revfs.Violation
	for _, f := range e.files {
		d := f.parent
		if f.linksDropEpoch != e.epoch || d == nil || d.view == nil || f.view.inode == nil {
			continue
		}
		if d.view.inode == nil || d.view.err != nil || d.view.dirUnknown || len(d.view.unknown) > 0 || d.view.entries[uint32(f.ino)] > 0 {
			continue
		}
		var off, n int64
		if g := e.gone[f.ino]; g != nil {
			off, n = int64(g.block)*e.bs, e.bs
		}
		vs = append(vs, revfs.Violation{Kind: revfs.KindDirEntry, File: revfs.FileID(f.ino), Off: off, Len: n,
			Detail: fmt.Sprintf("entry of file %d (%s) removed from directory %d while its link count fell to %d: unlinked, another name keeps the inode",
				f.ino, f.path, d.ino, f.view.inode.LinksCount)})
	}
	return vs
}

// restoreGone puts back, through write, the entries whose removal vs now
// show to be an unlink (see above) into their directory blocks as they are
// now, and records those blocks in the model as written.
func (e *Engine) restoreGone(vs []revfs.Violation, write func(b []byte, off int64) error) error {
	for _, v := range vs {
		if v.Kind != revfs.KindInodeFreed {
			continue
		}
		g := e.gone[uint64(v.File)]
		if g == nil {
			continue
		}
		delete(e.gone, g.file)
		f := e.byIno[g.file]
		if f == nil || f.parent == nil || f.parent.view == nil {
			continue
		}
		d := f.parent
		if d.view.entries[uint32(f.ino)] > 0 {
			continue // the entry is back
		}
		if d.view.dirUnknown || len(d.view.unknown) > 0 {
			// A block of the directory still to come may hold the entry
			// (an htree split moves entries): putting it back could
			// make two entries of one name.
			continue
		}
		cur := d.view.used[g.block]
		var seed uint32
		if e.sb.HasMetadataCsum() && d.view.inode != nil {
			seed = layout.InodeSeed(e.fsSeed, uint32(d.ino), d.view.inode.Generation)
		}
		fixed, err := reinsertEntry(cur, g.old, uint32(f.ino), seed, e.sb.HasMetadataCsum())
		if err != nil {
			e.log.Warn("ext4: discard: a protected file's entry cannot be put back into its directory block",
				"file", f.ino, "dir", d.ino, "block", g.block, "err", err)
			continue
		}
		off := int64(g.block) * e.bs
		if err := write(fixed, off); err != nil {
			return err
		}
		e.Wrote(off, fixed)
		e.log.Info("ext4: discard: directory entry of an unlinked protected file restored", "file", f.ino, "dir", d.ino, "block", g.block)
	}
	return nil
}

// reinsertEntry returns a copy of the directory block cur with the entry
// for ino that the block's earlier version old held put back: into the
// free room at the end of any record (ext4 inserts the same way; a leaf
// block's records carry no order), with the checksum tail recomputed when
// the block has one and csum is set.
func reinsertEntry(cur, old []byte, ino, seed uint32, csum bool) ([]byte, error) {
	bs := len(cur)
	olds, err := layout.ParseDirBlock(old)
	if err != nil {
		return nil, err
	}
	var want *layout.DirEntry
	for i := range olds {
		if olds[i].Inode == ino {
			want = &olds[i]
			break
		}
	}
	if want == nil {
		return nil, errors.New("the earlier block holds no entry for the file")
	}
	ents, err := layout.ParseDirBlock(cur)
	if err != nil {
		return nil, err
	}
	need := align4(layout.DirEntryHeaderSize + len(want.Name))
	tail := csum && layout.HasDirTail(cur)
	for _, r := range ents {
		if r.Inode == ino {
			return nil, errors.New("the block names the file already")
		}
		if tail && r.Off == bs-layout.DirTailSize {
			continue
		}
		used := 0
		if r.Inode != 0 {
			used = align4(layout.DirEntryHeaderSize + len(r.Name))
		}
		if r.RecLen-used < need {
			continue
		}
		b := bytes.Clone(cur)
		at, recLen := r.Off+used, r.RecLen-used
		if used > 0 {
			binary.LittleEndian.PutUint16(b[r.Off+4:], uint16(used))
		}
		binary.LittleEndian.PutUint32(b[at:], ino)
		binary.LittleEndian.PutUint16(b[at+4:], uint16(recLen))
		b[at+6], b[at+7] = byte(len(want.Name)), want.FileType
		copy(b[at+layout.DirEntryHeaderSize:], want.Name)
		if tail {
			n := bs - layout.DirTailSize
			binary.LittleEndian.PutUint32(b[n+8:], layout.TailChecksum(seed, b, n))
		}
		return b, nil
	}
	return nil, fmt.Errorf("no room for a %d-byte entry", need)
}

func align4(n int) int { return (n + 3) &^ 3 }
