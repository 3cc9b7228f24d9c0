package ext4

import (
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
// even root cannot fill with data. The sum is cached until a descriptor
// block changes. Descriptors that do not parse count as no free blocks,
// and the result is clipped to the total, so a hostile table can only
// make the volume look fuller.
func (e *Engine) FreeBlocks() (free, total uint64) {
	if e.freeValid {
		return e.free, e.blocks
	}
	ds := e.sb.DescSizeBytes()
	per := uint64(int(e.bs) / ds)
	for g := uint64(0); g < uint64(len(e.groups)); g++ {
		blk := e.meta[e.gdtFirst+g/per]
		at := int(g%per) * ds
		if at+ds > len(blk) {
			continue
		}
		gd, err := layout.ParseGroupDesc(blk[at:], ds)
		if err != nil {
			continue
		}
		free += uint64(gd.FreeBlocks())
	}
	if e.sb.FeatureIncompat&layout.IncompatExtents != 0 {
		resv := min(e.blocks/50, 4096)
		free -= min(free, resv)
	}
	e.free, e.freeValid = min(free, e.blocks), true
	return e.free, e.blocks
}
