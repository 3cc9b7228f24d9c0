package worm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// The written-block map is made durable at the host's FLUSH, after the
// image. A device process killed between two FLUSHes would forget the
// blocks the host wrote since the last one, although the image holds them:
// the operating system keeps a killed process's writes. Those blocks then
// never count as written, and a protected file's sealing stops at the
// first of them that the host does not write again (a full block of an
// append it has finished with). The epoch log closes that gap: every
// change to the map is also written, in order and never synced, to a small
// file. After a kill on the same boot, that file holds exactly the writes
// the image holds, and replaying it restores the map. After a reboot (a
// power cut), neither the image's nor the log's unsynced writes can be
// trusted to have landed together, so the log is ignored: the map is then
// what the last FLUSH made durable, which may only lack blocks (the
// device is then more cautious, never less).
//
// Two files alternate: each Sync of the map starts a new generation in the
// file before, whose changes the previous Sync made durable (after a Sync
// that failed, the next ones log on in the active file until one succeeds:
// the file before still holds changes the map lacks). A file starts
// with a header (magic, generation, boot ID) and holds 16-byte records: the
// first block (bit 63 set for a removal), the count, and the low 32 bits of
// the generation. The file is not truncated when it is reused (a truncate
// at every host FLUSH cost about 50 µs, with the map's lock held): its
// records end at the first one of another generation.

const (
	epochMagic      = "IDLEPOC2"
	epochHeaderSize = 32
	epochRecordSize = 16
	epochRemoveBit  = 1 << 63
	maxEpochCount   = 1<<32 - 1 // blocks one record covers at most
	// Every epochTruncateEvery generations both files are truncated when
	// reused, so that no record left beyond a generation's end is more
	// than about twice that many generations old: its 32-bit generation
	// can never be mistaken for the current one.
	epochTruncateEvery = 4096
	// maxEpochBytes bounds one file when the host writes for a long time
	// without a FLUSH; past it changes are not logged (a kill then loses
	// them, as without the log).
	maxEpochBytes = 64 << 20
)

// bootID returns the kernel's boot ID; ok is false where there is none.
// A variable so that tests can play a reboot.
var bootID = func() (id [16]byte, ok bool) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id, false
	}
	raw, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""))
	if err != nil || len(raw) != len(id) {
		return id, false
	}
	copy(id[:], raw)
	return id, true
}

type epochRecord struct {
	remove   bool
	first, n uint64
}

// epochLog is the pair of files; its methods are called with the
// WrittenSet's mu held.
type epochLog struct {
	files  [2]*os.File
	active int
	gen    uint64
	boot   [16]byte
	off    int64 // where the next record goes in the active file
	last   epochRecord
	lastAt int64 // offset of last, -1 when no record may be extended
	full   bool
	buf    [epochRecordSize]byte
}

// openEpochLog opens (creating) path.0 and path.1 and hands apply the
// changes they hold that were logged on this boot, oldest first, reading
// them in pieces (a long log never sits in memory whole). It returns a nil
// log, and no error, where the system has no boot ID.
func openEpochLog(path string, apply func(epochRecord)) (*epochLog, error) {
	boot, ok := bootID()
	if !ok {
		return nil, nil
	}
	l := &epochLog{boot: boot, lastAt: -1}
	var gens [2]uint64
	for i := range l.files {
		f, err := os.OpenFile(fmt.Sprintf("%s.%d", path, i), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("worm: written-block epoch log: %w", err)
		}
		l.files[i] = f
		gens[i] = epochGeneration(f, boot)
		if gens[i] == 0 {
			// Another boot's (or no) log: its records must never be read
			// as a later generation's.
			if err := f.Truncate(0); err != nil {
				l.close()
				return nil, fmt.Errorf("worm: written-block epoch log: %w", err)
			}
		}
	}
	first := 0
	if gens[1] < gens[0] {
		first = 1
	}
	// The older file is replayed only when it holds the generation just
	// before the newer one's: otherwise it was left behind (a start that
	// failed to write its header) and the map already holds its changes
	// and later ones, which replaying it would undo.
	older := first
	if gens[older] == 0 || gens[1-first] != gens[older]+1 {
		older = -1
	}
	for _, i := range []int{older, 1 - first} {
		if i < 0 || gens[i] == 0 {
			continue
		}
		if err := readEpochRecords(l.files[i], gens[i], apply); err != nil {
			l.close()
			return nil, err
		}
	}
	// The newest file stays until the next start: the two files always
	// hold two consecutive epochs, so replaying both in order is the same
	// as replaying the newest on the map the older one led to.
	l.active, l.gen = 1-first, max(gens[0], gens[1])
	return l, nil
}

