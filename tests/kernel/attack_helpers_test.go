package kernel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/audit"
	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/worm"
)

// hostTimeout bounds every host command of an attack: after an I/O error
// the kernel's ext4 may be half broken, and a test must never hang on it.
const hostTimeout = 60 * time.Second

// hostResult is what the host saw of a command.
type hostResult struct {
	out string
	err error
}

func (r hostResult) String() string {
	out := strings.TrimSpace(r.out)
	if len(out) > 400 {
		out = out[:400] + "..."
	}
	if r.err != nil {
		return fmt.Sprintf("failed (%v): %s", r.err, out)
	}
	return "succeeded: " + out
}

// host runs a command as the attacker on the host, with a timeout. Failure is
// a result, not a test failure: refusing the attack is what the device does.
func host(t *testing.T, name string, args ...string) hostResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hostTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("host command %s %q hung for %v", name, args, hostTimeout)
	}
	r := hostResult{string(out), err}
	t.Logf("host: %s %s: %s", name, strings.Join(args, " "), r)
	return r
}

// hostSh runs a shell snippet on the host.
func hostSh(t *testing.T, script string) hostResult {
	t.Helper()
	return host(t, "sh", "-c", script)
}

// dropCaches makes the host forget cached pages, dentries and inodes, so its
// next reads come from the device.
func dropCaches(t *testing.T) {
	t.Helper()
	host(t, "sync")
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		t.Fatalf("drop_caches: %v", err)
	}
}

// mountOptions returns the options of the mount at dir in /proc/mounts.
func mountOptions(dir string) (string, bool) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var opts string
	found := false
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 4 && fs[1] == dir {
			opts, found = fs[3], true // the last mount on dir wins
		}
	}
	return opts, found
}

