package audit

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
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
	rep := diffBytes(t, im, "var/log/app.log", ino, content[:1000])
	if rep.Diverges(false) || !rep.Diverges(true) || rep.Bytes(Unsealed) != int64(len(content)-1000) || rep.Entry != "" {
		t.Fatalf("pending: %+v", rep)
	}
	// The real log holds other bytes at 17 and more than the image shows.
	real := append(append([]byte(nil), content...), "sealed but hidden\n"...)
	real[17] = 'X'
	rep = diffBytes(t, im, "var/log/other.log", ino, real)
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
	rep = diffBytes(t, im, "var/log/app.log", 1<<30, content)
	if rep.Gone == "" || rep.Bytes(Missing) != int64(len(content)) {
		t.Fatalf("bad inode: %+v", rep)
	}
	// Every byte in place but the path leads elsewhere: whoever opens it
	// reads another file, which diverges.
	rep = diffBytes(t, im, "var/log/other.log", ino, content)
	if len(rep.Ranges) != 0 || rep.Entry == "" || !rep.Diverges(false) {
		t.Fatalf("path naming another inode: %+v, diverges %v", rep, rep.Diverges(false))
	}
	// The inode's generation as recorded at init: the same file. Another
	// one: the inode holds a new file (deleted and made again), which
	// diverges even with the same bytes.
	f, err := im.OpenFile(ino)
	if err != nil {
		t.Fatal(err)
	}
	same, other := f.Generation, f.Generation+1
	rep = diffGen(t, im, Protected{Path: "var/log/app.log", Inode: ino, Generation: &same}, content)
	if rep.Diverges(true) || rep.Gone != "" {
		t.Fatalf("same generation: %+v", rep)
	}
	rep = diffGen(t, im, Protected{Path: "var/log/app.log", Inode: ino, Generation: &other}, content)
	if !rep.Diverges(false) || !strings.Contains(rep.Replaced, "holds another file") || rep.Gone != "" || len(rep.Ranges) != 0 {
		t.Fatalf("other generation, same bytes: %+v", rep)
	}
	// A file gone before anything was sealed: nothing is missing, but the
	// host no longer has the file.
	rep = diffBytes(t, im, "var/log/app.log", 1<<30, nil)
	if len(rep.Ranges) != 0 || rep.Gone == "" || !rep.Diverges(false) {
		t.Fatalf("gone with an empty real log: %+v, diverges %v", rep, rep.Diverges(false))
	}
}

func diffBytes(t *testing.T, im *Image, path string, ino uint64, real []byte) *FileReport {
	t.Helper()
	return diffGen(t, im, Protected{Path: path, Inode: ino}, real)
}

func diffGen(t *testing.T, im *Image, p Protected, real []byte) *FileReport {
	t.Helper()
	rep, err := DiffFile(im, p, bytes.NewReader(real), int64(len(real)))
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// A file the image says is as large as the image (a forged i_size; the
// bytes past its blocks read as zeros) is compared a chunk at a time: the
// report's memory does not follow the claimed size. Reading files whole
// made `indelible diff` allocate whatever a forged inode claimed, up to the
// image's size (a terabyte on a sparse device).
func TestDiffFileMemoryBounded(t *testing.T) {
	content := bytes.Repeat([]byte("line\n"), 200)
	img, ino := mkImage(t, content)
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	debugfs(t, img, fmt.Sprintf("set_inode_field <%d> size %d", ino, st.Size()))
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := OpenImage(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rep := diffBytes(t, im, "var/log/app.log", ino, content)
	runtime.ReadMemStats(&after)
	if rep.ImageLen != st.Size() || rep.Bytes(Unsealed) != st.Size()-int64(len(content)) || rep.Bytes(Altered) != 0 {
		t.Fatalf("report: image %d bytes, unsealed %d, altered %d", rep.ImageLen, rep.Bytes(Unsealed), rep.Bytes(Altered))
	}
	if n := after.TotalAlloc - before.TotalAlloc; n >= uint64(st.Size())/2 {
		t.Errorf("comparing a file claiming %d bytes allocated %d", st.Size(), n)
	}
}
