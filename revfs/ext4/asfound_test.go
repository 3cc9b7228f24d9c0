package ext4

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
)

// writeBlocks has the host write logical blocks lbs of p with the bytes the
// image already holds there (what a host's writeback would send).
func (r *rig) writeBlocks(p string, lbs ...uint64) {
	r.t.Helper()
	f := r.e.byIno[uint64(r.ids[p])]
	for _, lb := range lbs {
		m, ok := f.view.lookup(lb)
		if !ok {
			r.t.Fatalf("logical block %d of %s not mapped", lb, p)
		}
		off := int64(m.Physical+lb-m.Logical) * r.bs
		if vs := r.write(off, bytes.Clone(r.img.b[off:off+r.bs])); len(vs) != 0 {
			r.t.Fatalf("block %d: %v", lb, vs)
		}
	}
}

func (r *rig) readAll(p string, n int64) []byte {
	r.t.Helper()
	b := make([]byte, n)
	if err := r.e.ReadFile(r.ids[p], b, 0); err != nil {
		r.t.Fatalf("ReadFile %s [0,%d): %v", p, n, err)
	}
	return b
}

// A block the host never wrote holds the prefix back, whatever comes after
// it; taken as found, the prefix runs to the size and reads the block as
// the image holds it.
func TestStallNotWrittenTakenAsFound(t *testing.T) {
	const p = "var/log/big.log" // 70000 bytes: blocks 0-17
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), nil, p)
	id := r.ids[p]
	r.wantCoherent(p, 0, "nothing written yet")
	f := r.e.byIno[uint64(id)]
	phys := func(lb uint64) int64 {
		m, _ := f.view.lookup(lb)
		return int64(m.Physical+lb-m.Logical) * r.bs
	}
	// Before any write: the whole file, one range per extent (the device
	// range of each is contiguous).
	var next int64
	for _, s := range r.e.Stalls(id, 16) {
		if s.Kind != revfs.StallNotWritten || s.Off != next || s.Device != phys(uint64(s.Off/4096)) {
			t.Fatalf("before any write: stall %v, want not-written from %d at device %d", s, next, phys(uint64(next/4096)))
		}
		next += s.Len
	}
	if next != 70000 {
		t.Fatalf("before any write: stalls cover %d bytes, want 70000", next)
	}

	r.writeBlocks(p, 0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)
	r.wantCoherent(p, 5*4096, "block 5 never written")
	want := revfs.Stall{Kind: revfs.StallNotWritten, Off: 5 * 4096, Len: 4096, Device: phys(5)}
	got := r.e.Stalls(id, 16)
	if !slices.Equal(got, []revfs.Stall{want}) {
		t.Fatalf("stalls %v, want [%v]", got, want)
	}
	if r.e.Stalls(id, 0) != nil {
		t.Fatal("Stalls with max 0 returned ranges")
	}

	wider := want
	wider.Len += 4096
	if r.e.AcceptAsFound(id, wider) {
		t.Fatal("a range that is not exactly a stall was taken")
	}
	r.wantCoherent(p, 5*4096, "after a refused AcceptAsFound")
	if !r.e.AcceptAsFound(id, want) {
		t.Fatal("AcceptAsFound refused the stall Stalls returned")
	}
	r.wantCoherent(p, 70000, "block 5 taken as found")
	if b := r.readAll(p, 70000); !bytes.Equal(b, seqContent(70000)) {
		t.Fatal("ReadFile after taking block 5 as found differs from the file")
	}
	if r.e.AcceptAsFound(id, want) {
		t.Fatal("the same range was taken twice")
	}
	if s := r.e.Stalls(id, 16); len(s) != 0 {
		t.Fatalf("stalls after taking the only one: %v", s)
	}
}