// events reads the sealed event log of the device.
func (k *kdev) events() []worm.Event {
	b, err := os.ReadFile(filepath.Join(k.dir, "store", filepath.FromSlash(worm.EventLogPath)))
	if err != nil {
		return nil
	}
	var out []worm.Event
	for _, l := range bytes.Split(b, []byte("\n")) {
		var e worm.Event
		if len(l) > 0 && json.Unmarshal(l, &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits until the sealed event log holds an indicator of one of
// kinds, and returns it. It fails the test, listing what was recorded, when
// none comes: the attack went undetected.
func (k *kdev) waitEvent(kinds []string, timeout time.Duration) worm.Event {
	k.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, e := range k.events() {
			for _, want := range kinds {
				if e.Kind == want {
					return e
				}
			}
		}
		if time.Now().After(deadline) {
			st := k.dev.Status()
			k.t.Fatalf("no %v indicator in the sealed event log after %v; event log: %+v; status: indicators=%d read-only=%v recent=%+v",
				kinds, timeout, k.events(), st.Indicators, st.ReadOnly, st.Recent)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// realLogsKept checks I2 after an attack: every real log still starts with
// every byte committed before it.
func (k *kdev) realLogsKept(before map[string][]byte) {
	k.t.Helper()
	for l, b := range before {
		got := k.realLog(l)
		if !bytes.HasPrefix(got, b) {
			k.t.Fatalf("I2 violated: the real log of %s (%d bytes) no longer starts with the %d bytes committed before the attack (first difference at %d)",
				l, len(got), len(b), firstDiff(got, b))
		}
	}
}

// verify runs `indelible verify --key` on the device directory.
func (k *kdev) verify(bin string) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hostTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "verify", "--key", k.auditorKey, k.dir).CombinedOutput()
	if err != nil {
		k.t.Fatalf("indelible verify --key: %v\n%s", err, out)
	}
}

// diffReport is the JSON `indelible diff --json` prints for one file.
type diffReport struct {
	File struct {
		Path     string `json:"path"`
		Inode    uint64 `json:"inode"`
		RealLen  int64  `json:"real_len"`
		ImageLen int64  `json:"image_len"`
		Gone     string `json:"gone"`
		Entry    string `json:"entry"`
		Ranges   []struct {
			Kind  string `json:"kind"`
			Off   int64  `json:"off"`
			Len   int64  `json:"len"`
			Real  string `json:"real"`
			Image string `json:"image"`
		} `json:"ranges"`
	} `json:"file"`
	Diverges bool `json:"diverges"`
}

// diff runs `indelible diff --json` and returns its exit code and the report
// of each protected file by path.
func (k *kdev) diff(bin string) (int, map[string]diffReport, string) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hostTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "diff", "--json", k.dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		k.t.Fatalf("indelible diff: %v", err)
	}
	reps := map[string]diffReport{}
	for _, l := range bytes.Split(stdout.Bytes(), []byte("\n")) {
		var r diffReport
		if json.Unmarshal(l, &r) == nil && r.File.Path != "" {
			reps[r.File.Path] = r
		}
	}
	return code, reps, stdout.String() + stderr.String()
}

// debugfs runs debugfs requests against the host's loop device, as an
// attacker with root would (-w writes through the block device, under the
// mounted filesystem).
func (k *kdev) debugfs(write bool, req string) hostResult {
	k.t.Helper()
	args := []string{}
	if write {
		args = append(args, "-w")
	}
	return host(k.t, "debugfs", append(args, "-R", req, k.m.Loop)...)
}

var (
	reBmap = regexp.MustCompile(`(?m)^\s*(\d+)\s*$`)
	reImap = regexp.MustCompile(`located at block (\d+), offset (0x[0-9a-f]+)`)
	reBS   = regexp.MustCompile(`Block size:\s+(\d+)`)
)

// dataBlock finds the physical block holding logical block n of inode ino.
func (k *kdev) dataBlock(ino uint64, n int) int64 {
	k.t.Helper()
	r := k.debugfs(false, fmt.Sprintf("bmap <%d> %d", ino, n))
	m := reBmap.FindStringSubmatch(r.out)
	if m == nil {
		k.t.Fatalf("debugfs bmap: %s", r)
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

// inodeBlock finds the inode-table block holding inode ino and the record's
// offset in it.
func (k *kdev) inodeBlock(ino uint64) (int64, int64) {
	k.t.Helper()
	r := k.debugfs(false, fmt.Sprintf("imap <%d>", ino))
	m := reImap.FindStringSubmatch(r.out)
	if m == nil {
		k.t.Fatalf("debugfs imap: %s", r)
	}
	b, _ := strconv.ParseInt(m[1], 10, 64)
	o, _ := strconv.ParseInt(m[2], 0, 64)
	return b, o
}

// blockSize reads the filesystem block size with dumpe2fs.
func (k *kdev) blockSize() int64 {
	k.t.Helper()
	r := host(k.t, "dumpe2fs", "-h", k.m.Loop)
	m := reBS.FindStringSubmatch(r.out)
	if m == nil {
		k.t.Fatalf("dumpe2fs: %s", r)
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

// inode returns the protected inode of a log from device.toml.
func (k *kdev) inode(log string) uint64 {
	for _, p := range k.dev.Config.Protected {
		if p.Path == log {
			return p.Inode
		}
	}
	k.t.Fatalf("%s is not protected", log)
	return 0
}

// waitSealedLog waits until one log's real log equals want.
func (k *kdev) waitSealedLog(log string, want []byte, timeout time.Duration) {
	k.t.Helper()
	testenv.WaitFor(k.t, timeout, log+" to be sealed", func() bool {
		return bytes.Equal(k.realLog(log), want)
	})
}

// tryAppend appends with fsync and reports the host's error, if any.
func tryAppend(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// eventSummary lists the recorded events in one line each, for failure
// messages.
func (k *kdev) eventSummary() string {
	var b strings.Builder
	for _, e := range k.events() {
		fmt.Fprintf(&b, "\n\t%s %s [%d,+%d) %s: %s", e.Kind, e.Op, e.Off, e.Len, e.File, e.Detail)
	}
	return b.String()
}

// imageFile reads a protected file out of the device's image by inode, as
// the kernel would see it after mounting (journal replayed), with our own
// parsers; notes say what the reader had to do.
func (k *kdev) imageFile(ino uint64) ([]byte, []string, error) {
	img, err := os.Open(filepath.Join(k.dir, k.dev.Config.Image))
	if err != nil {
		return nil, nil, err
	}
	defer img.Close()
	fi, err := img.Stat()
	if err != nil {
		return nil, nil, err
	}
	im, err := audit.OpenImage(img, fi.Size())
	if err != nil {
		return nil, nil, err
	}
	f, err := im.OpenFile(ino)
	if err != nil {
		return nil, im.Notes, err
	}
	data, err := f.ReadAll()
	return data, im.Notes, err
}

// appendReplayed appends data to log with fsync, then checks that the image,
// its journal replayed as the kernel would after a crash, shows the log with
// the append: the journal is still one valid log. have is the log's content
// before; the content after is returned.
func (k *kdev) appendReplayed(log string, have, data []byte) []byte {
	k.t.Helper()
	if err := tryAppend(k.path(log), data); err != nil {
		k.t.Fatalf("append to %s: %v", log, err)
	}
	want := append(append([]byte(nil), have...), data...)
	got, notes, err := k.imageFile(k.inode(log))
	if err != nil || !bytes.HasPrefix(got, want) {
		k.t.Fatalf("the image, journal replayed, shows %d bytes of %s (%v, %q), want the %d fsynced; events:%s",
			len(got), log, err, notes, len(want), k.eventSummary())
	}
	return want
}
