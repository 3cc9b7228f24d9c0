package seal

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/indelible-worm/indelible/internal/durable"
	"github.com/indelible-worm/indelible/internal/testenv"
)

// Once a commit has made a real log's bytes durable, the store leaves none
// of their pages cached (dropCached), and the real log reads back whole.
func TestCommitDropsRealLogPages(t *testing.T) {
	ts := newTestStore(t, 1<<16, 4)
	s := ts.open(t, Options{})
	defer s.Close()
	files := []FileRef{{ID: 50, Path: "a.log"}, {ID: 51, Path: "b.log"}}
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB: whole pages
	var want []byte
	for i := 0; i < 3; i++ {
		ops := []AppendOp{{File: files[0], Off: int64(len(want)), Data: chunk}, {File: files[1], Off: int64(len(want)), Data: chunk}}
		if err := s.AppendBatch(ops); err != nil {
			t.Fatal(err)
		}
		want = append(want, chunk...)
	}
	for _, f := range files {
		p := filepath.Join(ts.store, f.Path)
		if n := testenv.CachedPages(t, p); n != 0 {
			if !pageCacheDrops(t) {
				t.Skip("the temporary directory's filesystem keeps pages cached whatever fadvise says")
			}
			t.Errorf("%s: %d pages still cached after the commit made it durable", f.Path, n)
		}
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s reads back %d bytes (%v), want the %d sealed", f.Path, len(got), err, len(want))
		}
	}
}

// pageCacheDrops reports whether durable.Drop frees a synced file's pages
// on the temporary directory's filesystem (not on tmpfs).
func pageCacheDrops(t *testing.T) bool {
	f, err := os.Create(filepath.Join(t.TempDir(), "probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if err := durable.Datasync(f); err != nil {
		t.Fatal(err)
	}
	durable.Drop(f, 0, 64<<10)
	return testenv.CachedPages(t, f.Name()) == 0
}
