package durable

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPages counts f's pages in the page cache (mincore over a mapping
// that is never touched, so mapping it brings nothing in).
func residentPages(t *testing.T, f *os.File, n int) int {
	t.Helper()
	m, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident
}

// Drop frees the cached pages of durable data; the content read back is
// unchanged.
func TestDropFreesCachedPages(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const n = 256 << 10
	want := bytes.Repeat([]byte("sealed!\n"), n/8)
	if _, err := f.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := Datasync(f); err != nil {
		t.Fatal(err)
	}
	pages := n / os.Getpagesize()
	if got := residentPages(t, f, n); got != pages {
		t.Skipf("%d of %d pages cached after writing: this filesystem does not cache as expected", got, pages)
	}
	if err := Drop(f, 0, n); err != nil {
		t.Fatalf("Drop: %v", err)
	}
	if got := residentPages(t, f, n); got != 0 {
		t.Errorf("%d of %d pages still cached after Drop", got, pages)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("content changed by Drop")
	}
	f.Close()
	if err := Drop(f, 0, n); err == nil {
		t.Error("Drop of a closed file succeeded")
	}
}
