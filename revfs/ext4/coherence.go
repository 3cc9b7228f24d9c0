package ext4

// tailMark remembers where the coherent prefix stopped inside a block: the
// bytes after it in that block only count once the block has been written
// again after the mark (a partial last block is rewritten as it fills, and
// without a journal the new size may arrive before the new bytes).
type tailMark struct {
	set     bool
	logical uint64 // logical block holding the mark
	phys    uint64 // its physical block when the mark was made
	at      int64  // byte offset of the mark in the file
	seq     uint64 // event sequence when the mark was made
}

// setCommitted records the sealed watermark and freezes the block map of
// the committed range: from now on it may not change.
func (e *Engine) setCommitted(f *tracked, n int64) {
	f.committed = n
	nb := uint64((n + e.bs - 1) / e.bs)
	f.sealed = normalise(f.view.maps, nb)
	// Sealed bytes were written by the host; after a restart the
	// persistent set has them already, and a fresh image has none.
	for _, m := range f.sealed {
		if !m.Unwritten {
			e.written.Add(m.Physical, m.Len)
		}
	}
	if len(e.lastWrite) > 1<<16 {
		e.pruneLastWrite()
	}
}

// pruneLastWrite forgets write sequences of blocks inside committed
// ranges: only the unsealed tail of each file needs them.
func (e *Engine) pruneLastWrite() {
	keep := map[uint64]writeMark{}
	for _, f := range e.files {
		from := uint64(f.committed / e.bs)
		for _, m := range f.view.maps {
			if m.Logical+m.Len <= from {
				continue
			}
			for i := max(m.Logical, from) - m.Logical; i < m.Len; i++ {
				if s, ok := e.lastWrite[m.Physical+i]; ok {
					keep[m.Physical+i] = s
				}
			}
		}
	}
	e.lastWrite = keep
}

// updateCoherent recomputes the coherent prefix of f: from the committed
// watermark, every block up to the size must be mapped by an initialised
// extent known from trusted metadata and written since it was allocated.
func (e *Engine) updateCoherent(f *tracked) {
	c := e.coherentPrefix(f)
	if c == f.coherent {
		return
	}
	f.coherent = c
	f.tail = tailMark{}
	if c%e.bs != 0 {
		lb := uint64(c / e.bs)
		if m, ok := f.view.lookup(lb); ok {
			f.tail = tailMark{set: true, logical: lb, phys: m.Physical + lb - m.Logical, at: c, seq: e.seq}
		}
	}
}

func (e *Engine) coherentPrefix(f *tracked) int64 {
	v := f.view
	if v.inode == nil || v.err != nil || v.freed() || !v.inode.IsRegular() {
		return f.committed
	}
	size := int64(v.inode.Size())
	if size <= f.committed {
		return size
	}
	lb := uint64(f.committed / e.bs)
	pos := int64(lb) * e.bs
	for pos < size {
		m, ok := v.lookup(lb)
		if !ok || m.Unwritten || v.unknownIn(lb, lb+1) {
			break
		}
		need := uint64((size - pos + e.bs - 1) / e.bs)
		n := min(m.Logical+m.Len-lb, need)
		phys := m.Physical + (lb - m.Logical)
		k := e.writtenPrefix(phys, n)
		// The tail rule is for sizes that arrive by home writes (no
		// journal), which may precede the data. A jbd2 commit in ordered
		// or journal mode comes after the data it covers (flushed first),
		// and a block written before the mark but after the append would
		// otherwise hold coherence back until it is written yet again.
		if t := f.tail; t.set && !f.journalled && t.logical >= lb && t.logical < lb+k && phys+t.logical-lb == t.phys {
			if e.lastWrite[t.phys].seq <= t.seq {
				pos = t.at
				break
			}
		}
		pos += int64(k) * e.bs
		lb += k
		if k < n {
			break
		}
	}
	return max(min(pos, size), f.committed)
}

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
