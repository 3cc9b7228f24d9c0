package ext4

import (
	"bytes"

	"github.com/indelible-worm/indelible/revfs"
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
//   - a directory write that dropped the entry before that is let through
//     but remembered here (old and new version of the block); when the
//     inode write then raises KindInodeFreed, RepairDiscard writes the old
//     version back, provided the block has not changed since, so that the
//     discard response leaves both the inode and its name in place.
//
// The host still holds the entry-less block in its cache; if it writes it
// again, the first rule applies.

// goneEntry is a protected file's entry that a directory write removed.
type goneEntry struct {
	file       uint64
	block      uint64 // the directory block that held it
	old, after []byte // that block before and after the removal
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
	old, after := d.view.used[b], nv.used[b]
	if old == nil || after == nil {
		return // the entry left with the block itself: nothing to put back
	}
	if e.gone == nil {
		e.gone = map[uint64]*goneEntry{}
	}
	e.gone[f.ino] = &goneEntry{file: f.ino, block: b, old: bytes.Clone(old), after: bytes.Clone(after)}
}

// restoreGone puts back, through write, the directory blocks whose removal
// of an entry vs now show to be an unlink (see above), and records them in
// the model as written.
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
		if !bytes.Equal(d.view.used[g.block], g.after) {
			e.log.Warn("ext4: discard: the directory block that lost a protected file's entry changed since; entry not restored",
				"file", f.ino, "dir", d.ino, "block", g.block)
			continue
		}
		off := int64(g.block) * e.bs
		if err := write(g.old, off); err != nil {
			return err
		}
		e.Wrote(off, g.old)
		e.log.Info("ext4: discard: directory entry of an unlinked protected file restored", "file", f.ino, "dir", d.ino, "block", g.block)
	}
	return nil
}
