package kernel

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// A false-positive hunt: honest host work, through the real kernel, that
// must raise no indicator and must seal exactly what the host appended.

// huntStep runs fn, syncs, waits a little and fails on any indicator,
// naming the step.
func (k *kdev) huntStep(name string, fn func() error) {
	k.t.Helper()
	if err := fn(); err != nil {
		k.t.Fatalf("%s: %v%s", name, err, k.eventSummary())
	}
	k.m.Sync()
	time.Sleep(100 * time.Millisecond)
	if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
		k.t.Fatalf("after %s: false positive:%s", name, k.eventSummary())
	}
}

// huntCheck waits for every log to be sealed and fails on any indicator,
// listing the events.
func (k *kdev) huntCheck() {
	k.t.Helper()
	if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
		k.t.Fatalf("false positive:%s", k.eventSummary())
	}
	k.waitSealed(sealTimeout)
	if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
		k.t.Fatalf("false positive:%s", k.eventSummary())
	}
}

// hunt runs writer(0) … writer(n-1), each on its own goroutine, and each
// of bg on its own goroutine until every writer has returned (bg polls
// stopped); then it fails on the first error a writer returned and runs
// huntCheck.
func (k *kdev) hunt(n int, writer func(i int) error, bg ...func(stopped func() bool)) {
	k.t.Helper()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := writer(i); err != nil {
				errs <- err
			}
		}()
	}
	var stop atomic.Bool
	var bgw sync.WaitGroup
	for _, fn := range bg {
		bgw.Add(1)
		go func() {
			defer bgw.Done()
			fn(stop.Load)
		}()
	}
	wg.Wait()
	stop.Store(true)
	bgw.Wait()
	close(errs)
	for err := range errs {
		k.t.Fatalf("%v%s", err, k.eventSummary())
	}
	k.huntCheck()
}

// appendErr is appendFile for goroutines: it returns the error.
func appendErr(path string, data []byte, how int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	switch how {
	case 1:
		return f.Sync()
	case 2:
		return unix.Fdatasync(int(f.Fd()))
	}
	return nil
}

func huntLogs() []string {
	return []string{
		"var/log/a0.log", "var/log/a1.log", "var/log/a2.log", "var/log/a3.log",
		"var/log/sub/b0.log", "var/log/sub/b1.log", "var/log/sub/b2.log",
		"srv/c0.log", "srv/c1.log", "srv/c2.log",
		"top0.log", "var/log/sub/deep/d0.log",
	}
}

// TestHuntDirChurn: 12 protected files in shared directories, each appended
// by its own goroutine, while three goroutines create, hard-link, rename,
// delete files and make and remove directories in the same directories
// (the directories grow into htrees and shrink again).
func TestHuntDirChurn(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			logs := huntLogs()
			k := newDevice(t, devOpts{journal: mode, logs: logs, quiescence: 300 * time.Millisecond, size: 256 << 20})
			dirs := []string{"var/log", "var/log/sub", "srv", ".", "var/log/sub/deep"}
			churner := func(c int) func(stopped func() bool) {
				return func(stopped func() bool) {
					rng := rand.New(rand.NewSource(int64(100 + c)))
					for !stopped() {
						d := filepath.Join(k.m.Dir, dirs[rng.Intn(len(dirs))])
						name := filepath.Join(d, fmt.Sprintf("churn-%d-%05d-a-rather-long-name-to-fill-directory-blocks", c, rng.Intn(1500)))
						switch rng.Intn(8) {
						case 0, 1, 2:
							os.WriteFile(name, bytes.Repeat([]byte{'x'}, rng.Intn(9000)), 0o644)
						case 3:
							os.Remove(name)
						case 4:
							os.Link(name, name+".hl")
						case 5:
							os.Rename(name, filepath.Join(d, fmt.Sprintf("churn-%d-%05d-renamed", c, rng.Intn(1500))))
						case 6:
							os.Mkdir(name+".d", 0o755)
							os.WriteFile(filepath.Join(name+".d", "f"), []byte("y"), 0o644)
						case 7:
							os.Remove(filepath.Join(name+".d", "f"))
							os.Remove(name + ".d")
							os.Remove(name + ".hl")
						}
					}
				}
			}
			k.hunt(len(logs), func(i int) error {
				rng := rand.New(rand.NewSource(int64(i)))
				for j := 0; j < 120; j++ {
					buf := bytes.Repeat(line(j), 1+rng.Intn(60))
					if err := appendErr(k.path(logs[i]), buf, rng.Intn(8)%3); err != nil {
						return fmt.Errorf("append %s: %w", logs[i], err)
					}
				}
				return nil
			}, churner(0), churner(1), churner(2))
			// Remove the churn again: the directories shrink.
			for _, d := range dirs {
				ents, _ := os.ReadDir(filepath.Join(k.m.Dir, d))
				for _, e := range ents {
					if strings.HasPrefix(e.Name(), "churn-") {
						os.RemoveAll(filepath.Join(k.m.Dir, d, e.Name()))
					}
				}
			}
			for i, l := range logs {
				appendFile(t, k.path(l), line(1000+i), i%2 == 0)
			}
			k.huntCheck()
			k.m.Unmount()
			if out, err := exec.Command("e2fsck", "-fn", filepath.Join(k.dir, "image.ext4")).CombinedOutput(); err != nil {
				t.Fatalf("e2fsck -fn on the image: %v\n%s", err, out)
			}
			k.m.Mount("ext4", "")
			k.huntCheck()
		})
	}
}

