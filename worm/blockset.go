package worm

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"os"
	"sync"

	"github.com/indelible-worm/indelible/internal/durable"
	"github.com/indelible-worm/indelible/revfs"
)

// chunkBlocks is how many blocks one bitmap chunk covers: 4 KiB of bitmap, so
// a chunk is one page of the state file and 128 MiB of a 4 KiB-block image.
const (
	chunkBytes  = 4096
	chunkWords  = chunkBytes / 8
	chunkBlocks = chunkBytes * 8
)

// WrittenSet is the persistent set of filesystem blocks the host has written
// since the image was created (revfs.BlockSet). It lives in a sparse file, one
// bit per block, and keeps in memory only the chunks that have a bit set, so
// a 1 TiB image that the host barely touched costs almost nothing.
//
// It is made durable on Sync (the device calls it on every host FLUSH,
// after the image), and every change in between is also logged, unsynced,
// to the epoch log (epochlog.go): after a kill the set is restored exactly;
// after a power cut it may lack blocks written since the last flush, which
// only makes the device more cautious (a block not known to be written is
// never sealed), never less.
type WrittenSet struct {
	// syncMu serialises Sync: a Sync may return only once every change
	// made before it started is durable, including chunks an earlier,
	// still running Sync took.
	syncMu  sync.Mutex
	syncBuf []byte // the chunks one Sync writes, reused (under syncMu)

	mu     sync.Mutex
	f      *os.File
	chunks map[uint64]*[chunkWords]uint64
	dirty  map[uint64]bool
	limit  uint64    // number of blocks in the filesystem; bits past it are ignored
	epoch  *epochLog // changes since the last Sync, for a restart after a kill (nil: none)
	// epochHeld: the last snapshot did not become durable (abandoned, or
	// its write failed), so the epoch file holding its changes must not
	// be reused yet: snapshots log on in the active file until one is
	// written.
	epochHeld bool
}

var _ revfs.BlockSet = (*WrittenSet)(nil)

