package ext4

// blockMarks holds a writeMark for each protected data block the host has
// written (Engine.lastWrite). The host writes a file's blocks in runs and
// the engine looks them up in the same runs, so the marks of
// marksPerChunk consecutive blocks share one map entry, and the chunk of
// the latest access is kept at hand: a map keyed by block sent each block
// of a run to a different place in memory, and in the device, whose caches
// the host's data streaming through evicts, each access cost a cache miss
// or more (about half a microsecond, bench/e2e/RESULTS.md).
//
// Memory: a chunk takes about 280 bytes however few of its marks are set,
// so a host scattering single-block writes costs about 280 bytes per block
// written instead of about 30; pruning (Engine.pruneLastWrite) keeps only
// chunks holding a mark in some file's unsealed tail.
type blockMarks struct {
	chunks  map[uint64]*markChunk // block / marksPerChunk -> its marks
	marks   int                   // marks set
	lastKey uint64                // the chunk of the latest access, if last != nil
	last    *markChunk
	pruneAt int // twice the slots keepOnly last left (see minLastWritePrune)
}

const marksPerChunk = 16

type markChunk [marksPerChunk]writeMark

// chunk returns the chunk holding pb's mark, creating it when create is
// set; nil when there is none.
func (b *blockMarks) chunk(pb uint64, create bool) *markChunk {
	k := pb / marksPerChunk
	if b.last != nil && b.lastKey == k {
		return b.last
	}
	c := b.chunks[k]
	if c == nil {
		if !create {
			return nil
		}
		if b.chunks == nil {
			b.chunks = map[uint64]*markChunk{}
		}
		c = new(markChunk)
		b.chunks[k] = c
	}
	b.lastKey, b.last = k, c
	return c
}

// get returns pb's mark, if one is set.
func (b *blockMarks) get(pb uint64) (writeMark, bool) {
	c := b.chunk(pb, false)
	if c == nil {
		return writeMark{}, false
	}
	w := c[pb%marksPerChunk]
	return w, w != writeMark{}
}

// set records w as pb's mark; the zero mark clears it.
func (b *blockMarks) set(pb uint64, w writeMark) {
	if w == (writeMark{}) {
		if c := b.chunk(pb, false); c != nil && c[pb%marksPerChunk] != (writeMark{}) {
			c[pb%marksPerChunk] = writeMark{}
			b.marks--
		}
		return
	}
	c := b.chunk(pb, true)
	if c[pb%marksPerChunk] == (writeMark{}) {
		b.marks++
	}
	c[pb%marksPerChunk] = w
}

// len is the number of marks set.
func (b *blockMarks) len() int { return b.marks }

// slots is the number of marks the chunks held have room for: what the
// marks cost in memory, and in time to walk.
func (b *blockMarks) slots() int { return len(b.chunks) * marksPerChunk }

// keepOnly clears every mark whose block keep rejects, and lets go of the
// chunks left empty (into a new map: deleting most of a map's entries
// leaves it as large, and slower to look up).
func (b *blockMarks) keepOnly(keep func(pb uint64) bool) {
	kept := map[uint64]*markChunk{}
	b.marks = 0
	for k, c := range b.chunks {
		n := 0
		for i, w := range c {
			if w == (writeMark{}) {
				continue
			}
			if !keep(k*marksPerChunk + uint64(i)) {
				c[i] = writeMark{}
				continue
			}
			n++
		}
		if n > 0 {
			kept[k] = c
			b.marks += n
		}
	}
	b.chunks, b.last = kept, nil
	b.pruneAt = 2 * b.slots()
}