// TestHuntFillCopyTrim: large copies fill the volume to ~85 % while a
// writer appends, then they are deleted and the mount is trimmed (fstrim),
// and appends continue.
func TestHuntFillCopyTrim(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, size: 256 << 20})
			p := k.path(k.logs[0])
			stop := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						done <- nil
						return
					default:
					}
					if err := appendErr(p, line(i), i%10); err != nil {
						done <- err
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
			work := filepath.Join(k.m.Dir, "work")
			os.Mkdir(work, 0o755)
			src := make([]byte, 60<<20)
			rand.New(rand.NewSource(1)).Read(src)
			if err := os.WriteFile(filepath.Join(work, "src"), src, 0o644); err != nil {
				t.Fatal(err)
			}
			testenv.Run(t, "cp", filepath.Join(work, "src"), filepath.Join(work, "copy1"))
			testenv.Run(t, "cp", filepath.Join(work, "src"), filepath.Join(work, "copy2"))
			testenv.Run(t, "sync", "-f", k.m.Dir)
			var st unix.Statfs_t
			unix.Statfs(k.m.Dir, &st)
			t.Logf("used %.0f%%", 100-100*float64(st.Bfree)/float64(st.Blocks))
			os.Remove(filepath.Join(work, "copy1"))
			os.Remove(filepath.Join(work, "src"))
			testenv.Run(t, "sync", "-f", k.m.Dir)
			testenv.Run(t, "fstrim", "-v", k.m.Dir)
			testenv.Run(t, "cp", filepath.Join(work, "copy2"), filepath.Join(work, "copy3"))
			os.Remove(filepath.Join(work, "copy2"))
			testenv.Run(t, "fstrim", k.m.Dir)
			close(stop)
			if err := <-done; err != nil {
				t.Fatalf("append: %v%s", err, k.eventSummary())
			}
			k.huntCheck()
			os.RemoveAll(work)
			testenv.Run(t, "fstrim", k.m.Dir)
			appendFile(t, p, line(999999), true)
			k.huntCheck()
		})
	}
}

// TestHuntFstrimOnly: fstrim right after appends, with nothing else freed.
func TestHuntFstrimOnly(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			for i := 0; i < 200; i++ {
				appendFile(t, p, line(i), i%50 == 0)
				if i%40 == 39 {
					testenv.Run(t, "fstrim", k.m.Dir)
				}
			}
			k.huntStep("fstrim", func() error { return exec.Command("fstrim", k.m.Dir).Run() })
			k.huntCheck()
		})
	}
}

// TestHuntSyncFlavours: fsync, fdatasync, O_SYNC and O_DSYNC writers, sync
// -f and syncfs, one byte at a time, lines crossing many blocks, writes
// through pwrite at the end.
func TestHuntSyncFlavours(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			var want []byte
			add := func(b []byte) { want = append(want, b...) }
			rng := rand.New(rand.NewSource(7))
			// One byte at a time, one fd, an fsync now and then.
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range bytes.Repeat(line(0), 60) {
				if _, err := f.Write([]byte{c}); err != nil {
					t.Fatalf("byte %d: %v%s", i, err, k.eventSummary())
				}
				if i%997 == 0 {
					f.Sync()
				}
			}
			add(bytes.Repeat(line(0), 60))
			f.Close()
			for round := 0; round < 30; round++ {
				n := 1 + rng.Intn(20000)
				if round%5 == 4 {
					n = 300000 + rng.Intn(300000) // a very long line
				}
				rec := make([]byte, n)
				for i := range rec {
					rec[i] = 'a' + byte(rng.Intn(26))
				}
				rec[n-1] = '\n'
				flag := os.O_WRONLY | os.O_APPEND
				switch round % 7 {
				case 2:
					flag |= unix.O_SYNC
				case 3:
					flag |= unix.O_DSYNC
				}
				f, err := os.OpenFile(p, flag, 0)
				if err != nil {
					t.Fatal(err)
				}
				// Written in uneven pieces.
				for off := 0; off < n; {
					m := min(n-off, 1+rng.Intn(7000))
					if _, err := f.Write(rec[off : off+m]); err != nil {
						t.Fatalf("round %d: %v%s", round, err, k.eventSummary())
					}
					off += m
				}
				switch round % 7 {
				case 0:
					f.Sync()
				case 1:
					unix.Fdatasync(int(f.Fd()))
				case 4:
					testenv.Run(t, "sync", "-f", k.m.Dir)
				case 5:
					unix.Syncfs(int(f.Fd()))
				}
				f.Close()
				add(rec)
			}
			// pwrite at the end, no O_APPEND.
			f, err = os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 50; i++ {
				r := line(i)
				if _, err := f.WriteAt(r, int64(len(want))); err != nil {
					t.Fatal(err)
				}
				add(r)
				if i%10 == 0 {
					unix.Fdatasync(int(f.Fd()))
				}
			}
			f.Close()
			k.huntCheck()
			if got := k.realLog(k.logs[0]); !bytes.Equal(got, want) {
				t.Fatalf("real log: %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
		})
	}
}

