package kernel

import (
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
)

const sealTimeout = 20 * time.Second

// TestEchoAppends: `echo >>` of lines, in each journal mode.
func TestEchoAppends(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			for i := 0; i < 50; i++ {
				cmd := exec.Command("sh", "-c", fmt.Sprintf("echo 'line %d from the host' >> %s", i, p))
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
			}
			k.waitSealed(sealTimeout)
			for i := 50; i < 60; i++ {
				appendFile(t, p, line(i), false)
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
		})
	}
}

// TestWritersAndSizes: O_APPEND writers and writers that seek to the end
// without O_APPEND, appends of 1 B to 1 MiB, with and without fsync.
func TestWritersAndSizes(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, size: 256 << 20})
			p := k.path(k.logs[0])
			rng := rand.New(rand.NewSource(int64(len(mode))))
			sizes := []int{1, 2, 7, 100, 511, 4095, 4096, 4097, 65536, 1 << 20}
			for i := 0; i < 40; i++ {
				n := sizes[rng.Intn(len(sizes))]
				buf := make([]byte, n)
				rng.Read(buf)
				fsync := rng.Intn(2) == 0
				if rng.Intn(2) == 0 {
					appendFile(t, p, buf, fsync)
				} else {
					seekAppend(t, p, buf, fsync)
				}
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
		})
	}
}

// seekAppend opens without O_APPEND, seeks to the end and writes.
func seekAppend(t *testing.T, path string, data []byte, fsync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if fsync {
		f.Sync()
	}
}

// TestConcurrentWriters: 16 writers over 16 protected files.
func TestConcurrentWriters(t *testing.T) {
	for _, mode := range []string{"ordered", "journal"} {
		t.Run(mode, func(t *testing.T) {
			var logs []string
			for i := 0; i < 16; i++ {
				logs = append(logs, fmt.Sprintf("logs/w%02d.log", i))
			}
			k := newDevice(t, devOpts{journal: mode, logs: logs, quiescence: 300 * time.Millisecond})
			var wg sync.WaitGroup
			for i, l := range logs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(i)))
					for j := 0; j < 60; j++ {
						buf := make([]byte, 1+rng.Intn(6000))
						rng.Read(buf)
						appendFile(t, k.path(l), buf, j%16 == 15)
					}
				}()
			}
			wg.Wait()
			k.waitSealed(sealTimeout)
			k.noIndicators()
		})
	}
}

// TestManyExtents: a protected file fragmented past the 4 extents of the
// inode and past one extent leaf block (340 extents at 4 KiB): free space is
// first made a checkerboard of single blocks (fill the volume with one-block
// files, delete every other one), so each fsync'd 4 KiB append gets an
// extent of its own.
func TestManyExtents(t *testing.T) {
	testenv.RequireLong(t)
	for _, mode := range []string{"ordered", "none"} {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, size: 48 << 20, spaceCheckOff: true})
			p := k.path(k.logs[0])
			fill := filepath.Join(k.m.Dir, "fill")
			os.Mkdir(fill, 0o755)
			blk := make([]byte, 4096)
			var names []string
			for i := 0; ; i++ {
				name := filepath.Join(fill, fmt.Sprintf("%05d", i))
				if err := os.WriteFile(name, blk, 0o644); err != nil {
					os.Remove(name)
					break // the volume is full
				}
				names = append(names, name)
			}
			testenv.Run(t, "sync")
			for i := 0; i < len(names); i += 2 {
				os.Remove(names[i])
			}
			testenv.Run(t, "sync")
			const appends = 400
			for i := 0; i < appends; i++ {
				for j := range blk {
					blk[j] = byte(i + j)
				}
				appendFile(t, p, blk, true)
			}
			k.waitSealed(60 * time.Second)
			out := testenv.Run(t, "filefrag", p)
			t.Logf("filefrag: %s", out)
			var extents int
			fmt.Sscanf(out[strings.LastIndex(out, ":")+1:], "%d", &extents)
			if extents <= 340 {
				t.Fatalf("the workload made only %d extents; the test needs more than one leaf block (> 340)", extents)
			}
			k.noIndicators()
		})
	}
}

// TestRemount: appends spanning an unmount and mount.
func TestRemount(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			for i := 0; i < 20; i++ {
				appendFile(t, p, line(i), false)
			}
			k.m.Unmount()
			k.m.Mount("ext4", "")
			for i := 20; i < 40; i++ {
				appendFile(t, p, line(i), false)
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
		})
	}
}

// TestHostChoosesAnotherMode: the engine follows the host's writes, not
// device.toml.
func TestHostChoosesAnotherMode(t *testing.T) {
	for _, c := range []struct{ init, host string }{
		{"ordered", "data=journal"}, {"journal", "data=ordered"}, {"ordered", "data=writeback"},
	} {
		t.Run(c.init+"-as-"+c.host, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: c.init, mountOpts: c.host, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			for i := 0; i < 30; i++ {
				appendFile(t, p, line(i), i%5 == 0)
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
		})
	}
}

// TestChattrIsNotAnAttack: the host flag manager sets and clears +a/+i on
// protected files on purpose; appends around it keep being sealed and no
// indicator is raised.
func TestChattrIsNotAnAttack(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			for i := 0; i < 5; i++ {
				appendFile(t, p, line(i), false)
			}
			k.waitSealed(sealTimeout)
			testenv.Run(t, "chattr", "+a", p)
			appendFile(t, p, line(5), false)
			k.waitSealed(sealTimeout)
			testenv.Run(t, "chattr", "-a", p)
			appendFile(t, p, line(6), false)
			testenv.Run(t, "chattr", "+i", p)
			k.waitSealed(sealTimeout)
			testenv.Run(t, "chattr", "-i", p)
			appendFile(t, p, line(7), true)
			k.waitSealed(sealTimeout)
			k.noIndicators()
		})
	}
}
