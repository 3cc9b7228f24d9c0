// Package kernel holds the root-only end-to-end tests: a WORM device served
// by our NBD server, attached through nbdfuse → loop, mounted by the real
// kernel ext4 driver, written with ordinary system calls. They check the
// invariants of DESIGN.md against what the kernel really writes.
package kernel

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/nbd/nbdtest"
	"github.com/indelible-worm/indelible/provision"
	"github.com/indelible-worm/indelible/seal"
	"github.com/indelible-worm/indelible/worm"
)

var modes = []string{"ordered", "journal", "writeback", "none"}

// kdev is one device under test: the device directory, the running WORM
// device behind an in-process NBD server, and the host's mount of it.
type kdev struct {
	t          *testing.T
	dir        string
	auditorKey string
	logs       []string
	dev        *worm.Opened
	uri        string
	m          *testenv.KernelMount
	starts     int // how many times start served the device (KTRACE)
}

type devOpts struct {
	journal    string
	logs       []string
	size       int64
	mountOpts  string // "" = the image's defaults
	quiescence time.Duration
	lostAfter  time.Duration // commit.lost_after; 0 = the default
	response   worm.Response
	// spaceCheckOff disables the volume-full indicator, for tests that
	// fill the volume on purpose as setup.
	spaceCheckOff bool
}

func newDevice(t *testing.T, o devOpts) *kdev {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mkfs.ext4")
	if o.size == 0 {
		o.size = 128 << 20
	}
	if len(o.logs) == 0 {
		o.logs = []string{"var/log/app.log"}
	}
	base := t.TempDir()
	k := &kdev{t: t, dir: filepath.Join(base, "dev"), auditorKey: filepath.Join(base, "auditor.key"), logs: o.logs}
	cfg := worm.DefaultConfig()
	if o.quiescence > 0 {
		cfg.Commit.Quiescence.Duration = o.quiescence
	}
	if o.response != "" {
		cfg.OnViolation = o.response
	}
	if o.lostAfter > 0 {
		cfg.Commit.LostAfter.Duration = o.lostAfter
	}
	if o.spaceCheckOff {
		cfg.VolumeFullPercent = 0
	}
	_, err := provision.Create(provision.Options{
		Dir: k.dir, Size: o.size, Journal: o.journal, Logs: o.logs, AuditorKey: k.auditorKey,
		KeyBytes: 16 << 20, Config: cfg,
		CreateStore: func(store, devKey, audKey string, kb int64) error {
			return seal.Create(store, devKey, audKey, kb, seal.CreateOptions{})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	k.start()
	k.m = testenv.MountNBD(t, k.uri, "ext4", o.mountOpts)
	return k
}

// start opens the device directory and serves it.
func (k *kdev) start() {
	k.t.Helper()
	dev, err := worm.OpenDir(k.dir, worm.Options{Logger: testenv.Logger(k.t)})
	if err != nil {
		k.t.Fatal(err)
	}
	k.dev = dev
	// Cleanups run last-registered first: the server stops (and flushes)
	// before the device closes.
	k.t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			k.t.Errorf("closing the device: %v", err)
		}
	})
	k.uri = nbdtest.StartDevice(k.t, k.recording(dev))
}

// recording returns dev, or, when KTRACE names a directory, dev wrapped in
// a blockdev.Recorder: the first start copies the device directory as it
// was before the host wrote anything to KTRACE/TEST/template and every
// start records the host's requests to KTRACE/TEST/requests.N.trace, so
// that a failure the kernel shows only now and then can be replayed
// offline, as often as needed (go run ./bench/replay -dir template -trace
// requests.1.trace).
func (k *kdev) recording(dev blockdev.Device) blockdev.Device {
	root := os.Getenv("KTRACE")
	if root == "" {
		return dev
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "_").Replace(k.t.Name()))
	k.starts++
	if k.starts == 1 {
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			k.t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", "--sparse=always", k.dir, filepath.Join(dir, "template")).CombinedOutput(); err != nil {
			k.t.Fatalf("KTRACE: copying the device directory: %v: %s", err, out)
		}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("requests.%d.trace", k.starts)))
	if err != nil {
		k.t.Fatal(err)
	}
	r, err := blockdev.NewRecorder(keepOpen{dev}, f)
	if err != nil {
		k.t.Fatal(err)
	}
	// Registered after the device's Close and before the server's stop:
	// runs after the server stopped and before the device closes.
	k.t.Cleanup(func() {
		if err := r.Close(); err != nil {
			k.t.Errorf("KTRACE: %v", err)
		}
	})
	return r
}

// keepOpen hides the device's Close from the Recorder: the test closes
// the device itself.
type keepOpen struct{ blockdev.Device }

func (keepOpen) Close() error { return nil }

// path is the host path of a protected file.
func (k *kdev) path(log string) string { return filepath.Join(k.m.Dir, log) }

// realLog reads the sealed real log of a protected file.
func (k *kdev) realLog(log string) []byte {
	b, err := os.ReadFile(filepath.Join(k.dir, "store", log))
	if err != nil && !os.IsNotExist(err) {
		k.t.Fatal(err)
	}
	return b
}

// waitSealed syncs the host and waits until every protected file's real log
// equals the file's content as the host reads it (I1 and I3). Between polls it
// checks that the real log is always a prefix of the content (I1).
func (k *kdev) waitSealed(timeout time.Duration) {
	k.t.Helper()
	k.m.Sync()
	deadline := time.Now().Add(timeout)
	for _, l := range k.logs {
		want, err := os.ReadFile(k.path(l))
		if err != nil {
			k.t.Fatal(err)
		}
		for {
			got := k.realLog(l)
			if !bytes.HasPrefix(want, got) {
				k.t.Fatalf("I1 violated: real log of %s (%d bytes) is not a prefix of the file (%d bytes); first difference at %d",
					l, len(got), len(want), firstDiff(got, want))
			}
			if len(got) == len(want) {
				break
			}
			if time.Now().After(deadline) {
				k.t.Fatalf("I3: %s: %d of %d bytes sealed after %v; status: %+v", l, len(got), len(want), timeout, k.dev.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
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

// noIndicators fails the test if the device raised any indicator.
func (k *kdev) noIndicators() {
	k.t.Helper()
	if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
		k.t.Fatalf("false positive: %d indicators, read-only=%v: %+v", st.Indicators, st.ReadOnly, st.Recent)
	}
}

// appendFile appends data to a file with O_APPEND and optionally fsyncs.
func appendFile(t *testing.T, path string, data []byte, fsync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // also when a write fails: an open file keeps the unmount busy
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if fsync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func line(i int) []byte {
	return []byte(fmt.Sprintf("%06d the quick brown fox jumps over the lazy dog\n", i))
}

var (
	buildOnce sync.Once
	bin       string
	buildErr  error
)

// TestMain removes the indelible binary buildIndelible made, if any.
func TestMain(m *testing.M) {
	code := m.Run()
	if bin != "" {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}
