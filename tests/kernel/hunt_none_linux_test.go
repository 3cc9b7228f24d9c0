package kernel

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A false-positive hunt without a journal: ext4 writes inodes, extent
// leaves, bitmaps and data in any order there, and may copy a metadata
// block while it edits it. Honest host work; no indicator, every byte
// sealed.
//
// Before the fixes of this hunt (dropped.go, ownTreeSource and mayFold in
// model.go, heldtrim.go) these failed now and then (two test processes at
// once made it likelier): the discard case of
// TestHuntNoneFragmentedUnwritten (and TestHuntDiscardMount/none) raised
// "discard over watched metadata" (ext4 trims a leaf it folds back into
// the inode before that inode is written), TestHuntNoneMultiWriters
// stalled a file at "not-written" for good (I3) or raised unparseable (a
// freed leaf reused by another file before the inode that stopped using
// it lands).

// TestHuntNoneMultiWriters: one O_APPEND writer per protected file (five
// files in two directories), fsync/fdatasync now and then, while a syncer
// runs sync -f and fdatasync over all of them and a churner creates,
// grows and deletes unprotected files in the same directories.
func TestHuntNoneMultiWriters(t *testing.T) {
	logs := []string{"var/log/a.log", "var/log/b.log", "var/log/c.log", "srv/d.log", "srv/e.log"}
	k := newDevice(t, devOpts{journal: "none", logs: logs, quiescence: 300 * time.Millisecond, size: 256 << 20})
	writer := func(w int) error {
		rng := rand.New(rand.NewSource(int64(w)))
		f, err := os.OpenFile(k.path(logs[w]), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		deadline := time.Now().Add(6 * time.Second)
		for j := 0; time.Now().Before(deadline); j++ {
			if _, err := f.Write(bytes.Repeat(line(w*100000+j), 1+rng.Intn(40))); err != nil {
				return err
			}
			switch rng.Intn(40) {
			case 0:
				f.Sync()
			case 1:
				unix.Fdatasync(int(f.Fd()))
			}
			if j%10 == 0 {
				time.Sleep(time.Duration(rng.Intn(3)) * time.Millisecond)
			}
		}
		return nil
	}
	syncer := func(stopped func() bool) {
		rng := rand.New(rand.NewSource(99))
		for i := 0; !stopped(); i++ {
			p := k.path(logs[rng.Intn(len(logs))])
			if i%2 == 0 {
				exec.Command("sync", "-f", p).Run()
			} else if f, err := os.Open(p); err == nil {
				unix.Fdatasync(int(f.Fd()))
				f.Close()
			}
			time.Sleep(time.Duration(rng.Intn(8)) * time.Millisecond)
		}
	}
	churner := func(stopped func() bool) {
		rng := rand.New(rand.NewSource(7))
		dirs := []string{"var/log", "srv"}
		for !stopped() {
			d := filepath.Join(k.m.Dir, dirs[rng.Intn(2)])
			name := filepath.Join(d, fmt.Sprintf("u%03d", rng.Intn(60)))
			switch rng.Intn(4) {
			case 0, 1:
				os.WriteFile(name, bytes.Repeat([]byte("z"), rng.Intn(200000)), 0o644)
			case 2:
				appendErr(name, bytes.Repeat([]byte("q"), rng.Intn(20000)), rng.Intn(3))
			case 3:
				os.Remove(name)
			}
		}
	}
	k.hunt(len(logs), writer, syncer, churner)
}

// TestHuntNoneFragmentedUnwritten: protected files grow past four extents
// (the tree leaves the inode) with their space preallocated by fallocate
// KEEP_SIZE in small pieces between neighbours' allocations, so that
// appends convert unwritten extents (splits and merges), with fdatasync
// and sync -f, and the neighbours are deleted (their blocks freed) meanwhile.
func TestHuntNoneFragmentedUnwritten(t *testing.T) {
	for _, opts := range []string{"", "discard"} {
		t.Run("opts="+opts, func(t *testing.T) {
			logs := []string{"var/log/a.log", "var/log/b.log"}
			k := newDevice(t, devOpts{journal: "none", logs: logs, quiescence: 300 * time.Millisecond, size: 256 << 20, mountOpts: opts})
			rng := rand.New(rand.NewSource(3))
			fs := make([]*os.File, len(logs))
			for i, l := range logs {
				f, err := os.OpenFile(k.path(l), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				fs[i] = f
			}
			sizes := make([]int64, len(logs))
			for round := 0; round < 60; round++ {
				for i, f := range fs {
					// Preallocate a piece beyond the end, then a neighbour
					// takes the next blocks, so the next piece is elsewhere.
					if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, sizes[i], int64(4096*(1+rng.Intn(6)))); err != nil {
						t.Fatal(err)
					}
					nb := filepath.Join(filepath.Dir(k.path(logs[i])), fmt.Sprintf("n%d-%03d", i, round))
					os.WriteFile(nb, bytes.Repeat([]byte("n"), 4096*(1+rng.Intn(3))), 0o644)
					if round > 2 && rng.Intn(2) == 0 {
						os.Remove(filepath.Join(filepath.Dir(k.path(logs[i])), fmt.Sprintf("n%d-%03d", i, round-2-rng.Intn(2))))
					}
					n := 1 + rng.Intn(150)
					data := bytes.Repeat(line(round*10+i), n)
					if _, err := f.Write(data); err != nil {
						t.Fatal(err)
					}
					sizes[i] += int64(len(data))
					switch rng.Intn(4) {
					case 0:
						unix.Fdatasync(int(f.Fd()))
					case 1:
						exec.Command("sync", "-f", k.path(logs[i])).Run()
					}
				}
			}
			for _, f := range fs {
				f.Close()
			}
			k.huntCheck()
			k.m.Unmount()
			k.m.Mount("ext4", opts)
			for i, l := range logs {
				appendFile(t, k.path(l), line(9000+i), true)
			}
			k.huntCheck()
		})
	}
}

// TestHuntNoneRemountCycles: appends with fsync, neighbours created and
// deleted, and the volume unmounted and mounted again between rounds.
func TestHuntNoneRemountCycles(t *testing.T) {
	logs := []string{"var/log/a.log", "var/log/b.log", "c.log"}
	k := newDevice(t, devOpts{journal: "none", logs: logs, quiescence: 300 * time.Millisecond, size: 256 << 20})
	for c := 0; c < 6; c++ {
		huntMixed(t, k, int64(c), 200)
		if c%2 == 0 {
			k.m.Sync()
		}
		k.m.Unmount()
		k.m.Mount("ext4", "")
		k.huntCheck()
	}
}