// TestHuntAttributes: xattrs (small, in the inode, and large, in an xattr
// block) on the protected file and its directory, chmod, chown, utimes,
// chattr +a / +A, the directory's mtime, each followed by appends.
func TestHuntAttributes(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			dir := filepath.Dir(p)
			n := 0
			app := func() {
				for i := 0; i < 3; i++ {
					appendFile(t, p, line(n), i == 2)
					n++
				}
			}
			app()
			k.waitSealed(sealTimeout)
			big := bytes.Repeat([]byte("V"), 3000)
			huge := bytes.Repeat([]byte("W"), 3900)
			steps := []struct {
				name string
				fn   func() error
			}{
				{"small user xattr on the file", func() error { return unix.Setxattr(p, "user.tag", []byte("v1"), 0) }},
				{"replace it", func() error { return unix.Setxattr(p, "user.tag", []byte("value-two"), 0) }},
				{"small user xattr on the dir", func() error { return unix.Setxattr(dir, "user.tag", []byte("d"), 0) }},
				{"large xattr on the file", func() error { return unix.Setxattr(p, "user.big", big, 0) }},
				{"large xattr on the dir", func() error { return unix.Setxattr(dir, "user.big", big, 0) }},
				{"second large xattr on the file", func() error { return unix.Setxattr(p, "user.huge", huge[:900], 0) }},
				{"trusted xattr on the file", func() error { return unix.Setxattr(p, "trusted.x", []byte("t"), 0) }},
				{"remove the large xattr", func() error { return unix.Removexattr(p, "user.big") }},
				{"remove all xattrs", func() error {
					unix.Removexattr(p, "user.huge")
					unix.Removexattr(p, "trusted.x")
					unix.Removexattr(dir, "user.big")
					unix.Removexattr(dir, "user.tag")
					return unix.Removexattr(p, "user.tag")
				}},
				{"the same large xattr on two files (shared block)", func() error {
					os.WriteFile(filepath.Join(dir, "other"), nil, 0o644)
					unix.Setxattr(filepath.Join(dir, "other"), "user.big", big, 0)
					return unix.Setxattr(p, "user.big", big, 0)
				}},
				{"remove the other", func() error { return os.Remove(filepath.Join(dir, "other")) }},
				{"posix acl", func() error {
					// system.posix_acl_access: user::rw- user:1000:r-- group::r-- mask::r-- other::r--
					acl := []byte{2, 0, 0, 0,
						1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff,
						2, 0, 4, 0, 0xe8, 3, 0, 0,
						4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff,
						0x10, 0, 4, 0, 0xff, 0xff, 0xff, 0xff,
						0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff}
					return unix.Setxattr(p, "system.posix_acl_access", acl, 0)
				}},
				{"chmod", func() error { return os.Chmod(p, 0o600) }},
				{"chown", func() error { return os.Chown(p, 1000, 1000) }},
				{"utimes past", func() error {
					then := time.Now().Add(-48 * time.Hour)
					return os.Chtimes(p, then, then)
				}},
				{"utimes future", func() error {
					then := time.Now().Add(48 * time.Hour)
					return os.Chtimes(p, then, then)
				}},
				{"touch", func() error { return exec.Command("touch", p).Run() }},
				{"dir mtime", func() error {
					then := time.Now().Add(-time.Hour)
					return os.Chtimes(dir, then, then)
				}},
				{"chattr +A", func() error { return exec.Command("chattr", "+A", p).Run() }},
				{"chattr -A", func() error { return exec.Command("chattr", "-A", p).Run() }},
				{"chattr +a", func() error { return exec.Command("chattr", "+a", p).Run() }},
				{"chattr +d", func() error { return exec.Command("chattr", "+d", p).Run() }},
				{"chattr +a on the dir", func() error { return exec.Command("chattr", "+a", dir).Run() }},
				{"chattr -a on the dir", func() error { return exec.Command("chattr", "-a", dir).Run() }},
				{"chattr -a -d", func() error { return exec.Command("chattr", "-a", "-d", p).Run() }},
				{"chattr +S", func() error { return exec.Command("chattr", "+S", p).Run() }},
				{"chattr -S", func() error { return exec.Command("chattr", "-S", p).Run() }},
			}
			for _, s := range steps {
				k.huntStep(s.name, s.fn)
				app()
				k.huntStep(s.name+" then appends", func() error { return nil })
			}
			k.huntCheck()
		})
	}
}

// TestHuntRemountRO: remount read-only and back while appends are in
// flight (not synced), and unmount/mount cycles mid-stream.
func TestHuntRemountRO(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			n := 0
			for cycle := 0; cycle < 4; cycle++ {
				for i := 0; i < 30; i++ {
					appendFile(t, p, bytes.Repeat(line(n), 1+n%50), false)
					n++
				}
				testenv.Run(t, "mount", "-o", "remount,ro", k.m.Dir)
				time.Sleep(200 * time.Millisecond)
				os.ReadFile(p)
				testenv.Run(t, "mount", "-o", "remount,rw", k.m.Dir)
				for i := 0; i < 10; i++ {
					appendFile(t, p, line(n), false)
					n++
				}
				k.m.Unmount()
				k.m.Mount("ext4", "")
				if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
					t.Fatalf("cycle %d: false positive:%s", cycle, k.eventSummary())
				}
			}
			k.huntCheck()
		})
	}
}

// TestHuntENOSPC: another file fills the volume to ENOSPC; appends to the
// protected file go on (some may fail with ENOSPC), the filler is removed,
// appends continue. The volume-full indicator is off: filling is setup.
func TestHuntENOSPC(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, size: 64 << 20, spaceCheckOff: true})
			p := k.path(k.logs[0])
			for i := 0; i < 50; i++ {
				appendFile(t, p, line(i), i%10 == 0)
			}
			fill := filepath.Join(k.m.Dir, "fill")
			f, err := os.Create(fill)
			if err != nil {
				t.Fatal(err)
			}
			buf := bytes.Repeat([]byte("F"), 1<<20)
			for {
				if _, err := f.Write(buf); err != nil {
					break
				}
			}
			for {
				if _, err := f.Write(buf[:4096]); err != nil {
					break
				}
			}
			f.Close()
			var enospc int
			for i := 50; i < 300; i++ {
				if err := appendErr(p, bytes.Repeat(line(i), 1+i%20), i%4%3); err != nil {
					enospc++
				}
			}
			t.Logf("%d appends failed on a full volume", enospc)
			k.m.Sync()
			time.Sleep(time.Second)
			if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
				t.Fatalf("full volume: false positive:%s", k.eventSummary())
			}
			os.Remove(fill)
			for i := 300; i < 400; i++ {
				appendFile(t, p, line(i), i%10 == 0)
			}
			k.huntCheck()
		})
	}
}