// Holes and unwritten extents between data read as zeroes: they hold the
// prefix back until taken as found, then read as zeroes; at the end of the
// file they are not stalls (the host's writeback is still to come).
func TestStallZeroesTakenAsFound(t *testing.T) {
	const p = "var/log/frag.log" // 12 runs of 3 KiB every 8 KiB: blocks 0, 2, ..., 22 mapped
	base := openRig(t, loadImage(t, "b4k-nojournal.img"), nil, p)
	// Block 1 becomes an unwritten extent; blocks 3, 5, ..., 21 stay holes.
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, base.debugfs("fallocate var/log/frag.log 1 1"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := openRig(t, img, nil, p)
	id := r.ids[p]
	const size = 11*8192 + 3072
	want := make([]byte, size)
	for i := 0; i < 12; i++ {
		copy(want[i*8192:], seqContent(3072))
	}
	var even []uint64
	for lb := uint64(0); lb <= 22; lb += 2 {
		even = append(even, lb)
	}
	r.writeBlocks(p, even...)
	// Block 0's last 1 KiB are zeroes before an unwritten extent: they
	// may be the rest of that extent zeroed by a conversion, not yet
	// written by the host, so they wait for what follows them.
	r.wantCoherent(p, 3072, "block 1 unwritten")
	stalls := r.e.Stalls(id, 32)
	if len(stalls) != 11 || stalls[0] != (revfs.Stall{Kind: revfs.StallUnwritten, Off: 4096, Len: 4096, Device: -1}) {
		t.Fatalf("stalls %v: want the unwritten block 1, then 10 holes", stalls)
	}
	for i, s := range stalls[1:] {
		if w := (revfs.Stall{Kind: revfs.StallHole, Off: int64(3+2*i) * 4096, Len: 4096, Device: -1}); s != w {
			t.Fatalf("stall %d: %v, want %v", i+1, s, w)
		}
	}
	if s := r.e.Stalls(id, 3); len(s) != 3 {
		t.Fatalf("Stalls with max 3 returned %d ranges", len(s))
	}
	// Taking a later hole first moves nothing; taking block 1 then runs
	// the prefix up to the next hole.
	if !r.e.AcceptAsFound(id, stalls[2]) {
		t.Fatalf("AcceptAsFound(%v) refused", stalls[2])
	}
	r.wantCoherent(p, 3072, "a later hole taken")
	if s := r.e.Stalls(id, 32); len(s) != 10 || s[1] != stalls[1] || s[2] != stalls[3] {
		t.Fatalf("stalls after taking %v: %v", stalls[2], s)
	}
	if !r.e.AcceptAsFound(id, stalls[0]) {
		t.Fatalf("AcceptAsFound(%v) refused", stalls[0])
	}
	r.wantCoherent(p, 2*4096+3072, "block 1 taken") // block 2's zeroes wait for the hole after it
	for _, s := range stalls[1:] {
		if s != stalls[2] && !r.e.AcceptAsFound(id, s) {
			t.Fatalf("AcceptAsFound(%v) refused", s)
		}
	}
	r.wantCoherent(p, size, "every hole taken")
	if b := r.readAll(p, size); !bytes.Equal(b, want) {
		t.Fatal("ReadFile with holes and an unwritten extent taken as zeroes differs from the file")
	}

	// Sealed, the zeroes are part of the committed block map: a restart
	// starts from there with nothing to take again.
	r.e.SetCommitted(id, size)
	if len(r.e.byIno[uint64(id)].asZero) != 0 {
		t.Fatal("ranges taken as zeroes kept after they were sealed")
	}
	reopened := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(reopened, r.img.b, 0o644); err != nil {
		t.Fatal(err)
	}
	r2 := openRig(t, reopened, map[string]int64{p: size}, p)
	r2.wantCoherent(p, size, "reopened with the zeroes sealed")
	if r2.log.warns != 0 {
		t.Fatalf("%d warnings reopening a sealed file with holes", r2.log.warns)
	}
}

// A hole at the end of the file, with no data after it, is writeback still
// to come (or data the host lost): reported as the file's tail, never taken
// as found. Data after it makes it a hole like any other.
func TestStallTrailingHoleIsATail(t *testing.T) {
	const p = "var/log/app.log" // 5000 bytes: blocks 0 and 1
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), map[string]int64{p: 5000}, p)
	id := r.ids[p]
	r.writeSize(p, 5000+3*4096)
	// The second block ends in zeroes where the file ended: a partial
	// block (the size went past it, its bytes from 5000 on were never
	// written), which may be taken as found; then the tail, which may not.
	tail := revfs.Stall{Kind: revfs.StallTail, Off: 2 * 4096, Len: 5000 + 3*4096 - 2*4096, Device: -1}
	s := r.e.Stalls(id, 16)
	if len(s) != 2 || s[0].Kind != revfs.StallPartial || s[0].Off != 4096 || s[0].Len != 4096 || s[1] != tail {
		t.Fatalf("stalls %v, want the partial second block, then the tail %v", s, tail)
	}
	if r.e.AcceptAsFound(id, tail) {
		t.Fatal("a tail taken as found")
	}
	r.wantCoherent(p, 5000, "a tail refused")
	if !r.e.AcceptAsFound(id, s[0]) {
		t.Fatal("the partial block not taken as found")
	}
	r.wantCoherent(p, 8192, "the partial block taken as found")
	if s := r.e.Stalls(id, 0); s != nil {
		t.Fatalf("Stalls with max 0 returned %v", s)
	}
}
