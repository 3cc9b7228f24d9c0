package worm

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// reopen opens the map a killed device left behind: the first set is
// neither synced nor closed, as after SIGKILL (its unsynced writes are in
// the page cache, which the restarted device reads).
func reopen(t *testing.T, path string, nblocks uint64) *WrittenSet {
	t.Helper()
	s, err := OpenWrittenSet(path, nblocks)
	if err != nil {
		t.Fatal(err)
	}
	// Closed at the end without a Sync: each one is "killed" in its turn.
	t.Cleanup(func() {
		s.f.Close()
		if s.epoch != nil {
			s.epoch.close()
		}
	})
	return s
}

func wantBlocks(t *testing.T, s *WrittenSet, what string, in, out []uint64) {
	t.Helper()
	for _, b := range in {
		if !s.Contains(b, 1) {
			t.Errorf("%s: block %d lost", what, b)
		}
	}
	for _, b := range out {
		if s.Contains(b, 1) {
			t.Errorf("%s: block %d marked written", what, b)
		}
	}
}

// After a kill the map is what the device had recorded, synced or not;
// after a reboot only what the last Sync made durable.
func TestWrittenSetEpochLogAfterKill(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "written")
	a := reopen(t, path, 1<<20)
	a.Add(10, 5)
	a.Add(15, 3) // continues the record before it
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	a.Add(100, 1)
	a.Remove(11, 1)
	a.Add(70000, 2) // another chunk
	a.Remove(70001, 1)

	b := reopen(t, path, 1<<20)
	wantBlocks(t, b, "killed after changes since the last Sync", []uint64{10, 12, 17, 100, 70000}, []uint64{11, 18, 70001})

	// A kill while a Sync was under way (copied, not yet written): both
	// files of the epoch log are needed.
	b.Add(200, 1)
	snap := b.Snapshot() // b's epoch moves to its other file; the write never happens
	_ = snap
	c := reopen(t, path, 1<<20)
	wantBlocks(t, c, "killed in the middle of a Sync", []uint64{10, 100, 200, 70000}, []uint64{11, 70001})

	// A power cut: the epoch log is from another boot and says nothing.
	c.Add(300, 1)
	real := bootID
	bootID = func() (id [16]byte, ok bool) { id[0] = 0xee; return id, true }
	t.Cleanup(func() { bootID = real })
	d := reopen(t, path, 1<<20)
	wantBlocks(t, d, "after a reboot", []uint64{10, 200}, []uint64{300})
}

// A snapshot that never became durable (the image's flush failed, or the
// map's write did) leaves its changes only in the epoch log: the next
// snapshots must not reuse that file before one of them is written, or a
// kill in between forgets blocks (and, worse, removals).
func TestWrittenSetEpochLogAfterAbandon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "written")
	a := reopen(t, path, 1<<20)
	a.Add(10, 1)
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	a.Add(20, 1)
	a.Remove(10, 1)
	a.Snapshot().Abandon() // the image's flush failed
	a.Add(30, 1)
	a.Snapshot().Abandon()
	a.Add(40, 1)
	a.Snapshot() // killed before its write
	b := reopen(t, path, 1<<20)
	wantBlocks(t, b, "killed after two abandoned snapshots", []uint64{20, 30, 40}, []uint64{10})

	// Once a snapshot is written, epochs alternate again.
	b.Add(50, 1)
	b.Snapshot().Abandon()
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	gen := b.epoch.gen
	b.Add(60, 1)
	if err := b.Snapshot().Write(); err != nil {
		t.Fatal(err)
	}
	b.Add(70, 1)
	b.Snapshot() // killed before its write
	if b.epoch.gen != gen+2 {
		t.Fatalf("epoch generation %d after two snapshots that followed a written one, want %d: epochs no longer start", b.epoch.gen, gen+2)
	}
	c := reopen(t, path, 1<<20)
	wantBlocks(t, c, "killed after two more snapshots", []uint64{20, 30, 40, 50, 60, 70}, []uint64{10})
}

