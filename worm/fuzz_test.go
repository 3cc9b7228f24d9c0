package worm_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/nbd/nbdtest"
	"github.com/indelible-worm/indelible/provision"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
	"github.com/indelible-worm/indelible/worm"
)

// fuzzLogs are the protected files of the fuzzed device.
var fuzzLogs = []string{"var/log/app.log", "var/log/other.log"}

// The fuzzed device is a fixture: testdata/fuzzdev is a real device
// directory whose protected files hold bytes the kernel appended through the
// device and the device sealed (image.ext4 is stored gzip-compressed). It is
// rebuilt, as root, by
//
//	WORM_FUZZ_FIXTURE=1 go test -run TestMakeFuzzFixture ./worm/
//
// Fuzzing then needs neither root nor the kernel: a fuzz worker may be
// killed at any time, and must not leave mounts or processes behind.
const fixtureDir = "testdata/fuzzdev"

// fuzzBase is the fixture unpacked once per process, with the sealed bytes
// before any fuzz write and the image regions worth attacking.
type fuzzBase struct {
	dir   string
	real  map[string][]byte // path -> real log (and the event log) before any fuzz write
	spots []span            // device byte ranges of watched metadata and protected data
	size  int64
}

type span struct {
	off, len int64
	what     string
}

// base is the unpacked fixture of the running fuzz target; each run of the
// target (go test -count=N runs it N times) unpacks its own and removes it.
var base *fuzzBase

func loadFuzzBase(f *testing.F) {
	dir := f.TempDir()
	b, err := unpackFixture(dir)
	if err != nil {
		f.Fatalf("unpacking %s: %v", fixtureDir, err)
	}
	base = b
}

// unpackFixture copies the fixture into dir, decompressing the image.
func unpackFixture(dir string) (*fuzzBase, error) {
	if err := copyTree(fixtureDir, dir); err != nil {
		return nil, err
	}
	img, err := unpackImage(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := worm.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	b := &fuzzBase{dir: dir, real: map[string][]byte{}, size: int64(len(img))}
	for _, l := range append(fuzzLogs, worm.EventLogPath) {
		b.real[l], _ = os.ReadFile(filepath.Join(dir, "store", l))
	}
	for _, l := range fuzzLogs {
		if len(b.real[l]) == 0 {
			return nil, fmt.Errorf("%s: nothing sealed in the fixture", l)
		}
	}
	b.spots, err = watchedSpans(img, cfg)
	return b, err
}

// TestMakeFuzzFixture rebuilds testdata/fuzzdev: it provisions a small
// ordered-mode device, serves it, mounts it through nbdfuse → loop → ext4,
// appends to both protected files with fsync, waits until every byte is
// sealed, unmounts and closes the device, and stores the directory.
func TestMakeFuzzFixture(t *testing.T) {
	if os.Getenv("WORM_FUZZ_FIXTURE") == "" {
		t.Skip("set WORM_FUZZ_FIXTURE=1 to rebuild " + fixtureDir)
	}
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mkfs.ext4")
	dir := provisionFixture(t, provision.Options{Size: 8 << 20, BlockSize: 1024, Journal: "ordered", KeyBytes: 64 << 10})
	want := map[string][]byte{}
	func() {
		dev, err := worm.OpenDir(dir, worm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := dev.Close(); err != nil {
				t.Fatal(err)
			}
		}()
		// A sub-test owns the server and the mount, so both are gone
		// before the device closes.
		t.Run("host", func(t *testing.T) {
			m := testenv.MountNBD(t, nbdtest.StartDevice(t, dev), "ext4", "")
			for i := 0; i < 40; i++ {
				p := filepath.Join(m.Dir, fuzzLogs[i%2])
				fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(fh, "%06d a line the kernel appended before the attack\n", i)
				fh.Sync()
				fh.Close()
			}
			waitHostSealed(t, m, dir, want)
			m.Unmount()
		})
	}()
	if t.Failed() {
		return
	}
	storeFixture(t, dir, fixtureDir)
	t.Logf("wrote %s: sealed %d and %d bytes", fixtureDir, len(want[fuzzLogs[0]]), len(want[fuzzLogs[1]]))
}

// watchedSpans lists the regions the engine watches: superblock, group
// descriptors, the protected inodes' table blocks, extent tree and data
// blocks, the directories on their paths, and the journal's head.
func watchedSpans(img []byte, cfg *worm.Config) ([]span, error) {
	im, err := layout.OpenImage(bytes.NewReader(img))
	if err != nil {
		return nil, err
	}
	bs := int64(im.BlockSize())
	spots := []span{{1024, 1024, "superblock"}, {int64(im.SB.GroupDescBlock()) * bs, bs, "group descriptors"}}
	file := func(ino uint64, what string, dataBlocks uint64) {
		blk, _, err := im.InodeAddr(ino)
		if err != nil {
			return
		}
		spots = append(spots, span{int64(blk) * bs, bs, what + " inode table"})
		in, _, err := im.ReadInode(ino)
		if err != nil {
			return
		}
		maps, tree, err := im.FileMap(in)
		if err != nil {
			return
		}
		for _, t := range tree {
			spots = append(spots, span{int64(t) * bs, bs, what + " extent block"})
		}
		for _, m := range maps {
			n := min(m.Len, dataBlocks)
			spots = append(spots, span{int64(m.Physical) * bs, int64(n) * bs, what + " data"})
		}
	}
	file(layout.RootIno, "root", 1)
	for _, d := range []string{"var", "var/log"} {
		if ino, err := im.Lookup(d); err == nil {
			file(ino, d, 1)
		}
	}
	for _, p := range cfg.Protected {
		file(p.Inode, p.Path, 64)
	}
	file(uint64(im.SB.JournalInum), "journal", 128)
	return spots, nil
}

// copyTree copies a directory of regular files and directories.
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

// FuzzDeviceWrites opens a copy of the base device (real ext4 engine, real
// seal store), sends it fuzz-chosen writes, trims and flushes — most inside
// watched metadata and protected data — under a fuzz-chosen response, closes
// it and opens it again as after a restart. The device must never panic or
// hang, and no real-log byte sealed before may change.
//
// Input: byte 0 picks the response; then records of [op, spot, off hi, off
// lo, n] followed by n data bytes for writes. op%8: 0-4 write (4 = FUA),
// 5 trim, 6 write-zeroes, 7 flush. spot indexes the watched spans (past
// them: anywhere in the image).
func FuzzDeviceWrites(f *testing.F) {
	loadFuzzBase(f)
	f.Add([]byte{0})
	f.Add([]byte{1, 0, 0, 0, 0x38, 2, 0x00, 0x00}) // superblock magic, discard
	f.Add([]byte{0, 5, 3, 0, 0, 1})                // trim the inode table block
	f.Add([]byte{2, 0, 4, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 7, 0, 0, 0, 0})
	f.Add(append([]byte{2, 0, 6, 0, 0, 64}, bytes.Repeat([]byte{0xff}, 64)...))
	f.Add(append([]byte{1, 4, 9, 0, 0, 32}, bytes.Repeat([]byte("overwrite"), 4)...))
	responses := []worm.Response{worm.ResponseReadOnly, worm.ResponseDiscard, worm.ResponseHoneypot}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		dir := filepath.Join(t.TempDir(), "dev")
		if err := copyTree(base.dir, dir); err != nil {
			t.Fatal(err)
		}
		cfg, err := worm.LoadConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		cfg.OnViolation = responses[int(in[0])%len(responses)]
		if err := cfg.Save(dir); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			runFuzzOps(t, dir, in[1:])
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("the device hung (response %s)", cfg.OnViolation)
		}
		for l, before := range base.real {
			got, _ := os.ReadFile(filepath.Join(dir, "store", l))
			if !bytes.HasPrefix(got, before) {
				t.Fatalf("%s: %d sealed bytes before, now %d bytes that do not start with them (first difference at %d)",
					l, len(before), len(got), firstDiff(got, before))
			}
		}
	})
}

