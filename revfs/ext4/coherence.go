package ext4

import (
	"cmp"
	"math"
	"slices"
	"sort"
)

// setCommitted records the sealed watermark and freezes the block map of
// the committed range: from now on it may not change.
func (e *Engine) setCommitted(f *tracked, n int64) {
	f.committed = n
	nb := e.blocksFor(n)
	f.sealed = normalise(f.view.maps, nb)
	f.forgetZeroes(uint64(n / e.bs))
	// Sealed bytes were written by the host; after a restart the
	// persistent set has them already, and a fresh image has none.
	for _, m := range f.sealed {
		if !m.Unwritten {
			e.markWritten(m.Physical, m.Len)
		}
	}
	if e.lastWrite.slots() > max(minLastWritePrune, e.lastWrite.pruneAt) {
		e.pruneLastWrite()
	}
}

// minLastWritePrune is the number of marks Engine.lastWrite has room for
// (blockMarks.slots) up to which setCommitted leaves it alone. Past it, and
// past twice the room the last prune left, setCommitted prunes the marks
// (pruneLastWrite): a prune's cost is the room it walks, and before the
// next one the host must have written blocks for at least half as much
// more (each chunk is added by a host write), so a host that keeps many
// marks inside the unsealed tails (a forged extent maps up to 2^15 blocks,
// a tree over a million extents) cannot make every seal walk them. The
// price: the marks may take twice the room of those a prune keeps, the
// chunks holding a mark inside some tail.
const minLastWritePrune = 1 << 16

