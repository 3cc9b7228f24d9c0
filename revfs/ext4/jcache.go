package ext4

import (
	"bytes"

	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
)

// The journal cache (journal.cache) holds the bytes the host last wrote to
// journal blocks, up to maxJournalCache bytes: one slot per block of that
// budget, journal block jb in slot jb mod the number of slots. The host
// writes the log in order round its circle, so a slot is taken over by the
// block written a cache's worth of log later: the blocks cached longest ago
// go first, as the engine wants (it reads a transaction's blocks soon after
// they arrive: the scan at its commit block, the sealing of data=journal
// copies; older ones only when their home block is written back). A block
// whose slot was taken over, or that was never cached, is read from the
// image. A slot costs an index and a compare to find, where a map lookup
// per block (and an order queue for the evictions) was a few percent of the
// device's CPU in data=journal, which caches every appended byte.

// cachedBlock is a journal cache slot: the journal block it holds, its
// bytes (nil: the slot is empty) and, when the log checksums its copies
// (csum v2/v3), their jbd2.BlockSum, taken while the bytes were fresh in the
// CPU's caches so that the scan at a commit block need not read every copy
// again.
type cachedBlock struct {
	b      []byte
	jb     uint32
	sum    uint32
	summed bool
}

// cached returns jb's slot when it holds jb.
func (j *journal) cached(jb uint32) (*cachedBlock, bool) {
	if len(j.cache) == 0 {
		return nil, false
	}
	c := &j.cache[jb%uint32(len(j.cache))]
	return c, c.b != nil && c.jb == jb
}

// cachePut caches b (which the cache now owns) as the bytes of jb, in place
// of whatever its slot held.
func (j *journal) cachePut(jb uint32, b []byte) {
	if len(b) == 0 {
		return
	}
	if j.cache == nil {
		j.cache = make([]cachedBlock, max(maxJournalCache/int(j.e.bs), 1))
	}
	c := cachedBlock{b: b, jb: jb}
	if j.sb != nil && j.sb.HasCsumV2V3() {
		c.sum, c.summed = jbd2.BlockSum(b), true
	}
	j.cache[jb%uint32(len(j.cache))] = c
}

// cacheDrop forgets jb's cached bytes (the block was rewritten or repaired
// other than through Wrote, or its log position was consumed).
func (j *journal) cacheDrop(jb uint32) {
	if c, ok := j.cached(jb); ok {
		*c = cachedBlock{}
	}
}

// cacheReset forgets every cached block.
func (j *journal) cacheReset() { clear(j.cache) }

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