func runFuzzOps(t testing.TB, dir string, in []byte) {
	dev, err := worm.OpenDir(dir, worm.Options{Tick: 5 * time.Millisecond})
	if err != nil {
		t.Errorf("opening the copied device: %v", err)
		return
	}
	buf := make([]byte, 256)
	for ops := 0; len(in) >= 5 && ops < 64; ops++ {
		op, spot, off, n := in[0]%8, int(in[1]), int64(binary.BigEndian.Uint16(in[2:4])), int64(in[4])+1
		in = in[5:]
		var at, room int64
		if spot < len(base.spots) {
			s := base.spots[spot]
			at, room = s.off+off%s.len, s.off+s.len
		} else {
			at = (int64(spot)<<16 | off) * 509 % base.size
			room = base.size
		}
		room = min(room, base.size) - at
		switch {
		case op <= 4:
			data := buf[:min(n, room)]
			clear(data)
			k := copy(data, in)
			in = in[k:]
			if op == 4 {
				blockdev.WriteFUA(dev, data, at)
			} else {
				dev.WriteAt(data, at)
			}
		case op == 5:
			dev.Trim(at, min(n*512, room))
		case op == 6:
			dev.WriteZeroes(at, min(n*512, room), n%2 == 0)
		default:
			dev.Flush()
		}
		dev.ReadAt(buf[:min(n, room)], at)
		dev.Status()
	}
	dev.Flush()
	if err := dev.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	// A restart over whatever the host left in the image: recovery must not
	// panic, and may refuse an image it cannot follow. The restored
	// responses (a read-only trip, honeypot freezes) then meet a write and
	// a flush.
	if again, err := worm.OpenDir(dir, worm.Options{}); err == nil {
		again.WriteAt(buf[:min(int64(len(buf)), base.size)], 0)
		again.Flush()
		again.Status()
		again.Close()
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
