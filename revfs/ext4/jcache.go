package ext4

import (
	"bytes"

	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
)

// The journal cache (journal.cache) holds the bytes the host last wrote to
// journal blocks, up to maxJournalCache bytes. When it is full, the blocks
// cached longest ago go first: the engine reads a transaction's blocks soon
// after they arrive (the scan at its commit block, the sealing of
// data=journal copies), while older ones are only read again when their
// home block is written back, and a miss only costs a read of the image.
//
// journal.cacheQ records the order blocks were cached in, each with a
// generation (the cache entry holds the generation of the version cached
// now). An entry whose block has since been dropped or cached again is
// skipped. The queue holds no reference to the bytes, so a dropped block
// is garbage at once.

// cachedBlock is a cached journal block: its bytes, the generation they
// were cached with and, when the log checksums its copies (csum v2/v3),
// their jbd2.BlockSum, taken while the bytes were fresh in the CPU's caches
// so that the scan at a commit block need not read every copy again.
type cachedBlock struct {
	b      []byte
	gen    uint64
	sum    uint32
	summed bool
}

// cacheRef is one cached block in journal.cacheQ.
type cacheRef struct {
	jb  uint32
	gen uint64
}

// live reports whether r still names the cached version of its block.
func (j *journal) live(r cacheRef) bool {
	c, ok := j.cache[r.jb]
	return ok && c.gen == r.gen
}

// cachePut caches b (which the cache now owns) as the bytes of jb, making
// room by dropping the oldest blocks. In data=journal every appended byte
// passes through here, so it keeps to one map lookup and one assignment
// per block besides the evictions.
func (j *journal) cachePut(jb uint32, b []byte) {
	if len(b) == 0 {
		return
	}
	limit := max(maxJournalCache/int(j.e.bs), 1)
	if _, ok := j.cache[jb]; !ok {
		for len(j.cache) >= limit && j.cacheHead < len(j.cacheQ) {
			r := j.cacheQ[j.cacheHead]
			j.cacheHead++
			if j.live(r) {
				delete(j.cache, r.jb)
			}
		}
	}
	j.cacheN++
	c := cachedBlock{b: b, gen: j.cacheN}
	if j.sb != nil && j.sb.HasCsumV2V3() {
		c.sum, c.summed = jbd2.BlockSum(b), true
	}
	j.cache[jb] = c
	j.cacheQ = append(j.cacheQ, cacheRef{jb, j.cacheN})
	if j.cacheHead > len(j.cacheQ)/2 || len(j.cacheQ) > 4*limit {
		j.cacheCompact()
	}
}

// cacheCompact drops the consumed and stale refs from cacheQ, keeping the
// order of the live ones.
func (j *journal) cacheCompact() {
	q := j.cacheQ[:0]
	for _, r := range j.cacheQ[j.cacheHead:] {
		if j.live(r) {
			q = append(q, r)
		}
	}
	j.cacheQ, j.cacheHead = q, 0
}

// cacheReset forgets every cached block.
func (j *journal) cacheReset() {
	clear(j.cache)
	j.cacheQ, j.cacheHead = j.cacheQ[:0], 0
}

// cacheGroupBlocks is how many consecutive blocks of a host write the
// journal cache copies with one allocation. In data=journal every appended
// byte is cached once, and allocating each 4 KiB block on its own cost more
// than the copy (bench/replay). A group is freed once none of its blocks is
// referenced; a block the model keeps longer (a held metadata version)
// keeps its group alive, which the small number of such blocks bounds.
const cacheGroupBlocks = 16

// groupCopier copies the blocks of one host write for the journal cache, a
// group of consecutive blocks at a time (bytes.Clone: the copy is not
// zeroed first, as a fresh allocation would be). Blocks are asked for in
// increasing order.
type groupCopier struct {
	w     *hostWrite
	group []byte // copy of blocks [from, from+n) of w
	from  uint64
	n     uint64
}

// block returns a copy of block pb as w leaves it, with its capacity
// capped so that nothing appended to it reaches a neighbour.
func (c *groupCopier) block(pb uint64) []byte {
	bs := c.w.e.bs
	if pb >= c.from && pb < c.from+c.n {
		i := int64(pb-c.from) * bs
		return c.group[i : i+bs : i+bs]
	}
	s := int64(pb) * bs
	if s < c.w.off || s+bs > c.w.end {
		return bytes.Clone(c.w.block(pb)) // a block the write covers in part
	}
	n := min(cacheGroupBlocks, (c.w.end-s)/bs)
	c.group = bytes.Clone(c.w.p[s-c.w.off : s-c.w.off+n*bs])
	c.from, c.n = pb, uint64(n)
	return c.group[:bs:bs]
}