// pruneLastWrite forgets write sequences of blocks inside committed
// ranges: only the unsealed tail of each file needs them. A mark is kept
// when its block lies in some file's unsealed tail (unwritten extents
// included). It looks each mark up in the merged physical ranges of the
// tails, so its cost is the room the marks take (blockMarks.slots) and the
// number of tail extents, not the number of blocks the extents map.
func (e *Engine) pruneLastWrite() {
	var tails []span
	for _, f := range e.files {
		from := uint64(f.committed / e.bs)
		for _, m := range f.view.mapsFrom(from) {
			skip := max(m.Logical, from) - m.Logical
			tails = append(tails, span{m.Physical + skip, m.Physical + m.Len})
		}
	}
	slices.SortFunc(tails, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	merged := mergeSpans(nil, tails, nil)
	e.lastWrite.keepOnly(func(pb uint64) bool {
		i := sort.Search(len(merged), func(i int) bool { return merged[i].end > pb })
		return i < len(merged) && merged[i].start <= pb
	})
}

// updateCoherent recomputes the coherent prefix of f: from the committed
// watermark, every block up to the size must be mapped by an initialised
// extent known from trusted metadata, written since it was allocated, and
// shown to hold the bytes the size announces (see proven).
func (e *Engine) updateCoherent(f *tracked) {
	f.coherent = e.coherentPrefix(f)
}

func (e *Engine) coherentPrefix(f *tracked) int64 {
	v := f.view
	if v.inode == nil || v.err != nil || v.freed() || !v.inode.IsRegular() {
		return f.committed
	}
	size := v.size
	if size <= f.committed {
		return size
	}
	lb := uint64(f.committed / e.bs)
	pos := int64(lb) * e.bs
	for pos < size {
		if v.unknownIn(lb, lb+1) {
			break
		}
		m, ok := v.lookup(lb)
		if !ok || m.Unwritten {
			z := f.zeroRun(v, lb) // a hole or unwritten extent taken as found
			if z == 0 {
				break
			}
			pos += int64(z) * e.bs
			lb += z
			continue
		}
		need := e.blocksFor(size - pos)
		n := min(m.Logical+m.Len-lb, need)
		phys := m.Physical + (lb - m.Logical)
		k := e.writtenPrefix(phys, n)
		pos += int64(k) * e.bs
		lb += k
		if k < n {
			break
		}
	}
	end := max(min(pos, size), f.committed)
	return e.proven(f, end)
}

// proven clips a candidate coherent prefix [0, end) to the bytes its
// blocks are known to hold.
//
// The size of a file can be ahead of its data in every journal mode:
// appending inside a block that is already allocated, ext4 raises
// i_disksize at write() time and logs the inode (or, without a journal,
// the inode-table block goes home with any other inode's update) while the
// new bytes are still only in the page cache; and the data may also have
// been written long before the size arrives, and never again. Neither the
// order of writes nor the flush epochs tell these apart, but the content
// does: ext4 writes a whole block with the bytes past the in-memory size
// zeroed, so a block written while the file ended at c holds zeroes from c
// on. The last block therefore proves the bytes up to just past its last
// non-zero byte below end, or all of them once it has been written after
// the newest size increase (the in-memory size was at least the announced
// one then).
//
// A block before the last one is usually written whole, while the file
// already goes past it (delalloc maps and writes a block with the size it
// submits). But one written while it was the partial last block may stay
// so on disk, completed in the page cache only, while an O_DSYNC write or
// sync_file_range of a later range makes that range durable and commits a
// size past it. Its write history shows it: a size increase the engine saw
// at or after the block's newest write ended inside or before the block
// (suspect). Such a block proves its bytes as the last block does; any
// other block all of its bytes. A block with no recorded write was written
// before Open, and the size found then counts as such an increase.
func (e *Engine) proven(f *tracked, end int64) int64 {
	from := max(f.committed, min(f.coherent, end))
	if end <= from {
		return end
	}
	for lb := uint64(from / e.bs); int64(lb)*e.bs < end; lb++ {
		p := int64(lb) * e.bs
		m, ok := f.view.lookup(lb)
		if !ok || m.Unwritten {
			if z := f.zeroRun(f.view, lb); z > 0 {
				lb += z - 1 // zeroes taken as found
				continue
			}
			return max(p, from)
		}
		if got := e.blockProves(f, lb, m.Physical+lb-m.Logical, end); got < min(p+e.bs, end) {
			return max(got, from)
		}
	}
	return end
}

// blockProves returns the file offset up to which f's initialised block lb
// (at phys) is proven to hold the file's bytes below end (see proven): the
// whole block, or up to just past its last non-zero byte for a suspect
// block and for the last block unless written after the newest size
// increase.
func (e *Engine) blockProves(f *tracked, lb, phys uint64, end int64) int64 {
	p := int64(lb) * e.bs
	blockEnd := min(p+e.bs, end)
	var seq uint64
	if w, ok := e.lastWrite.get(phys); ok {
		seq = w.seq
	}
	if p+e.bs < end {
		// Not the last block: suspect only if the file ended inside or
		// before it at some size increase since its newest write.
		i := sort.Search(len(f.sizes), func(i int) bool { return f.sizes[i].seq >= seq })
		if i >= len(f.sizesMin) || f.sizesMin[i] >= p+e.bs {
			return blockEnd
		}
	} else if seq == foundMark.seq || seq > f.grew && end >= f.view.size {
		// The block the file ends in, written after the newest
		// increase: ext4 zeroes a block only past the in-memory size.
		// Not so for a block the prefix stops after below the size: its
		// zeroes may be the rest of an unwritten extent that ext4 zeroed
		// when a write converted it (space preallocated with fallocate
		// inside the size), which the host may still write. (A block
		// taken as found proves all its bytes.)
		return blockEnd
	}
	blk, err := e.peekNewest(phys)
	if err != nil {
		return p
	}
	k := blockEnd - p
	for k > 0 && blk[k-1] == 0 {
		k--
	}
	return p + k
}

// foundMark is the write mark AcceptAsFound gives a partial block taken as
// found: later than every size increase, so that the block proves all of
// its bytes; epoch 0, so that it never counts as a home write newer than a
// journalled copy (apply).
var foundMark = writeMark{seq: math.MaxUint64}

// markMapped gives the blocks of f's unsealed tail that nv, its new view,
// maps (or initialises) anew, which the host wrote before and which have
// no write mark, the mark of this change (event sequence e.seq): delalloc
// writes a block before the transaction that maps it commits, when the
// block is not yet f's and its write leaves no mark (noteData). Their
// write went with a size no larger than the one this change sets
// (proven), though not in a later flush epoch than a journalled copy of
// it. Blocks past the size count too: without a journal the extent
// leaf that maps a block may arrive before the inode that raises the size.
// At most maxMarkMapped blocks are looked at; past them (only a forged map
// reaches that far) blocks prove their bytes by their content.
func (e *Engine) markMapped(f *tracked, old, nv *view) {
	if nv.inode == nil || slices.Equal(old.maps, nv.maps) {
		return
	}
	from := uint64(f.committed / e.bs)
	budget := maxMarkMapped
	for _, m := range nv.mapsFrom(from) {
		if budget <= 0 {
			return
		}
		if om, ok := old.lookup(m.Logical); m.Unwritten || ok && om == m {
			continue
		}
		for lb := max(m.Logical, from); lb < m.Logical+m.Len && budget > 0; lb++ {
			budget--
			pb := m.Physical + lb - m.Logical
			if om, ok := old.lookup(lb); ok && !om.Unwritten && om.Physical+lb-om.Logical == pb {
				continue // mapped so before
			}
			if _, marked := e.lastWrite.get(pb); !marked && e.written.Contains(pb, 1) {
				// Epoch 0: not a home write newer than a journalled copy
				// (apply). The write it stands for came before this
				// change, maybe from the block's previous owner: freed
				// and allocated again in one transaction, the bitmaps
				// never show it free, and with data=journal the file's
				// bytes for it are the copy in the log.
				e.lastWrite.set(pb, writeMark{seq: e.seq})
			}
		}
	}
}

// maxMarkMapped bounds the blocks one change makes markMapped look at: 1
// GiB of 4 KiB blocks, more than a commit of honest appends maps.
const maxMarkMapped = 1 << 18

// writtenPrefix returns how many of the n blocks from phys the host has
// written since they were allocated.
func (e *Engine) writtenPrefix(phys, n uint64) uint64 {
	if e.written.Contains(phys, n) {
		return n
	}
	lo, hi := uint64(0), n // Contains(phys, lo) holds, Contains(phys, hi) does not
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if e.written.Contains(phys, mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}