// TestHuntManyFsyncs: 16 writers on 16 protected files, one small append
// and one fsync (or fdatasync) each time.
func TestHuntManyFsyncs(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			var logs []string
			for i := 0; i < 16; i++ {
				logs = append(logs, fmt.Sprintf("logs/%c/w%02d.log", 'a'+i%3, i))
			}
			k := newDevice(t, devOpts{journal: mode, logs: logs, quiescence: 300 * time.Millisecond})
			k.hunt(len(logs), func(i int) error {
				f, err := os.OpenFile(k.path(logs[i]), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				for j := 0; j < 150; j++ {
					if _, err := f.Write(line(j)); err != nil {
						return err
					}
					if (i+j)%2 == 0 {
						err = f.Sync()
					} else {
						err = unix.Fdatasync(int(f.Fd()))
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
}

// TestHuntFallocateFill: a journald-like writer: the file's size is grown
// with fallocate (unwritten extents, size changed), then the reserved range
// is filled with pwrite, so that in the end every byte was written.
func TestHuntFallocateFill(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			appendFile(t, p, line(0), true)
			k.waitSealed(sealTimeout)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			off := int64(len(line(0)))
			if err := unix.Fallocate(int(f.Fd()), 0, off, 64<<10); err != nil {
				t.Fatal(err)
			}
			end := off + 64<<10
			for i := 1; off < end; i++ {
				r := line(i)
				r = r[:min(int64(len(r)), end-off)]
				if _, err := f.WriteAt(r, off); err != nil {
					t.Fatal(err)
				}
				off += int64(len(r))
				if i%100 == 0 {
					f.Sync()
				}
			}
			f.Sync()
			k.huntCheck()
		})
	}
}

// TestHuntPerFileJournal: chattr +j (per-file data journaling) on the
// protected file in a data=ordered/writeback mount: its data goes through
// the journal from then on; then -j again.
func TestHuntPerFileJournal(t *testing.T) {
	for _, mode := range []string{"ordered", "writeback"} {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			n := 0
			app := func(cnt int) {
				for i := 0; i < cnt; i++ {
					appendFile(t, p, bytes.Repeat(line(n), 1+n%40), i%5 == 4)
					n++
				}
			}
			app(20)
			k.waitSealed(sealTimeout)
			if out, err := exec.Command("chattr", "+j", p).CombinedOutput(); err != nil {
				t.Skipf("chattr +j: %v: %s (needs CAP_SYS_RESOURCE)", err, out)
			}
			k.huntStep("chattr +j", func() error { return nil })
			app(60)
			k.huntCheck()
			k.huntStep("chattr -j", func() error { return exec.Command("chattr", "-j", p).Run() })
			app(60)
			k.huntCheck()
		})
	}
}

// TestHuntFreeze: fsfreeze -f / -u around appends (a backup tool's
// snapshot), with appends blocked while frozen.
func TestHuntFreeze(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			for cycle := 0; cycle < 3; cycle++ {
				for i := 0; i < 40; i++ {
					appendFile(t, p, line(cycle*100+i), false)
				}
				testenv.Run(t, "fsfreeze", "-f", k.m.Dir)
				done := make(chan struct{})
				go func() { appendErr(p, line(cycle*100+50), 0); close(done) }()
				time.Sleep(500 * time.Millisecond)
				testenv.Run(t, "fsfreeze", "-u", k.m.Dir)
				<-done
				if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
					t.Fatalf("cycle %d: false positive:%s", cycle, k.eventSummary())
				}
			}
			k.huntCheck()
		})
	}
}

// TestHuntAtimeReads: strictatime: every read of the protected file
// updates its atime (inode writes with no size change), interleaved with
// appends, and caches dropped so the kernel reads inodes back.
func TestHuntAtimeReads(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, mountOpts: "strictatime"})
			p := k.path(k.logs[0])
			for i := 0; i < 100; i++ {
				appendFile(t, p, line(i), i%10 == 0)
				if _, err := os.ReadFile(p); err != nil {
					t.Fatal(err)
				}
				if i%25 == 24 {
					dropCaches(t)
				}
				if i%7 == 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
			k.huntCheck()
		})
	}
}

// TestHuntOrphans: in the protected file's directory, files are unlinked
// while open and still written (the orphan list in the superblock and in
// the inodes), large files are truncated (also orphans while it runs),
// while the protected file is appended.
func TestHuntOrphans(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, size: 256 << 20})
			p := k.path(k.logs[0])
			dir := filepath.Dir(p)
			var open []*os.File
			big := bytes.Repeat([]byte("B"), 1<<20)
			for i := 0; i < 60; i++ {
				name := filepath.Join(dir, fmt.Sprintf("tmp%03d", i))
				f, err := os.Create(name)
				if err != nil {
					t.Fatal(err)
				}
				f.Write(big[:4096*(1+i%8)])
				os.Remove(name)
				f.Write(big[:1000])
				open = append(open, f)
				appendFile(t, p, line(i), i%4 == 0)
				if i%10 == 9 {
					for _, f := range open[:5] {
						f.Sync()
						f.Close()
					}
					open = open[5:]
				}
				if i%15 == 14 {
					tn := filepath.Join(dir, fmt.Sprintf("trunc%03d", i))
					for j := 0; j < 8; j++ {
						os.WriteFile(tn, big, 0o644)
					}
					tf, _ := os.OpenFile(tn, os.O_RDWR, 0)
					tf.Write(big)
					tf.Write(big)
					tf.Sync()
					tf.Truncate(12345)
					tf.Sync()
					tf.Truncate(0)
					tf.Close()
				}
			}
			k.m.Sync()
			if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
				t.Fatalf("with orphans open: false positive:%s", k.eventSummary())
			}
			for _, f := range open {
				f.Close()
			}
			for i := 60; i < 80; i++ {
				appendFile(t, p, line(i), i%4 == 0)
			}
			k.huntCheck()
			// Orphans left open across an unmount are impossible; close and
			// cycle the mount.
			k.m.Unmount()
			k.m.Mount("ext4", "")
			appendFile(t, p, line(99), true)
			k.huntCheck()
		})
	}
}

