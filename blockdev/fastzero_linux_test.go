package blockdev

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCanZeroFast checks the FAST_ZERO answers against what the test
// directory's filesystem really does, and that the probe at open leaves the
// image untouched.
func TestCanZeroFast(t *testing.T) {
	dir := t.TempDir()
	scratch, err := os.Create(filepath.Join(dir, "scratch"))
	if err != nil {
		t.Fatal(err)
	}
	defer scratch.Close()
	if _, err := scratch.Write(make([]byte, 8192)); err != nil {
		t.Fatal(err)
	}
	punches := unix.Fallocate(int(scratch.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096) == nil
	zeroes := unix.Fallocate(int(scratch.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096) == nil

	p := filepath.Join(dir, "img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	before := statBlocks(t, p)
	d, err := OpenFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if after := statBlocks(t, p); after != before || d.Size() != 1<<20 {
		t.Fatalf("opening changed the image: blocks %d -> %d, size %d", before, after, d.Size())
	}
	if got := d.CanZeroFast(0, 4096, true); got != punches {
		t.Errorf("CanZeroFast with holes allowed = %v, the filesystem punches: %v", got, punches)
	}
	if d.CanZeroFast(0, 4096, false) {
		t.Error("CanZeroFast without holes is true before any zero-range was seen to work")
	}
	if err := d.WriteZeroes(0, 4096, false); err != nil {
		t.Fatal(err)
	}
	if got := d.CanZeroFast(0, 4096, false); got != zeroes {
		t.Errorf("CanZeroFast without holes after a zeroing = %v, the filesystem zeroes ranges: %v", got, zeroes)
	}

	ro, err := OpenFile(p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if ro.CanZeroFast(0, 4096, true) {
		t.Error("a read-only file says it can zero fast")
	}
}

func statBlocks(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks
}
