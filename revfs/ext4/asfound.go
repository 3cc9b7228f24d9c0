package ext4

import (
	"slices"

	"github.com/indelible-worm/indelible/revfs"
)

// Stalled ranges and data taken as found (revfs.StallReporter).
//
// The coherent prefix waits for every block below the size to be written
// since it was allocated. A host that crashes between writing a file's
// metadata and its data (no journal or data=writeback: the inode, or a
// commit carrying it, may land first; with dioread_nolock in any mode an
// unwritten extent is committed before its data) reboots with a file that
// reads old block contents or zeroes there, appends after them, and never
// writes that range again. A device killed between the host's data write
// and the next FLUSH forgets that it saw the write (the written-block map
// is durable at FLUSH), with the same result. Stalls reports such ranges;
// the device core, once one has stayed unchanged for its lost_after window,
// takes it as found with AcceptAsFound and records that it did.

// Stalls implements revfs.StallReporter.
func (e *Engine) Stalls(id revfs.FileID, most int) []revfs.Stall {
	f := e.file(id)
	if f == nil || most <= 0 {
		return nil
	}
	out := e.unknownMap(f, most)
	return append(out, e.stallsFrom(f, uint64(f.coherent/e.bs), most-len(out))...)
}

// unknownMap returns up to most ranges below f's size whose block map lies
// under an extent tree block the host has not written (the walk of
// stallsFrom stops at them; they are reported even when the coherent
// prefix has caught up with the size, as after a forged index).
func (e *Engine) unknownMap(f *tracked, most int) []revfs.Stall {
	v := f.view
	if v == nil || v.inode == nil || v.err != nil || v.freed() || !v.inode.IsRegular() || v.size <= 0 {
		return nil
	}
	var out []revfs.Stall
	for _, u := range v.unknown {
		if len(out) >= most {
			break
		}
		if off := int64(u.lo) * e.bs; off < v.size {
			out = append(out, revfs.Stall{Kind: revfs.StallUnknownTree, Off: off, Len: min(int64(u.hi)*e.bs, v.size) - off, Device: -1})
		}
	}
	if len(out) < most && len(e.held) > 0 && e.heldUnknown(f) {
		// A held TRIM of a tree block the file still uses after a FLUSH
		// (heldtrim.go): where the tree block maps is not recorded, so
		// the whole file is named.
		out = append(out, revfs.Stall{Kind: revfs.StallUnknownTree, Off: 0, Len: v.size, Device: -1})
	}
	return out
}