// TestHuntCopyFileRange: appends made by copy_file_range, sendfile and
// `cat other >> log` from an unprotected file.
func TestHuntCopyFileRange(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			src := filepath.Join(k.m.Dir, "src.txt")
			var body []byte
			for i := 0; i < 3000; i++ {
				body = append(body, line(i)...)
			}
			os.WriteFile(src, body, 0o644)
			in, _ := os.Open(src)
			defer in.Close()
			out, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			for i := 0; i < 10; i++ {
				off := int64(i * 777)
				fi, _ := out.Stat()
				end := fi.Size()
				if _, err := unix.CopyFileRange(int(in.Fd()), &off, int(out.Fd()), &end, 10000+i*3000, 0); err != nil {
					t.Fatalf("copy_file_range: %v", err)
				}
				out.Seek(0, 2)
				soff := int64(i * 333)
				if _, err := unix.Sendfile(int(out.Fd()), int(in.Fd()), &soff, 5000+i*1000); err != nil {
					t.Fatalf("sendfile: %v", err)
				}
				if i%3 == 0 {
					out.Sync()
				}
			}
			out.Close()
			testenv.Run(t, "sh", "-c", fmt.Sprintf("cat %s >> %s", src, p))
			k.huntCheck()
		})
	}
}

// TestHuntHugeWrites: single writes larger than the journal (data=journal
// splits them over transactions), a protected file that crosses block
// groups, fsync after each.
func TestHuntHugeWrites(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, size: 384 << 20})
			p := k.path(k.logs[0])
			rng := rand.New(rand.NewSource(3))
			for i := 0; i < 8; i++ {
				buf := make([]byte, (16<<20)+rng.Intn(100000))
				rng.Read(buf)
				os.WriteFile(filepath.Join(k.m.Dir, fmt.Sprintf("spacer%d", i)), buf[:1<<20], 0o644)
				appendFile(t, p, buf, i%2 == 0)
			}
			k.huntCheck()
		})
	}
}

// TestHuntNeighbourFallocate: punch-hole, collapse-range, zero-range and
// insert-range on unprotected files in the protected file's directory,
// interleaved with appends that take the freed blocks.
func TestHuntNeighbourFallocate(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			dir := filepath.Dir(p)
			buf := bytes.Repeat([]byte("N"), 4<<20)
			for i := 0; i < 8; i++ {
				name := filepath.Join(dir, fmt.Sprintf("nb%d", i))
				os.WriteFile(name, buf, 0o644)
				f, _ := os.OpenFile(name, os.O_RDWR, 0)
				fd := int(f.Fd())
				steps := []error{
					unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, 1<<20),
					unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 2<<20, 1<<20),
					unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, 8192, 64<<10),
					unix.Fallocate(fd, unix.FALLOC_FL_INSERT_RANGE, 1<<20, 256<<10),
				}
				for j, err := range steps {
					if err != nil && mode != "journal" {
						t.Logf("fallocate step %d: %v", j, err)
					}
				}
				f.Sync()
				f.Close()
				for j := 0; j < 30; j++ {
					appendFile(t, p, bytes.Repeat(line(i*100+j), 20), j%10 == 9)
				}
				if i%2 == 1 {
					os.Remove(filepath.Join(dir, fmt.Sprintf("nb%d", i-1)))
				}
			}
			k.huntCheck()
		})
	}
}

// TestHuntDiscardMount: the churn of TestHuntDirChurn's kind with online
// discard (-o discard): every freed extent is trimmed at once.
func TestHuntDiscardMount(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			logs := []string{"var/log/a.log", "var/log/b.log", "c.log"}
			k := newDevice(t, devOpts{journal: mode, logs: logs, quiescence: 300 * time.Millisecond, mountOpts: "discard"})
			rng := rand.New(rand.NewSource(5))
			for i := 0; i < 300; i++ {
				l := logs[i%3]
				appendFile(t, k.path(l), bytes.Repeat(line(i), 1+rng.Intn(80)), i%9 == 0)
				d := filepath.Dir(k.path(l))
				name := filepath.Join(d, fmt.Sprintf("x%03d", rng.Intn(40)))
				if rng.Intn(2) == 0 {
					os.WriteFile(name, bytes.Repeat([]byte("z"), rng.Intn(300000)), 0o644)
				} else {
					os.Remove(name)
				}
				if i%50 == 49 {
					k.m.Sync()
				}
			}
			k.huntCheck()
		})
	}
}

// utmpRecord returns a wtmp-like binary record of 384 bytes: text fields
// padded with NULs, ending in 20 reserved zero bytes (struct utmp).
func utmpRecord(i int) []byte {
	r := make([]byte, 384)
	copy(r[0:], []byte{7, 0, 0, 0})
	copy(r[8:], fmt.Sprintf("pts/%d", i%10))
	copy(r[44:], fmt.Sprintf("user%d", i))
	copy(r[76:], "host.example.org")
	copy(r[340:], fmt.Sprintf("%08d", i))
	return r
}

// TestHuntTrailingZerosLostAfter: a binary log (wtmp-like) whose records
// end in NUL bytes, each appended with fsync, as login(1) does. Without a
// journal or with data=ordered/writeback, the zero bytes that end the last
// block cannot be told from bytes never written (revfs/ext4 doc.go, known
// limits): they wait for the next record, or, with a lost_after window, are
// sealed after it with a notice. Every byte must be sealed, no indicator.
func TestHuntTrailingZerosLostAfter(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, lostAfter: 2 * time.Second})
			p := k.path(k.logs[0])
			for i := 0; i < 30; i++ {
				appendFile(t, p, utmpRecord(i), true)
			}
			k.huntCheck()
			st := k.dev.Status()
			t.Logf("notices=%d recent=%+v events:%s", st.Notices, st.Recent, k.eventSummary())
		})
	}
}

