package ext4

import (
	"bytes"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

var _ revfs.SpaceReporter = (*Engine)(nil)

// FreeBlocks returns how many blocks the host's ext4 can still allocate
// for data, and the volume's size: bg_free_blocks_count summed over the
// newest version of every group descriptor (a committed journal copy or a
// home write; the superblock's own count is refreshed only at unmount and
// lags), less the clusters ext4 keeps back for metadata on extent
// filesystems (s_resv_clusters: 2% of the volume, at most 4096), which
// even root cannot fill with data. Descriptors that do not parse count as
// no free blocks, and the result is clipped to the total, so a hostile
// table can only make the volume look fuller.
//
// The sum is kept per group and updated by noteGroupDescs for the
// descriptors a change rewrites: the device core asks after every watched
// write, and almost every jbd2 commit carries a descriptor block, so a
// full sum (8192 groups on 1 TiB) each time cost milliseconds.
func (e *Engine) FreeBlocks() (free, total uint64) {
	if !e.freeValid {
		e.sumFree()
	}
	return e.usable(e.freeSum)
}

// usable turns a sum of the descriptors' free counts into what FreeBlocks
// reports.
func (e *Engine) usable(sum uint64) (free, total uint64) {
	free = sum
	if e.sb.FeatureIncompat&layout.IncompatExtents != 0 {
		resv := min(e.blocks/50, 4096)
		free -= min(free, resv)
	}
	return min(free, e.blocks), e.blocks
}

// PendingRecord tells the device core, right after CheckWrite accepted a
// write and before Wrote records it, whether recording it is expensive,
// and what FreeBlocks will report once it is recorded. It is expensive
// when the write is a journal commit block whose transactions CheckWrite
// evaluated (the memo that Wrote applies): applying them is about half of
// the engine's time for such a write. Recording a write changes the free
// count only through the group descriptors the transactions it completes
// carry, which the memo holds, so the count is exact; for any other write
// it is the current one.
func (e *Engine) PendingRecord() (expensive bool, free, total uint64) {
	m := e.memo
	if m == nil || m.mut != e.mut {
		free, total = e.FreeBlocks()
		return false, free, total
	}
	if !e.freeValid {
		e.sumFree()
	}
	sum := e.freeSum
	after := map[uint64]uint32{} // group -> free count once applied, where it changes
	held := map[uint64][]byte{}  // descriptor block -> version once applied
	for _, ev := range m.evals {
		if len(ev.txs) == 0 || ev.res == nil {
			continue
		}
		expensive = true
		for b, nb := range ev.res.gdt {
			old, ok := held[b]
			if !ok {
				old = e.meta[b]
			}
			e.descChanges(b, old, nb, func(g int, n uint32) {
				cur, ok := after[uint64(g)]
				if !ok {
					cur = e.freeG[g]
				}
				sum = sum - uint64(cur) + uint64(n)
				after[uint64(g)] = n
			})
			held[b] = nb
		}
	}
	free, total = e.usable(sum)
	return expensive, free, total
}

// sumFree counts the free blocks of every group from the descriptors held.
func (e *Engine) sumFree() {
	ds := e.sb.DescSizeBytes()
	per := uint64(int(e.bs) / ds)
	e.freeG = make([]uint32, len(e.groups))
	e.freeSum = 0
	for g := uint64(0); g < uint64(len(e.groups)); g++ {
		blk := e.meta[e.gdtFirst+g/per]
		at := int(g%per) * ds
		if at+ds > len(blk) {
			continue
		}
		e.freeG[g] = groupFree(blk[at:at+ds], ds)
		e.freeSum += uint64(e.freeG[g])
	}
	e.freeValid = true
}

// noteGroupDescs updates the free count for a new version nb of the
// descriptor table block b (old: the version held until now): only the
// descriptors whose bytes changed are decoded again.
func (e *Engine) noteGroupDescs(b uint64, old, nb []byte) {
	if !e.freeValid {
		return // counted afresh at the next FreeBlocks
	}
	e.descChanges(b, old, nb, func(g int, n uint32) {
		e.freeSum = e.freeSum - uint64(e.freeG[g]) + uint64(n)
		e.freeG[g] = n
	})
}

// descChanges calls note with the group and new free count of every
// descriptor in block b whose bytes differ between old and nb.
func (e *Engine) descChanges(b uint64, old, nb []byte, note func(g int, free uint32)) {
	if b < e.gdtFirst {
		return
	}
	ds := e.sb.DescSizeBytes()
	per := int(e.bs) / ds
	for i := 0; i < per; i++ {
		g := int(b-e.gdtFirst)*per + i
		at := i * ds
		if g >= len(e.groups) || at+ds > len(nb) {
			break
		}
		if at+ds <= len(old) && bytes.Equal(old[at:at+ds], nb[at:at+ds]) {
			continue
		}
		note(g, groupFree(nb[at:at+ds], ds))
	}
}

// groupFree is a descriptor's free block count; 0 if it does not parse.
func groupFree(raw []byte, ds int) uint32 {
	gd, err := layout.ParseGroupDesc(raw, ds)
	if err != nil {
		return 0
	}
	return gd.FreeBlocks()
}