// epochGeneration returns a file's generation when it was written on this
// boot, 0 otherwise.
func epochGeneration(f *os.File, boot [16]byte) uint64 {
	hdr := make([]byte, epochHeaderSize)
	if _, err := f.ReadAt(hdr, 0); err != nil || string(hdr[:8]) != epochMagic || !bytes.Equal(hdr[16:32], boot[:]) {
		return 0
	}
	return binary.LittleEndian.Uint64(hdr[8:])
}

// readEpochRecords hands apply the records of generation gen in f, in
// order. It reads the file in pieces: it may be much longer than this
// generation's records (it is not truncated when reused). A record cut
// short by the kill is dropped. A read error is returned: the caller must
// then not use what was applied (part of a generation, replayed, could
// put back blocks its later records removed).
func readEpochRecords(f *os.File, gen uint64, apply func(epochRecord)) error {
	b := make([]byte, 64<<10)
	for off := int64(epochHeaderSize); off < epochHeaderSize+maxEpochBytes; off += int64(len(b)) {
		n, err := f.ReadAt(b, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("worm: written-block epoch log: %w", err)
		}
		for i := 0; i+epochRecordSize <= n; i += epochRecordSize {
			if binary.LittleEndian.Uint32(b[i+12:]) != uint32(gen) {
				return nil // an earlier generation's record: this one's end
			}
			first, cnt := binary.LittleEndian.Uint64(b[i:]), uint64(binary.LittleEndian.Uint32(b[i+8:]))
			apply(epochRecord{remove: first&epochRemoveBit != 0, first: first &^ epochRemoveBit, n: cnt})
		}
		if n < len(b) {
			return nil // the end of the file
		}
	}
	return nil
}

// start makes the other file the active one, under a new generation: the
// changes logged so far are about to become durable. Until its header is
// rewritten the file still reads as the generation before the last, whose
// changes the map already holds: replaying them again changes nothing,
// since a block ends as the last change to it says, whatever it was before.
func (l *epochLog) start() error {
	l.active = 1 - l.active
	l.gen++
	l.off, l.lastAt, l.full = epochHeaderSize, -1, false
	f := l.files[l.active]
	if l.gen%epochTruncateEvery < 2 {
		if err := f.Truncate(0); err != nil {
			l.full = true
			return fmt.Errorf("worm: written-block epoch log: %w", err)
		}
	}
	hdr := make([]byte, epochHeaderSize)
	copy(hdr, epochMagic)
	binary.LittleEndian.PutUint64(hdr[8:], l.gen)
	copy(hdr[16:], l.boot[:])
	if _, err := f.WriteAt(hdr, 0); err != nil {
		// The file would still read as the generation before the last:
		// empty it if possible (openEpochLog also skips a file that is not
		// the generation just before the other's).
		f.Truncate(0)
		l.full = true
		return fmt.Errorf("worm: written-block epoch log: %w", err)
	}
	return nil
}

// record logs one change. A change that continues the previous one (the
// next blocks of an append) rewrites that record instead of adding one.
func (l *epochLog) record(r epochRecord) {
	if l.full {
		return
	}
	for r.n > maxEpochCount {
		l.record(epochRecord{remove: r.remove, first: r.first, n: maxEpochCount})
		r.first, r.n = r.first+maxEpochCount, r.n-maxEpochCount
	}
	if l.full {
		return
	}
	at := l.off
	if l.lastAt >= 0 && l.last.remove == r.remove && l.last.first+l.last.n == r.first && l.last.n+r.n <= maxEpochCount {
		r = epochRecord{remove: r.remove, first: l.last.first, n: l.last.n + r.n}
		at = l.lastAt
	} else if l.off+epochRecordSize > maxEpochBytes {
		l.full = true
		return
	}
	first := r.first
	if r.remove {
		first |= epochRemoveBit
	}
	binary.LittleEndian.PutUint64(l.buf[:], first)
	binary.LittleEndian.PutUint32(l.buf[8:], uint32(r.n))
	binary.LittleEndian.PutUint32(l.buf[12:], uint32(l.gen))
	if _, err := l.files[l.active].WriteAt(l.buf[:], at); err != nil {
		l.full = true // the log no longer says everything: stop it
		return
	}
	l.last, l.lastAt = r, at
	if at == l.off {
		l.off += epochRecordSize
	}
}

func (l *epochLog) close() error {
	var err error
	for _, f := range l.files {
		if f != nil {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}
	return err
}