// A record cut short by the kill, and a log full of noise, are harmless.
func TestWrittenSetEpochLogDamaged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "written")
	a := reopen(t, path, 1<<20)
	a.Add(5, 1)
	a.Add(9, 1)
	for i := 0; i < 2; i++ {
		f, err := os.OpenFile(path+".epoch."+string(rune('0'+i)), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte{1, 2, 3, 4, 5, 6, 7})
		f.Close()
	}
	b := reopen(t, path, 1<<20)
	wantBlocks(t, b, "with a torn record", []uint64{5, 9}, []uint64{6, 10})

	if err := os.WriteFile(path+".epoch.0", []byte("IDLEPOCH garbage that is not a header at all, and more"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".epoch.1", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	reopen(t, path, 1<<20) // opens, whatever the log held
}

// A file is reused without being emptied: the records an earlier generation
// left beyond the new one's end are not replayed (here they would put back
// blocks removed since).
func TestWrittenSetEpochLogReusedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "written")
	a := reopen(t, path, 1<<20)
	for b := uint64(1000); b < 1100; b += 2 { // fifty records in this generation's file
		a.Add(b, 1)
	}
	if err := a.Sync(); err != nil { // the next generation, in the other file
		t.Fatal(err)
	}
	for b := uint64(1000); b < 1100; b += 2 {
		a.Remove(b, 1)
	}
	if err := a.Sync(); err != nil { // back to the first file: one record now
		t.Fatal(err)
	}
	a.Add(5, 1)
	b := reopen(t, path, 1<<20)
	wantBlocks(t, b, "killed after the file was reused", []uint64{5}, []uint64{1000, 1002, 1098})
}

// A record of more blocks than one record can count is split.
func TestEpochLogSplitsLongRecords(t *testing.T) {
	dir := t.TempDir()
	l, err := openEpochLog(filepath.Join(dir, "e"), func(epochRecord) {})
	if err != nil || l == nil {
		t.Skipf("no epoch log here: %v", err)
	}
	defer l.close()
	if err := l.start(); err != nil {
		t.Fatal(err)
	}
	l.record(epochRecord{remove: true, first: 7, n: maxEpochCount + 10})
	var recs []epochRecord
	if err := readEpochRecords(l.files[l.active], l.gen, func(r epochRecord) { recs = append(recs, r) }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0] != (epochRecord{true, 7, maxEpochCount}) || recs[1] != (epochRecord{true, 7 + maxEpochCount, 10}) {
		t.Fatalf("records %+v", recs)
	}
}

// A generation longer than one read of the file (64 KiB: 4 096 records) is
// replayed whole.
func TestWrittenSetEpochLogLongGeneration(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "written")
	a := reopen(t, path, 1<<20)
	const n = 10000
	for i := uint64(0); i < n; i++ {
		a.Add(2*i, 1) // one record each
	}
	b := reopen(t, path, 1<<20)
	wantBlocks(t, b, "after a long generation", []uint64{0, 2 * 4095, 2 * 4096, 2 * (n - 1)}, []uint64{1, 2*n + 1})
	if got := b.Count(); got != n {
		t.Fatalf("%d blocks after the replay, want %d", got, n)
	}
}

// writeEpochFile writes an epoch log file by hand: header and records.
func writeEpochFile(t *testing.T, name string, gen uint64, boot [16]byte, recs []epochRecord) {
	t.Helper()
	b := make([]byte, epochHeaderSize, epochHeaderSize+len(recs)*epochRecordSize)
	copy(b, epochMagic)
	binary.LittleEndian.PutUint64(b[8:], gen)
	copy(b[16:], boot[:])
	for _, r := range recs {
		var rec [epochRecordSize]byte
		first := r.first
		if r.remove {
			first |= epochRemoveBit
		}
		binary.LittleEndian.PutUint64(rec[:], first)
		binary.LittleEndian.PutUint32(rec[8:], uint32(r.n))
		binary.LittleEndian.PutUint32(rec[12:], uint32(gen))
		b = append(b, rec[:]...)
	}
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A file left at an older generation than the one just before the other
// file's (a start that could not write its header) is not replayed: the
// map already holds its changes and later ones, which it would undo.
func TestEpochLogSkipsAStaleFile(t *testing.T) {
	boot, ok := bootID()
	if !ok {
		t.Skip("no boot ID here")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "written")
	for _, tc := range []struct {
		name       string
		older      uint64
		want, gone []uint64
	}{
		{"consecutive generations", 12, []uint64{5, 7}, nil},
		{"a generation left behind", 10, []uint64{7}, []uint64{5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(path)
			writeEpochFile(t, path+".epoch.0", tc.older, boot, []epochRecord{{first: 5, n: 1}})
			writeEpochFile(t, path+".epoch.1", 13, boot, []epochRecord{{first: 7, n: 1}})
			s := reopen(t, path, 1<<20)
			wantBlocks(t, s, tc.name, tc.want, tc.gone)
		})
	}
}