// OpenWrittenSet opens (creating if needed) the bitmap file for a filesystem
// of nblocks blocks.
func OpenWrittenSet(path string, nblocks uint64) (*WrittenSet, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("worm: written-block map: %w", err)
	}
	s := &WrittenSet{f: f, chunks: map[uint64]*[chunkWords]uint64{}, dirty: map[uint64]bool{}, limit: nblocks}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := s.load(fi.Size()); err != nil {
		f.Close()
		return nil, err
	}
	// What a killed device had recorded since its last Sync: replayed,
	// made durable, and only then does a new epoch start.
	ep, err := openEpochLog(path+".epoch", func(r epochRecord) {
		if r.remove {
			s.Remove(r.first, r.n)
		} else {
			s.Add(r.first, r.n)
		}
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := s.Sync(); err != nil {
		f.Close()
		if ep != nil {
			ep.close()
		}
		return nil, err
	}
	if ep != nil {
		if err := ep.start(); err != nil {
			f.Close()
			ep.close()
			return nil, err
		}
		s.epoch = ep
	}
	return s, nil
}

// load reads the chunks of the map file that have a bit set.
func (s *WrittenSet) load(size int64) error {
	buf := make([]byte, chunkBytes)
	for off := int64(0); off < size; off += chunkBytes {
		n, _ := s.f.ReadAt(buf, off)
		if n == 0 {
			break
		}
		clear(buf[n:])
		var c [chunkWords]uint64
		nonzero := false
		for i := range c {
			w := leUint64(buf[i*8:])
			c[i] = w
			nonzero = nonzero || w != 0
		}
		if nonzero {
			s.chunks[uint64(off/chunkBytes)] = &c
		}
	}
	return nil
}

func leUint64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// forEach calls fn for each (chunk, word, mask) covering blocks [first, first+n).
func (s *WrittenSet) forEach(first, n uint64, fn func(ci uint64, wi int, mask uint64) bool) {
	if first >= s.limit {
		return
	}
	if n > s.limit-first {
		n = s.limit - first
	}
	end := first + n
	for b := first; b < end; {
		ci, bi := b/chunkBlocks, b%chunkBlocks
		wi, bit := int(bi/64), bi%64
		cnt := min(64-bit, end-b)
		mask := ^uint64(0) >> (64 - cnt) << bit
		if !fn(ci, wi, mask) {
			return
		}
		b += cnt
	}
}

// Add marks blocks [first, first+n) written.
func (s *WrittenSet) Add(first, n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	s.forEach(first, n, func(ci uint64, wi int, mask uint64) bool {
		c := s.chunks[ci]
		if c == nil {
			c = new([chunkWords]uint64)
			s.chunks[ci] = c
		}
		if c[wi]&mask != mask {
			c[wi] |= mask
			s.dirty[ci] = true
			changed = true
		}
		return true
	})
	if changed && s.epoch != nil {
		s.epoch.record(epochRecord{first: first, n: min(n, s.limit-first)})
	}
}

// Remove marks blocks [first, first+n) not written (the host freed them).
// Chunks with no bit set are skipped whole: at Open the engine removes
// every free block of the filesystem.
func (s *WrittenSet) Remove(first, n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if first >= s.limit {
		return
	}
	end := first + min(n, s.limit-first)
	changed := false
	for b := first; b < end; {
		ci := b / chunkBlocks
		next := min(end, (ci+1)*chunkBlocks)
		if c := s.chunks[ci]; c != nil {
			s.forEach(b, next-b, func(ci uint64, wi int, mask uint64) bool {
				if c[wi]&mask != 0 {
					c[wi] &^= mask
					s.dirty[ci] = true
					changed = true
				}
				return true
			})
		}
		b = next
	}
	if changed && s.epoch != nil {
		s.epoch.record(epochRecord{remove: true, first: first, n: end - first})
	}
}

// Contains reports whether every block of [first, first+n) is written.
func (s *WrittenSet) Contains(first, n uint64) bool {
	if n == 0 {
		return true
	}
	if first >= s.limit || n > s.limit-first {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	all := true
	s.forEach(first, n, func(ci uint64, wi int, mask uint64) bool {
		c := s.chunks[ci]
		if c == nil || c[wi]&mask != mask {
			all = false
		}
		return all
	})
	return all
}

// Count returns how many blocks are marked (for status and tests).
func (s *WrittenSet) Count() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for _, c := range s.chunks {
		for _, w := range c {
			n += uint64(bits.OnesCount64(w))
		}
	}
	return n
}

// Sync writes the changed chunks and makes them durable.
func (s *WrittenSet) Sync() error {
	return s.Snapshot().Write()
}

// MapSnapshot is a copy of the map's changed chunks, taken by Snapshot and
// made durable by Write. Between the two no other Sync runs.
type MapSnapshot struct {
	s   *WrittenSet
	idx []uint64
	buf []byte
}

// Snapshot copies the changed chunks: the set as it is now is what the
// snapshot's Write makes durable. The device takes it before it flushes the
// image and writes it after, so that the durable map never lists a block
// whose data the image's flush did not cover.
//
// The chunks are copied under mu and written and synced without it: the
// device records every host write (Add) under its own lock, and holding mu
// across an fsync stalled every write for the length of a disk flush.
func (s *WrittenSet) Snapshot() *MapSnapshot {
	s.syncMu.Lock() // held until Write or Abandon
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := &MapSnapshot{s: s}
	if len(s.dirty) == 0 {
		return snap
	}
	snap.idx = make([]uint64, 0, len(s.dirty))
	if need := len(s.dirty) * chunkBytes; cap(s.syncBuf) < need {
		s.syncBuf = make([]byte, need)
	}
	snap.buf = s.syncBuf[:len(s.dirty)*chunkBytes]
	for ci := range s.dirty {
		b := snap.buf[len(snap.idx)*chunkBytes:]
		for i, w := range s.chunks[ci] {
			binary.LittleEndian.PutUint64(b[i*8:], w)
		}
		snap.idx = append(snap.idx, ci)
	}
	clear(s.dirty)
	if s.epoch != nil && !s.epochHeld {
		// Changes from here on go to the other file, under a new
		// generation: the active one holds what this snapshot is about
		// to make durable, and the file it reuses held what the last
		// Write made durable.
		// After a snapshot that did not become durable, the file it
		// would reuse holds changes the map still lacks: the active file
		// goes on instead (replaying a change the map already holds is
		// harmless).
		s.epoch.start()
	}
	return snap
}

// Write writes the snapshot and makes it durable.
func (snap *MapSnapshot) Write() error {
	s := snap.s
	defer s.syncMu.Unlock()
	if len(snap.idx) == 0 {
		return nil
	}
	err := s.writeChunks(snap.idx, snap.buf)
	if err != nil {
		snap.redirty() // not durable: the next Sync writes these chunks again
	} else {
		s.mu.Lock()
		s.epochHeld = false // everything the held epoch files log is durable now
		s.mu.Unlock()
	}
	// A buffer grown for a burst of changes is not kept.
	if cap(s.syncBuf) > 64*chunkBytes {
		s.syncBuf = nil
	}
	return err
}

// Abandon gives the snapshot up (the image's flush failed): its chunks are
// written by the next Sync.
func (snap *MapSnapshot) Abandon() {
	snap.redirty()
	snap.s.syncMu.Unlock()
}

func (snap *MapSnapshot) redirty() {
	s := snap.s
	s.mu.Lock()
	for _, ci := range snap.idx {
		s.dirty[ci] = true
	}
	if len(snap.idx) > 0 {
		s.epochHeld = true // an empty snapshot started no epoch
	}
	s.mu.Unlock()
}

// writeChunks writes the copied chunks (idx[i] at buf[i*chunkBytes:]) and
// syncs the file. Called with syncMu held.
func (s *WrittenSet) writeChunks(idx []uint64, buf []byte) error {
	for i, ci := range idx {
		if _, err := s.f.WriteAt(buf[i*chunkBytes:(i+1)*chunkBytes], int64(ci)*chunkBytes); err != nil {
			return fmt.Errorf("worm: written-block map: %w", err)
		}
	}
	// fdatasync, not fsync: the host's FLUSH waits for this, and fsync
	// would add a journal commit of the device's own filesystem for the
	// map's new modification time.
	if err := durable.Datasync(s.f); err != nil {
		return fmt.Errorf("worm: written-block map: %w", err)
	}
	return nil
}

// Close syncs and closes the files.
func (s *WrittenSet) Close() error {
	err := s.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if s.epoch != nil {
		if cerr := s.epoch.close(); err == nil {
			err = cerr
		}
	}
	return err
}
