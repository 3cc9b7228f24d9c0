package durable

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
)

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
	if got := testenv.CachedPages(t, f.Name()); got != pages {
		t.Skipf("%d of %d pages cached after writing: this filesystem does not cache as expected", got, pages)
	}
	if err := Drop(f, 0, n); err != nil {
		t.Fatalf("Drop: %v", err)
	}
	if got := testenv.CachedPages(t, f.Name()); got != 0 {
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