// TestHuntSameFileWritersAndSyncer: several writers append to the same
// protected file with O_APPEND (one or many lines per write) while a
// syncer calls fdatasync, sync_file_range on sub-ranges and sync -f in a
// loop: blocks are written back while the file keeps growing into them.
func TestHuntSameFileWritersAndSyncer(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			writer := func(w int) error {
				rng := rand.New(rand.NewSource(int64(w)))
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				deadline := time.Now().Add(6 * time.Second)
				for j := 0; time.Now().Before(deadline); j++ {
					if j%20 == 0 {
						time.Sleep(time.Duration(rng.Intn(3)) * time.Millisecond)
					}
					if _, err := f.Write(bytes.Repeat(line(w*100000+j), 1+rng.Intn(8))); err != nil {
						return err
					}
					if rng.Intn(50) == 0 {
						f.Sync()
					}
				}
				return nil
			}
			syncer := func(stopped func() bool) {
				f, err := os.OpenFile(p, os.O_RDONLY, 0)
				if err != nil {
					return
				}
				defer f.Close()
				rng := rand.New(rand.NewSource(99))
				for i := 0; !stopped(); i++ {
					fi, _ := f.Stat()
					switch i % 4 {
					case 0:
						unix.Fdatasync(int(f.Fd()))
					case 1, 2:
						sz := fi.Size()
						if sz > 0 {
							off := rng.Int63n(sz)
							unix.SyncFileRange(int(f.Fd()), off, 1+rng.Int63n(20000),
								unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
						}
					case 3:
						exec.Command("sync", "-f", p).Run()
					}
					time.Sleep(time.Duration(rng.Intn(5)) * time.Millisecond)
				}
			}
			k.hunt(6, writer, syncer)
		})
	}
}

// TestHuntReuseMetadataBlocks: directory blocks, xattr blocks and extent
// tree blocks of unprotected files are freed, and the protected file's
// appends take those blocks at once (no sync in between).
func TestHuntReuseMetadataBlocks(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, size: 96 << 20, spaceCheckOff: true})
			p := k.path(k.logs[0])
			appendFile(t, p, line(0), true)
			work := filepath.Join(k.m.Dir, "var/log/work")
			os.Mkdir(work, 0o755)
			big := bytes.Repeat([]byte("X"), 3000)
			for d := 0; d < 200; d++ {
				dd := filepath.Join(work, fmt.Sprintf("dir%04d", d))
				os.Mkdir(dd, 0o755)
				for f := 0; f < 30; f++ {
					name := filepath.Join(dd, fmt.Sprintf("file-%03d-with-a-fairly-long-name-to-use-space", f))
					os.WriteFile(name, nil, 0o644)
					if f%10 == 0 {
						unix.Setxattr(name, "user.big", append(big, byte(d), byte(f)), 0)
					}
				}
			}
			// Two files written a block at a time in turn, fsync'd: many extents.
			fa, _ := os.Create(filepath.Join(work, "frag-a"))
			fb, _ := os.Create(filepath.Join(work, "frag-b"))
			blk := bytes.Repeat([]byte("Q"), 4096)
			for i := 0; i < 600; i++ {
				fa.Write(blk)
				fa.Sync()
				fb.Write(blk)
				fb.Sync()
			}
			fa.Close()
			fb.Close()
			k.huntStep("metadata made", func() error { return nil })
			if err := os.RemoveAll(work); err != nil {
				t.Fatal(err)
			}
			var want []byte
			for i := 0; len(want) < 24<<20; i++ {
				r := bytes.Repeat(line(i), 200)
				appendFile(t, p, r, i%20 == 0)
				want = append(want, r...)
			}
			k.huntCheck()
		})
	}
}

// TestHuntAdminTools: tools an administrator runs on a mounted log volume:
// tune2fs parameter changes and e2label (the superblock, and its backups,
// rewritten from user space or by ioctl), e4defrag of unrelated files,
// dumpe2fs / e2fsck -n / filefrag reads; appends around each.
func TestHuntAdminTools(t *testing.T) {
	testenv.RequireCommand(t, "tune2fs")
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, size: 256 << 20})
			p := k.path(k.logs[0])
			n := 0
			app := func() {
				for i := 0; i < 5; i++ {
					appendFile(t, p, line(n), i == 4)
					n++
				}
			}
			app()
			k.waitSealed(sealTimeout)
			// Two fragmented unrelated files beside the protected one.
			dir := filepath.Dir(p)
			fa, _ := os.Create(filepath.Join(dir, "frag-a"))
			fb, _ := os.Create(filepath.Join(dir, "frag-b"))
			blk := bytes.Repeat([]byte("Q"), 4096)
			for i := 0; i < 300; i++ {
				fa.Write(blk)
				fa.Sync()
				fb.Write(blk)
				fb.Sync()
				if i%30 == 0 {
					appendFile(t, p, line(n), true)
					n++
				}
			}
			fa.Close()
			fb.Close()
			run := func(name string, args ...string) func() error {
				return func() error {
					out, err := exec.Command(name, args...).CombinedOutput()
					if err != nil {
						return fmt.Errorf("%s %v: %v: %s", name, args, err, out)
					}
					return nil
				}
			}
			loop := k.m.Loop
			steps := []struct {
				name string
				fn   func() error
			}{
				{"dumpe2fs", run("dumpe2fs", loop)},
				{"e2fsck -n", func() error { exec.Command("e2fsck", "-fn", loop).Run(); return nil }},
				{"filefrag", run("filefrag", "-v", p)},
				{"e2label", run("e2label", loop, "logs")},
				{"tune2fs -L", run("tune2fs", "-L", "logvol", loop)},
				{"tune2fs -c -C", run("tune2fs", "-c", "30", "-C", "5", loop)},
				{"tune2fs -i", run("tune2fs", "-i", "2w", loop)},
				{"tune2fs -e", run("tune2fs", "-e", "remount-ro", loop)},
				{"tune2fs -m", run("tune2fs", "-m", "2", loop)},
				{"tune2fs -r", run("tune2fs", "-r", "1000", loop)},
				{"tune2fs -o", run("tune2fs", "-o", "acl,user_xattr", loop)},
				{"tune2fs -E mount_opts", run("tune2fs", "-E", "mount_opts=nodelalloc", loop)},
				{"tune2fs -E stride", run("tune2fs", "-E", "stride=4,stripe_width=8", loop)},
				{"tune2fs -T", run("tune2fs", "-T", "now", loop)},
				{"tune2fs -u -g", run("tune2fs", "-u", "0", "-g", "0", loop)},
				{"e4defrag unrelated", func() error {
					out, err := exec.Command("e4defrag", filepath.Join(dir, "frag-a")).CombinedOutput()
					t.Logf("e4defrag: %v %s", err, bytes.TrimSpace(out))
					return nil
				}},
			}
			for _, s := range steps {
				k.huntStep(s.name, s.fn)
				app()
				k.huntStep(s.name+" then appends", func() error { return nil })
			}
			k.huntCheck()
			k.m.Unmount()
			k.m.Mount("ext4", "")
			app()
			k.huntCheck()
		})
	}
}

