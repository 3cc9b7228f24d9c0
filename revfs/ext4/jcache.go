package ext4

// The journal cache (journal.cache) holds the bytes the host last wrote to
// journal blocks, up to maxJournalCache bytes. When it is full, the blocks
// cached longest ago go first: the engine reads a transaction's blocks soon
// after they arrive (the scan at its commit block, the sealing of
// data=journal copies), while older ones are only read again when their
// home block is written back, and a miss only costs a read of the image.
//
// journal.cacheQ records the order blocks were cached in, each with a
// generation (journal.cacheGen holds the generation of the version cached
// now). An entry whose block has since been dropped or cached again is
// skipped. The queue holds no reference to the bytes, so a dropped block
// is garbage at once.

// cacheRef is one cached block in journal.cacheQ.
type cacheRef struct {
	jb  uint32
	gen uint64
}

// live reports whether r still names the cached version of its block.
func (j *journal) live(r cacheRef) bool {
	_, ok := j.cache[r.jb]
	return ok && j.cacheGen[r.jb] == r.gen
}

// cachePut caches b (which the cache now owns) as the bytes of jb, making
// room by dropping the oldest blocks.
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
	if j.cacheGen == nil {
		j.cacheGen = map[uint32]uint64{}
	}
	j.cacheN++
	j.cache[jb] = b
	j.cacheGen[jb] = j.cacheN
	j.cacheQ = append(j.cacheQ, cacheRef{jb, j.cacheN})
	if j.cacheHead > len(j.cacheQ)/2 || len(j.cacheQ) > 4*limit {
		j.cacheCompact()
	}
}

// cacheCompact drops the consumed and stale refs from cacheQ, keeping the
// order of the live ones, and the generations of blocks no longer cached.
func (j *journal) cacheCompact() {
	q := j.cacheQ[:0]
	for _, r := range j.cacheQ[j.cacheHead:] {
		if j.live(r) {
			q = append(q, r)
		}
	}
	j.cacheQ, j.cacheHead = q, 0
	for jb := range j.cacheGen {
		if _, ok := j.cache[jb]; !ok {
			delete(j.cacheGen, jb)
		}
	}
}

// cacheReset forgets every cached block.
func (j *journal) cacheReset() {
	clear(j.cache)
	clear(j.cacheGen)
	j.cacheQ, j.cacheHead = j.cacheQ[:0], 0
}
