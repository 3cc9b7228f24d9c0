package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/provision"
	"github.com/indelible-worm/indelible/seal"
	"github.com/indelible-worm/indelible/worm"
)

// buildIndelible builds the command once per test binary.
func buildIndelible(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "indelible-bin-")
		if err != nil {
			buildErr = err
			return
		}
		bin = filepath.Join(dir, "indelible")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/indelible-worm/indelible/cmd/indelible").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// TestKill9 kills the serving process with SIGKILL at random moments while
// the host appends, restarts it, remounts, and goes on. After each restart
// the real log must be a prefix of what the host wrote (I1), hold at least
// everything that was sealed before the kill (I2, I6), and finally catch up
// with no duplicate or missing byte.
func TestKill9(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mkfs.ext4")
	bin := buildIndelible(t)
	for _, mode := range []string{"ordered", "journal", "none"} {
		t.Run(mode, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "dev")
			cfg := worm.DefaultConfig()
			cfg.Commit.Quiescence.Duration = 200 * time.Millisecond
			// A kill can leave bytes in the file that the device cannot
			// show the host wrote (see TestHostCrashLosesData): sealed as
			// found after this window.
			cfg.Commit.LostAfter.Duration = 2 * time.Second
			logName := "var/log/app.log"
			_, err := provision.Create(provision.Options{
				Dir: dir, Size: 64 << 20, Journal: mode, Logs: []string{logName},
				AuditorKey: filepath.Join(base, "auditor.key"), KeyBytes: 8 << 20, Config: cfg,
				CreateStore: func(store, devKey, audKey string, kb int64) error {
					return seal.Create(store, devKey, audKey, kb, seal.CreateOptions{})
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			realLog := filepath.Join(dir, "store", logName)
			var written []byte // everything the host appended and saw succeed, in order
			rng := rand.New(rand.NewSource(kill9Seed(t)))
			for round := 0; round < 4; round++ {
				sock := filepath.Join(base, fmt.Sprintf("s%d.sock", round))
				cmd := exec.Command(bin, "serve", dir, "--listen", "unix:"+sock)
				cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				done := make(chan struct{})
				go func() { cmd.Wait(); close(done) }()
				// Never leave a server behind, even when the round fails.
				t.Cleanup(func() { cmd.Process.Kill(); <-done })
				testenv.WaitFor(t, 10*time.Second, "server socket", func() bool { _, err := os.Stat(sock); return err == nil })
				sealedBefore, _ := os.ReadFile(realLog)

				m := hostBoot(t, "nbd+unix:///?socket="+sock)
				if mode == "none" {
					keepExtentsInInode(t, m)
				}
				// After a crash the image's file may be shorter than what the
				// host wrote before (unflushed data is lost with the server);
				// the host goes on from what it now sees.
				cur, err := os.ReadFile(filepath.Join(m.Dir, logName))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(cur, written) {
					d := firstDiff(cur, written)
					reportFile(t, bin, dir, cfg.Image, logName)
					t.Fatalf("round %d: after restart the file (%d bytes) lost fsync'd data (%d bytes written and synced): first difference at %d: file %q, written %q",
						round, len(cur), len(written), d, cur[d:min(d+60, len(cur))], written[d:min(d+60, len(written))])
				}
				if !bytes.HasPrefix(cur, sealedBefore) {
					t.Fatalf("round %d: sealed bytes (%d) not in the recovered file (%d bytes)", round, len(sealedBefore), len(cur))
				}
				written = cur
				killAt := time.Duration(100+rng.Intn(900)) * time.Millisecond
				timer := time.AfterFunc(killAt, func() { cmd.Process.Signal(syscall.SIGKILL) })
				for i := 0; ; i++ {
					data := line(len(written) + i)
					f, err := os.OpenFile(filepath.Join(m.Dir, logName), os.O_WRONLY|os.O_APPEND, 0)
					if err != nil {
						break
					}
					_, werr := f.Write(data)
					serr := f.Sync()
					f.Close()
					if werr != nil || serr != nil {
						break
					}
					written = append(written, data...)
					select {
					case <-done:
					default:
						continue
					}
					break
				}
				timer.Stop()
				cmd.Process.Signal(syscall.SIGKILL)
				<-done
				// The real log never holds a byte the host did not append, in
				// order (I1); bytes after the last acknowledged fsync may or may
				// not be there.
				got, _ := os.ReadFile(realLog)
				if n := min(len(got), len(written)); !bytes.Equal(got[:n], written[:n]) {
					d := firstDiff(got, written)
					t.Fatalf("round %d: real log (%d bytes) diverges from what the host wrote (%d bytes) at %d: real log %q, written %q",
						round, len(got), len(written), d, got[d:min(d+60, len(got))], written[d:min(d+60, len(written))])
				}
				m.ForceDetach()
			}
			// A final clean run: everything in the file gets sealed, what
			// the host flushed and what it wrote but the device could not
			// show it wrote (sealed as found after lost_after).
			sock := filepath.Join(base, "final.sock")
			cmd := exec.Command(bin, "serve", dir, "--listen", "unix:"+sock)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			testenv.StartProcess(t, cmd)
			testenv.WaitFor(t, 10*time.Second, "server socket", func() bool { _, err := os.Stat(sock); return err == nil })
			m := hostBoot(t, "nbd+unix:///?socket="+sock)
			want, _ := os.ReadFile(filepath.Join(m.Dir, logName))
			// Checked first: a file that lost what the host synced is a
			// different failure from a device that does not catch up.
			if !bytes.HasPrefix(want, written) {
				d := firstDiff(want, written)
				reportFile(t, bin, dir, cfg.Image, logName)
				t.Fatalf("final: the file lost fsync'd data (%d bytes, %d synced): first difference at %d", len(want), len(written), d)
			}
			deadline := time.Now().Add(sealTimeout)
			for {
				got, _ := os.ReadFile(realLog)
				if bytes.Equal(got, want) {
					break
				}
				if !bytes.HasPrefix(want, got) || time.Now().After(deadline) {
					reportFile(t, bin, dir, cfg.Image, logName)
					t.Fatalf("final: real log %d bytes, file %d bytes, first difference at %d", len(got), len(want), firstDiff(got, want))
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// kill9Seed is the seed of TestKill9's kill moments: 7, or
// INDELIBLE_KILL9_SEED to sweep others (a loop over seeds under load finds
// rare host states far sooner than repeating one).
func kill9Seed(t *testing.T) int64 {
	v := os.Getenv("INDELIBLE_KILL9_SEED")
	if v == "" {
		return 7
	}
	seed, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("INDELIBLE_KILL9_SEED: %v", err)
	}
	t.Logf("kill moments from seed %d", seed)
	return seed
}

// reportFile logs, when a check fails, what the device and the image say of
// a protected file: the device's published status (committed, pending,
// stalled ranges) and the file's inode and extents as debugfs reads them
// from the image, so that a failure in CI can be understood from its output
// alone.
func reportFile(t *testing.T, bin, dir, image, logName string) {
	t.Helper()
	st, _ := exec.Command(bin, "status", "--json", dir).CombinedOutput()
	t.Logf("indelible status --json:\n%s", st)
	for _, req := range []string{"stat /" + logName, "ex /" + logName} {
		out, _ := exec.Command("debugfs", "-R", req, filepath.Join(dir, image)).CombinedOutput()
		t.Logf("debugfs -R %q:\n%s", req, out)
	}
}

// hostBoot attaches the device and does what a host does at boot after a
// crash: e2fsck -fy (journal replay, and the repairs a filesystem without a
// journal needs before it is safe to mount), then mount.
func hostBoot(t *testing.T, uri string) *testenv.KernelMount {
	t.Helper()
	m := testenv.MountNBD(t, uri, "", "")
	out, err := exec.Command("e2fsck", "-fy", m.Loop).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() < 4) {
		t.Fatalf("e2fsck -fy %s: %v\n%s", m.Loop, err, out)
	}
	t.Logf("e2fsck: %s", bytes.TrimSpace(out))
	m.Mount("ext4", "")
	return m
}

// keepExtentsInInode has the host's ext4 allocate a file's data blocks
// from the file's own preallocation (mb_stream_req 0), not from per-CPU
// group preallocations, which interleave a small file's blocks between
// regions as the writer moves between CPUs: a file appended to alone then
// keeps a few extents (three in these tests), held in its inode with its
// size.
//
// Without a journal, a file with more than four extents has its size in
// the inode and its last extent in a leaf block, written separately: a
// device killed between the two leaves a leaf mapping blocks past the
// size, and e2fsck -fy then clears that whole extent ("end of extent
// exceeds allowed value"), blocks the host had fsync'd included. That is
// the host's filesystem losing data to its own repair, not the device
// losing it (the device still holds those blocks, unmapped), and not what
// TestKill9 is about; TestHostCrashLosesData covers a host that loses data.
func keepExtentsInInode(t *testing.T, m *testenv.KernelMount) {
	t.Helper()
	knob := filepath.Join("/sys/fs/ext4", filepath.Base(m.Loop), "mb_stream_req")
	if err := os.WriteFile(knob, []byte("0"), 0); err != nil {
		t.Fatalf("setting the host's allocator: %v", err)
	}
}

// TestHostCrashLosesData: the host loses power after the new size and block
// map of a protected file reached the device but before the appended data
// did. After its reboot the file reads what the device holds there
// (zeroes), and the host appends after it. The device must not stop
// sealing that file for good: once the range has stayed unwritten for
// commit.lost_after, it is sealed as found, with a lost-write notice and
// no indicator, and the real log equals the file again.
func TestHostCrashLosesData(t *testing.T) {
	for _, mode := range []string{"none", "writeback"} {
		t.Run(mode, func(t *testing.T) {
			// nodelalloc: blocks are allocated, and the size raised, at
			// write() time, so the metadata can go out without the data.
			k := newDevice(t, devOpts{journal: mode, quiescence: 200 * time.Millisecond, lostAfter: 2 * time.Second, mountOpts: "nodelalloc"})
			log := k.logs[0]
			var sent []byte
			for i := 0; i < 20; i++ {
				appendFile(t, k.path(log), line(i), true)
				sent = append(sent, line(i)...)
			}
			k.waitSealed(sealTimeout)

			// Two blocks' worth of appends stay in the host's page cache;
			// an fsync of another file in the same inode-table block takes
			// the log's inode to the device (written home without a
			// journal, committed with data=writeback).
			lost := bytes.Repeat([]byte("lost in the crash\n"), 400)
			appendFile(t, k.path(log), lost, false)
			other := filepath.Join(filepath.Dir(k.path(log)), "other")
			if err := os.WriteFile(other, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			appendFile(t, other, []byte("x"), true)
			k.m.Crash()

			k.m = hostBoot(t, k.uri)
			cur, err := os.ReadFile(k.path(log))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(cur, sent) {
				t.Fatalf("the host's file (%d bytes) lost fsync'd data (%d bytes)", len(cur), len(sent))
			}
			if len(cur) == len(sent) || bytes.HasSuffix(cur, lost) {
				t.Fatalf("the scenario did not happen: after the crash the file has %d bytes (%d before the lost appends, %d lost), the lost data reached the device: %v",
					len(cur), len(sent), len(lost), bytes.HasSuffix(cur, lost))
			}
			t.Logf("after the crash the file has %d bytes: %d fsync'd, then %d the device holds for the lost appends", len(cur), len(sent), len(cur)-len(sent))
			for i := 20; i < 40; i++ {
				appendFile(t, k.path(log), line(i), true)
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
			if e := k.waitEvent([]string{"lost-write"}, 10*time.Second); e.File != log || e.FileOff < int64(len(sent))/4096*4096 {
				t.Fatalf("lost-write notice %+v: want one for %s past byte %d", e, log, len(sent))
			} else {
				t.Logf("notice: %+v", e)
			}
		})
	}
}