// stallsFrom walks f's blocks from logical block lb to its size and returns
// up to most stalled ranges: runs of initialised blocks the host has not
// written since allocation, and runs of holes or unwritten extents that
// have initialised blocks after them. Holes and unwritten extents that run
// to the size are one StallTail range, last (usually the host's writeback
// still to come). The walk stops at a range whose metadata is not known
// yet.
func (e *Engine) stallsFrom(f *tracked, lb uint64, most int) []revfs.Stall {
	v := f.view
	if v.inode == nil || v.err != nil || v.freed() || !v.inode.IsRegular() {
		return nil
	}
	size := v.size
	nb := e.blocksFor(size)
	stall := func(kind revfs.StallKind, lo, hi uint64, dev int64) revfs.Stall {
		return revfs.Stall{Kind: kind, Off: int64(lo) * e.bs, Len: min(int64(hi)*e.bs, size) - int64(lo)*e.bs, Device: dev}
	}
	var out, zeros []revfs.Stall
	for lb < nb && len(out) < most {
		if v.unknownIn(lb, lb+1) {
			break
		}
		m, covered, next := v.around(lb)
		if !covered || m.Unwritten {
			if z := f.zeroRun(v, lb); z > 0 {
				lb += z // taken as zeroes already
				continue
			}
			kind, end := revfs.StallHole, next
			if covered {
				kind, end = revfs.StallUnwritten, m.Logical+m.Len
			}
			end = min(end, nb)
			for _, u := range v.unknown {
				if u.lo > lb && u.lo < end {
					end = u.lo
				}
			}
			if k := len(zeros); k > 0 && zeros[k-1].Kind == kind && zeros[k-1].Off+zeros[k-1].Len == int64(lb)*e.bs {
				zeros[k-1] = stall(kind, uint64(zeros[k-1].Off/e.bs), end, -1)
			} else {
				zeros = append(zeros, stall(kind, lb, end, -1))
			}
			lb = end
			continue
		}
		// Initialised blocks: the zero ranges before them lie inside the
		// file's data.
		out, zeros = append(out, zeros...), nil
		end := min(m.Logical+m.Len, nb)
		phys := m.Physical + lb - m.Logical
		k := e.writtenPrefix(phys, end-lb)
		// Written blocks that prove fewer bytes than the file has there.
		for i := uint64(0); i < k && len(out) < most; i++ {
			if p := int64(lb+i) * e.bs; e.blockProves(f, lb+i, phys+i, size) < min(p+e.bs, size) {
				out = append(out, stall(revfs.StallPartial, lb+i, lb+i+1, int64(phys+i)*e.bs))
			}
		}
		lb, phys = lb+k, phys+k
		if lb >= end {
			continue
		}
		r := uint64(1)
		for lb+r < end && !e.written.Contains(phys+r, 1) {
			r++
		}
		out = append(out, stall(revfs.StallNotWritten, lb, lb+r, int64(phys)*e.bs))
		lb += r
	}
	if len(zeros) > 0 && lb >= nb && len(out) < most {
		// Nothing but zeroes from the first of these ranges to the size.
		out = append(out, revfs.Stall{Kind: revfs.StallTail, Off: zeros[0].Off, Len: size - zeros[0].Off, Device: -1})
	}
	if len(out) > most {
		out = out[:most]
	}
	return out
}

// AcceptAsFound implements revfs.StallReporter. Blocks not written since
// allocation join the written set (their contents are what the host reads
// now); holes and unwritten extents read as zeroes until the host maps or
// writes them, which after sealing is a change of committed data.
func (e *Engine) AcceptAsFound(id revfs.FileID, s revfs.Stall) bool {
	f := e.file(id)
	if f == nil || !s.Kind.TakenAsFound() || s.Off < 0 || s.Len <= 0 || s.Off%e.bs != 0 {
		return false
	}
	got := e.stallsFrom(f, uint64(s.Off/e.bs), 1)
	if len(got) != 1 || got[0] != s {
		return false
	}
	lo, hi := uint64(s.Off/e.bs), e.blocksFor(s.Off+s.Len)
	switch s.Kind {
	case revfs.StallNotWritten:
		e.markWritten(uint64(s.Device/e.bs), hi-lo)
	case revfs.StallPartial:
		for pb := uint64(s.Device / e.bs); pb < uint64(s.Device/e.bs)+hi-lo; pb++ {
			e.lastWrite.set(pb, foundMark)
		}
	default:
		f.asZero = append(f.asZero, lrange{lo, hi})
	}
	e.mut++
	e.updateCoherent(f)
	e.log.Warn("ext4: data the host never wrote taken as found", "file", f.path, "kind", s.Kind.String(),
		"off", s.Off, "len", s.Len)
	return true
}

// zeroRun returns how many blocks from lb on were taken as zeroes and
// still read as zeroes in v (a hole, or an unwritten extent); 0 when lb is
// not such a block.
func (f *tracked) zeroRun(v *view, lb uint64) uint64 {
	for _, z := range f.asZero {
		if lb < z.lo || lb >= z.hi {
			continue
		}
		hi := z.hi
		m, covered, next := v.around(lb)
		switch {
		case covered && !m.Unwritten:
			return 0
		case covered:
			hi = min(hi, m.Logical+m.Len)
		default:
			hi = min(hi, next)
		}
		return hi - lb
	}
	return 0
}

// forgetZeroes drops the ranges taken as zeroes that lie wholly in the
// committed range: the sealed block map holds them from now on.
func (f *tracked) forgetZeroes(committedBlocks uint64) {
	f.asZero = slices.DeleteFunc(f.asZero, func(z lrange) bool { return z.hi <= committedBlocks })
}
