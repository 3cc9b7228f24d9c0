package ext4

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// blockSet is a plain in-memory revfs.BlockSet.
type blockSet map[uint64]bool

func (s blockSet) Add(first, n uint64) {
	for i := uint64(0); i < n; i++ {
		s[first+i] = true
	}
}

func (s blockSet) Remove(first, n uint64) {
	for i := uint64(0); i < n; i++ {
		delete(s, first+i)
	}
}

func (s blockSet) Contains(first, n uint64) bool {
	for i := uint64(0); i < n; i++ {
		if !s[first+i] {
			return false
		}
	}
	return true
}

// loadImage decompresses testdata/NAME.gz into a temporary file.
func loadImage(t testing.TB, name string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// memImage is an image in memory that the engine reads; the test applies
// writes to it the way the device core would (CheckWrite, write, Wrote).
type memImage struct{ b []byte }

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, io.EOF
	}
	return copy(p, m.b[off:]), nil
}

// rig is an engine over a memImage.
type rig struct {
	t       testing.TB
	img     *memImage
	e       *Engine
	written blockSet
	bs      int64
	ids     map[string]revfs.FileID
	log     *testLogger
}

// openRig opens an engine on the image file at path protecting paths.
func openRig(t testing.TB, path string, committed map[string]int64, paths ...string) *rig {
	t.Helper()
	return openRigSealed(t, path, committed, nil, paths...)
}

// openRigSealed is openRig with the sealed content of files (by path) that
// Open may compare a journal recovery with (Options.Sealed).
func openRigSealed(t testing.TB, path string, committed map[string]int64, sealed map[string][]byte, paths ...string) *rig {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, img: &memImage{b: b}, written: blockSet{}, ids: map[string]revfs.FileID{}}
	var files []revfs.ProtectedFile
	for _, p := range paths {
		ino, err := layout.LookupPath(bytes.NewReader(b), p)
		if err != nil {
			t.Fatalf("lookup %s: %v", p, err)
		}
		r.ids[p] = revfs.FileID(ino)
		files = append(files, revfs.ProtectedFile{ID: revfs.FileID(ino), Path: p})
	}
	r.log = &testLogger{t: t}
	opts := Options{Committed: map[revfs.FileID]int64{}, Logger: slog.New(r.log)}
	for p, n := range committed {
		opts.Committed[r.ids[p]] = n
	}
	if sealed != nil {
		byID := map[revfs.FileID][]byte{}
		for p, b := range sealed {
			byID[r.ids[p]] = b
		}
		opts.Sealed = func(id revfs.FileID, p []byte, off int64) error {
			b := byID[id]
			if off < 0 || off+int64(len(p)) > int64(len(b)) {
				return fmt.Errorf("file %d: [%d, +%d) not sealed", id, off, len(p))
			}
			copy(p, b[off:])
			return nil
		}
	}
	r.e, err = Open(r.img, int64(len(b)), files, r.written, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	r.bs = r.e.bs
	return r
}

// write runs one write through the engine and lands it; it returns the
// violations CheckWrite reported.
func (r *rig) write(off int64, p []byte) []revfs.Violation {
	vs := r.e.CheckWrite(off, p)
	copy(r.img.b[off:], p)
	r.e.Wrote(off, p)
	return vs
}

// changedBlocks lists the blocks that differ between two images.
func changedBlocks(old, new []byte, bs int64) []uint64 {
	var out []uint64
	for b := int64(0); b*bs < int64(len(new)); b++ {
		lo, hi := b*bs, min((b+1)*bs, int64(len(new)))
		if hi > int64(len(old)) || !bytes.Equal(old[lo:hi], new[lo:hi]) {
			out = append(out, uint64(b))
		}
	}
	return out
}

// feed writes each changed block of next into the rig, in the given order,
// returning all violations and checking none is raised when quiet.
func (r *rig) feed(next []byte, order []uint64) []revfs.Violation {
	var vs []revfs.Violation
	for _, b := range order {
		off := int64(b) * r.bs
		vs = append(vs, r.write(off, bytes.Clone(next[off:off+r.bs]))...)
	}
	return vs
}

func (r *rig) state(p string) revfs.FileState {
	for _, s := range r.e.Files() {
		if s.ID == r.ids[p] {
			return s
		}
	}
	r.t.Fatalf("no state for %s", p)
	return revfs.FileState{}
}

// crashed writes the rig's image to a new file as a host's crash leaves
// it, and returns the file's path: the kernel sets needs_recovery in the
// superblock at mount, and only an unmount or a freeze, after emptying the
// log, clears it.
func (r *rig) crashed() string {
	r.t.Helper()
	path := filepath.Join(r.t.TempDir(), "crashed.img")
	if err := os.WriteFile(path, r.withNeedsRecovery(true), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return path
}

// withNeedsRecovery returns a copy of the rig's image whose superblock has
// needs_recovery set or clear (its checksum recomputed).
func (r *rig) withNeedsRecovery(set bool) []byte {
	img := bytes.Clone(r.img.b)
	sb := img[layout.SuperBlockOffset : layout.SuperBlockOffset+layout.SuperBlockSize]
	f := binary.LittleEndian.Uint32(sb[0x60:]) &^ uint32(layout.IncompatRecover) // s_feature_incompat
	if set {
		f |= uint32(layout.IncompatRecover)
	}
	binary.LittleEndian.PutUint32(sb[0x60:], f)
	binary.LittleEndian.PutUint32(sb[0x3FC:], layout.SuperBlockChecksum(sb)) // s_checksum
	return img
}

// debugfs runs debugfs -w commands on a copy of the rig's image and
// returns the new image.
func (r *rig) debugfs(cmds ...string) []byte {
	r.t.Helper()
	testenv.RequireCommand(r.t, "debugfs")
	path := filepath.Join(r.t.TempDir(), "img")
	if err := os.WriteFile(path, r.img.b, 0o644); err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command("debugfs", "-w", path)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("debugfs: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func kinds(vs []revfs.Violation) string {
	var s []string
	for _, v := range vs {
		s = append(s, v.Kind.String())
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// seqContent is what make-images.sh's seq_file writes.
func seqContent(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		b.WriteString("line ")
		s := []byte("000000")
		v := i
		for k := 5; k >= 0; k-- {
			s[k] = byte('0' + v%10)
			v /= 10
		}
		b.Write(s)
		b.WriteString(" of the protected log\n")
	}
	return b.Bytes()[:n]
}

// testLogger sends the engine's log to the test log and counts warnings.
type testLogger struct {
	t     testing.TB
	warns int
}

func (l *testLogger) Enabled(context.Context, slog.Level) bool { return true }
func (l *testLogger) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		l.warns++
	}
	var b strings.Builder
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	l.t.Logf("engine %s: %s%s", r.Level, r.Message, b.String())
	return nil
}
func (l *testLogger) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *testLogger) WithGroup(string) slog.Handler      { return l }

// fileBytes reads a protected file's bytes, up to its size, through the
// engine's view of its block map (holes and unwritten extents read as zeroes).
func (r *rig) fileBytes(p string) []byte {
	f := r.e.byIno[uint64(r.ids[p])]
	out := make([]byte, f.view.size)
	for lb := int64(0); lb*r.bs < f.view.size; lb++ {
		m, ok := f.view.lookup(uint64(lb))
		if !ok || m.Unwritten {
			continue
		}
		pb := int64(m.Physical + uint64(lb) - m.Logical)
		copy(out[lb*r.bs:], r.img.b[pb*r.bs:(pb+1)*r.bs])
	}
	return out
}
