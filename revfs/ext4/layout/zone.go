package layout

import (
	"fmt"
	"sort"
)

// Span is the run of blocks [Start, End).
type Span struct{ Start, End uint64 }

// Zone is the system zone: the blocks ext4 keeps for its own metadata, in
// sorted, disjoint spans. No file's extent (or extent tree block) may lie
// in it: the kernel refuses such a tree when it reads it
// (ext4_inode_block_valid, fs/ext4/block_validity.c), so a file mapped
// there shows the host an error while its "data" would be the
// filesystem's own bytes.
type Zone []Span

// SystemZone builds the zone of a filesystem: in every group, the copy of
// the superblock and group descriptors (reserved descriptor blocks
// included) where the group has one, the block and inode bitmaps and the
// inode table; and the extra spans (the journal's blocks). It is a
// superset of the kernel's zone, which lists the superblock copies of
// the first groups and of each flex group's first only: every block in it
// is in use from mkfs on, so the kernel never maps a file there.
func SystemZone(sb *SuperBlock, groups []*GroupDesc, extra []Span) Zone {
	bpg := uint64(sb.BlocksPerGroup)
	ipb := max(1, uint64(sb.BlockSize())/uint64(max(1, sb.InodeSizeBytes())))
	itb := (uint64(sb.InodesPerGroup) + ipb - 1) / ipb
	head := 1 + sb.GroupDescBlocks() + uint64(sb.ReservedGDTBlocks)
	spans := make([]Span, 0, 4*len(groups)+len(extra))
	for g, gd := range groups {
		if sb.HasSuperBackup(uint64(g)) {
			start := uint64(sb.FirstDataBlock) + uint64(g)*bpg
			spans = append(spans, run(start, head))
		}
		spans = append(spans, run(gd.BlockBitmap(), 1), run(gd.InodeBitmap(), 1), run(gd.InodeTable(), itb))
	}
	for _, s := range extra {
		if s.End > s.Start {
			spans = append(spans, s)
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].Start < spans[j].Start })
	var z Zone
	for _, s := range spans {
		if k := len(z); k > 0 && s.Start <= z[k-1].End {
			z[k-1].End = max(z[k-1].End, s.End)
			continue
		}
		z = append(z, s)
	}
	return z
}

// run is the span of n blocks from start, cut at the end of the block
// numbers (a hostile descriptor may place a table there).
func run(start, n uint64) Span {
	if start+n < start {
		return Span{start, ^uint64(0)}
	}
	return Span{start, start + n}
}

// Overlap returns the part of [start, start+n) that lies in the zone, the
// first such run, if any.
func (z Zone) Overlap(start, n uint64) (Span, bool) {
	end := start + n
	if n == 0 || end < start {
		end = start + 1 // an empty or wrapping run: test its first block
	}
	// The first span that ends after start.
	i := sort.Search(len(z), func(i int) bool { return z[i].End > start })
	if i == len(z) || z[i].Start >= end {
		return Span{}, false
	}
	return Span{max(z[i].Start, start), min(z[i].End, end)}, true
}

// CheckMaps returns an error naming the first run of maps (or tree block
// of tree) that lies in the zone.
func (z Zone) CheckMaps(maps []Mapping, tree []uint64) error {
	for _, m := range maps {
		if s, ok := z.Overlap(m.Physical, m.Len); ok {
			return fmt.Errorf("%w: extent at logical %d maps blocks [%d,%d) of filesystem metadata", ErrCorrupt, m.Logical, s.Start, s.End)
		}
	}
	for _, b := range tree {
		if _, ok := z.Overlap(b, 1); ok {
			return fmt.Errorf("%w: extent tree block %d lies in filesystem metadata", ErrCorrupt, b)
		}
	}
	return nil
}

// HasSuperBackup reports whether group g holds a copy of the superblock
// and group descriptors (ext4_bg_has_super, fs/ext4/balloc.c).
func (sb *SuperBlock) HasSuperBackup(g uint64) bool {
	switch {
	case g == 0:
		return true
	case sb.FeatureCompat&CompatSparseSuper2 != 0:
		return g == uint64(sb.BackupBGs[0]) || g == uint64(sb.BackupBGs[1])
	case g == 1 || sb.FeatureROCompat&ROCompatSparseSuper == 0:
		return true
	case g%2 == 0:
		return false
	}
	return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7)
}

func isPowerOf(g, base uint64) bool {
	n := uint64(1)
	for n < g {
		n *= base
	}
	return n == g
}