// TestHuntLinkDropWithSplit: the protected file has a second name; in one
// sync the host removes that name and adds enough entries to its directory
// that the directory turns into an htree and its leaves split (the
// protected entry moves to another block). Without a journal the blocks
// arrive in any order within the flush epoch.
func TestHuntLinkDropWithSplit(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			dir := filepath.Dir(p)
			appendFile(t, p, line(0), true)
			k.waitSealed(sealTimeout)
			for round := 0; round < 4; round++ {
				other := filepath.Join(k.m.Dir, fmt.Sprintf("elsewhere%d", round))
				k.huntStep("link", func() error { return os.Link(p, other) })
				k.huntStep(fmt.Sprintf("unlink and grow, round %d", round), func() error {
					if err := os.Remove(other); err != nil {
						return err
					}
					for i := 0; i < 400; i++ {
						name := filepath.Join(dir, fmt.Sprintf("r%d-%04d-a-long-name-to-fill-the-directory-blocks-quickly-xxxxxxxxxxxxxxx", round, i))
						if err := os.WriteFile(name, nil, 0o644); err != nil {
							return err
						}
					}
					return nil
				})
				// The same, with the second name beside it.
				k.huntStep("link beside", func() error { return os.Link(p, p+".1") })
				k.huntStep(fmt.Sprintf("unlink beside and grow, round %d", round), func() error {
					if err := os.Remove(p + ".1"); err != nil {
						return err
					}
					for i := 400; i < 800; i++ {
						name := filepath.Join(dir, fmt.Sprintf("r%d-%04d-a-long-name-to-fill-the-directory-blocks-quickly-xxxxxxxxxxxxxxx", round, i))
						if err := os.WriteFile(name, nil, 0o644); err != nil {
							return err
						}
					}
					return nil
				})
				appendFile(t, p, line(round+1), true)
			}
			k.huntCheck()
		})
	}
}

// TestHuntLinkDropMin: the smallest form of TestHuntLinkDropWithSplit
// found: without a journal, one sync that removes the protected file's
// second name and adds n entries to its directory.
func TestHuntLinkDropMin(t *testing.T) {
	for _, n := range []int{0, 10, 60, 150, 400} {
		for _, beside := range []bool{false, true} {
			t.Run(fmt.Sprintf("none/entries=%d/beside=%v", n, beside), func(t *testing.T) {
				k := newDevice(t, devOpts{journal: "none", quiescence: 300 * time.Millisecond})
				p := k.path(k.logs[0])
				dir := filepath.Dir(p)
				appendFile(t, p, line(0), true)
				k.waitSealed(sealTimeout)
				other := filepath.Join(k.m.Dir, "elsewhere")
				if beside {
					other = p + ".1"
				}
				k.huntStep("link", func() error { return os.Link(p, other) })
				k.huntStep("unlink and add entries", func() error {
					if err := os.Remove(other); err != nil {
						return err
					}
					for i := 0; i < n; i++ {
						name := filepath.Join(dir, fmt.Sprintf("%04d-a-long-name-to-fill-the-directory-blocks-quickly-xxxxxxxxxxxxxxx", i))
						if err := os.WriteFile(name, nil, 0o644); err != nil {
							return err
						}
					}
					return nil
				})
				k.huntCheck()
			})
		}
	}
}

// huntMixed appends to logs while files come and go beside them, with
// fsyncs now and then.
func huntMixed(t *testing.T, k *kdev, seed int64, iters int) {
	rng := rand.New(rand.NewSource(seed))
	for i := 0; i < iters; i++ {
		l := k.logs[i%len(k.logs)]
		appendFile(t, k.path(l), bytes.Repeat(line(i), 1+rng.Intn(60)), rng.Intn(6) == 0)
		d := filepath.Dir(k.path(l))
		name := filepath.Join(d, fmt.Sprintf("m%03d-some-longer-name-for-directory-entries", rng.Intn(120)))
		switch rng.Intn(4) {
		case 0, 1:
			os.WriteFile(name, bytes.Repeat([]byte("z"), rng.Intn(50000)), 0o644)
		case 2:
			os.Remove(name)
		case 3:
			os.Rename(name, name+".r")
		}
	}
}

// TestHuntJournalOptions: journal mount options a host may pick:
// journal_async_commit (the commit block goes out with the transaction,
// no flush before it), journal_checksum, batch times, errors=continue.
func TestHuntJournalOptions(t *testing.T) {
	cases := []struct{ mode, opts string }{
		{"none", "nodelalloc,nobarrier"},
		{"writeback", "journal_async_commit"},
		{"ordered", "journal_checksum"},
		{"journal", "journal_checksum"},
		{"ordered", "max_batch_time=0,min_batch_time=0"},
		{"writeback", "commit=1,journal_async_commit,nobarrier"},
		{"journal", "commit=1,errors=continue"},
	}
	for _, c := range cases {
		t.Run(c.mode+"/"+c.opts, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: c.mode, mountOpts: c.opts, quiescence: 300 * time.Millisecond,
				logs: []string{"var/log/a.log", "var/log/b.log", "srv/c.log"}})
			huntMixed(t, k, 1, 1500)
			k.huntCheck()
		})
	}
}

