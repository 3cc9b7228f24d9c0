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
	free = e.freeSum
	if e.sb.FeatureIncompat&layout.IncompatExtents != 0 {
		resv := min(e.blocks/50, 4096)
		free -= min(free, resv)
	}
	return min(free, e.blocks), e.blocks
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
	if !e.freeValid || b < e.gdtFirst {
		return // counted afresh at the next FreeBlocks
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
		n := groupFree(nb[at:at+ds], ds)
		e.freeSum = e.freeSum - uint64(e.freeG[g]) + uint64(n)
		e.freeG[g] = n
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
