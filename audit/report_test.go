package audit

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestDiffFile: the report of one file names the ranges with samples of
// both sides, counts pending bytes as divergence only when strict, and says
// what the path names now.
func TestDiffFile(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef\n"), 100)
	img, ino := mkImage(t, content)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	im, err := OpenImage(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	// The real log holds a prefix: the rest is pending.
	rep := DiffFile(im, "var/log/app.log", ino, content[:1000])
	if rep.Diverges(false) || !rep.Diverges(true) || rep.Bytes(Unsealed) != int64(len(content)-1000) || rep.Entry != "" {
		t.Fatalf("pending: %+v", rep)
	}
	// The real log holds other bytes at 17 and more than the image shows.
	real := append(append([]byte(nil), content...), "sealed but hidden\n"...)
	real[17] = 'X'
	rep = DiffFile(im, "var/log/other.log", ino, real)
	if !rep.Diverges(false) || rep.Bytes(Altered) != 1 || rep.Bytes(Missing) != 18 {
		t.Fatalf("altered and missing: %+v", rep)
	}
	if rep.Ranges[0].Real != `"X"` || rep.Ranges[0].Image != `"0"` || rep.Ranges[1].Image != "" {
		t.Fatalf("samples: %+v", rep.Ranges)
	}
	if !strings.Contains(rep.Entry, "names inode") {
		t.Fatalf("entry: %q", rep.Entry)
	}
	// An inode out of range: gone, everything missing.
	rep = DiffFile(im, "var/log/app.log", 1<<30, content)
	if rep.Gone == "" || rep.Bytes(Missing) != int64(len(content)) {
		t.Fatalf("bad inode: %+v", rep)
	}
}