// TestHuntGrowThenMmap: a journald-like writer: the size is grown first
// (ftruncate: a hole; or fallocate: unwritten extents), made durable,
// then the new range is filled through a shared mapping and msync'd, so
// that in the end every byte under the size was written by the host.
func TestHuntGrowThenMmap(t *testing.T) {
	for _, grow := range []string{"ftruncate", "fallocate"} {
		for _, mode := range modes {
			t.Run(grow+"/"+mode, func(t *testing.T) {
				k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
				p := k.path(k.logs[0])
				appendFile(t, p, bytes.Repeat([]byte("h"), 4096), true)
				k.waitSealed(sealTimeout)
				f, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				const ext = 256 << 10
				for round := 0; round < 3; round++ {
					base := int64(4096 + round*ext)
					if grow == "ftruncate" {
						err = f.Truncate(base + ext)
					} else {
						err = unix.Fallocate(int(f.Fd()), 0, base, ext)
					}
					if err != nil {
						t.Fatal(err)
					}
					f.Sync()
					time.Sleep(time.Second) // longer than the quiescence window
					if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
						t.Fatalf("after growing: false positive:%s", k.eventSummary())
					}
					mem, err := unix.Mmap(int(f.Fd()), base, ext, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
					if err != nil {
						t.Fatal(err)
					}
					var body []byte
					for i := 0; len(body) < ext; i++ {
						body = append(body, line(round*10000+i)...)
					}
					for off := 0; off < ext; off += 8192 {
						copy(mem[off:min(off+8192, ext)], body[off:])
						if off%65536 == 0 {
							unix.Msync(mem, unix.MS_SYNC)
						}
					}
					unix.Msync(mem, unix.MS_SYNC)
					unix.Munmap(mem)
				}
				k.huntCheck()
			})
		}
	}
}

// TestHuntXattrBlockTrim: the protected file's (and its directory's)
// external xattr block is freed when the attribute is removed, then
// trimmed: by fstrim, or at once with -o discard; repeated with a block
// shared with another file.
func TestHuntXattrBlockTrim(t *testing.T) {
	for _, opts := range []string{"", "discard"} {
		for _, mode := range modes {
			t.Run(mode+"/"+opts, func(t *testing.T) {
				k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, mountOpts: opts})
				p := k.path(k.logs[0])
				dir := filepath.Dir(p)
				other := filepath.Join(dir, "other")
				os.WriteFile(other, nil, 0o644)
				big := bytes.Repeat([]byte("V"), 3000)
				n := 0
				app := func() {
					for i := 0; i < 3; i++ {
						appendFile(t, p, line(n), i == 2)
						n++
					}
				}
				for round := 0; round < 3; round++ {
					val := append(bytes.Clone(big), byte(round))
					k.huntStep("set", func() error {
						unix.Setxattr(dir, "user.big", val, 0)
						if round == 2 {
							unix.Setxattr(other, "user.big", val, 0) // the same value: a shared block
						}
						return unix.Setxattr(p, "user.big", val, 0)
					})
					app()
					k.huntStep("remove", func() error {
						unix.Removexattr(dir, "user.big")
						return unix.Removexattr(p, "user.big")
					})
					if round == 2 {
						k.huntStep("remove the other", func() error { return os.Remove(other) })
					}
					// Fill the freed blocks with other data, free it again.
					k.huntStep("reuse", func() error {
						return os.WriteFile(filepath.Join(dir, "reuse"), bytes.Repeat([]byte("r"), 1<<20), 0o644)
					})
					k.huntStep("unreuse", func() error { return os.Remove(filepath.Join(dir, "reuse")) })
					k.huntStep("fstrim", func() error {
						out, err := exec.Command("fstrim", k.m.Dir).CombinedOutput()
						if err != nil {
							return fmt.Errorf("%v: %s", err, out)
						}
						return nil
					})
					app()
				}
				k.huntCheck()
			})
		}
	}
}

// TestHuntHardlinkSnapshots: an rsnapshot-like backup on the same volume:
// `cp -al` of the log tree into snapshot directories, the oldest snapshot
// removed (rm -rf: the protected files' link counts fall), while the logs
// are appended and files come and go beside them.
func TestHuntHardlinkSnapshots(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			logs := []string{"var/log/a.log", "var/log/b.log", "var/log/sub/c.log"}
			k := newDevice(t, devOpts{journal: mode, logs: logs, quiescence: 300 * time.Millisecond})
			snaps := filepath.Join(k.m.Dir, "snapshots")
			os.Mkdir(snaps, 0o755)
			for s := 0; s < 6; s++ {
				huntMixed(t, k, int64(s), 80)
				testenv.Run(t, "cp", "-al", filepath.Join(k.m.Dir, "var"), filepath.Join(snaps, fmt.Sprintf("s%d", s)))
				if s >= 2 {
					testenv.Run(t, "rm", "-rf", filepath.Join(snaps, fmt.Sprintf("s%d", s-2)))
				}
				if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
					t.Fatalf("snapshot %d: false positive:%s", s, k.eventSummary())
				}
				if s%2 == 1 {
					k.m.Sync()
				}
			}
			k.huntCheck()
		})
	}
}

// TestHuntFallocatePause: space reserved with fallocate (the size grows),
// then filled by small fsync'd writes with pauses longer than the
// quiescence window in between (an idle logger that preallocates).
func TestHuntFallocatePause(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := unix.Fallocate(int(f.Fd()), 0, 0, 16<<10); err != nil {
				t.Fatal(err)
			}
			var off int64
			for i := 0; i < 6; i++ {
				r := bytes.Repeat(line(i), 10) // 550 bytes: inside the first block
				if _, err := f.WriteAt(r, off); err != nil {
					t.Fatalf("write %d: %v%s", i, err, k.eventSummary())
				}
				off += int64(len(r))
				f.Sync()
				time.Sleep(time.Second)
				if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
					t.Fatalf("after write %d: false positive:%s", i, k.eventSummary())
				}
			}
			got := k.realLog(k.logs[0])
			if bytes.IndexByte(got[min(len(got), int(off)):], 0) >= 0 && len(got) > int(off) {
				t.Errorf("the real log (%d bytes) holds zeroes past the %d bytes written", len(got), off)
			}
		})
	}
}
