package worm_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/worm"
)

// restoreFixture copies the fuzz fixture (a device whose protected files
// hold sealed bytes) with response r.
func restoreFixture(t *testing.T, r worm.Response) (string, *fuzzBase) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dev")
	b, err := unpackFixture(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := worm.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnViolation = r
	if err := cfg.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir, b
}

func openDev(t *testing.T, dir string, resume bool) *worm.Opened {
	t.Helper()
	dev, err := worm.OpenDir(dir, worm.Options{Resume: resume})
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

func closeDev(t *testing.T, dev *worm.Opened) {
	t.Helper()
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
}

// The readonly response refuses every later write: after a restart too,
// until an operator resumes the device, which the event log records. The
// indicator counts status shows survive restarts.
func TestReadOnlyTripSurvivesRestart(t *testing.T) {
	dir, b := restoreFixture(t, worm.ResponseReadOnly)
	free := make([]byte, 4096) // the image's last block: free, unwatched
	freeAt := b.size - int64(len(free))

	dev := openDev(t, dir, false)
	if _, err := dev.WriteAt(free, freeAt); err != nil {
		t.Fatalf("a write to a free block before any indicator: %v", err)
	}
	if _, err := dev.WriteAt(make([]byte, 1024), 1024); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("zeroes over the superblock: %v, want refused", err)
	}
	closeDev(t, dev)

	dev = openDev(t, dir, false)
	if st := dev.Status(); !st.ReadOnly || st.Indicators != 1 || len(st.Recent) != 1 {
		t.Fatalf("after a restart: read-only %v, %d indicators, %d recent; want true, 1, 1", st.ReadOnly, st.Indicators, len(st.Recent))
	}
	if _, err := dev.WriteAt(free, freeAt); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("a write to a free block after a restart: %v, want refused", err)
	}
	closeDev(t, dev)

	dev = openDev(t, dir, true)
	if st := dev.Status(); st.ReadOnly || st.Indicators != 1 {
		t.Fatalf("resumed: read-only %v, %d indicators; want false, 1", st.ReadOnly, st.Indicators)
	}
	if _, err := dev.WriteAt(free, freeAt); err != nil {
		t.Fatalf("a write to a free block once resumed: %v", err)
	}
	closeDev(t, dev)
	events, err := os.ReadFile(filepath.Join(dir, "store", worm.EventLogPath))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(events, []byte(`"kind":"`+worm.KindResumed+`"`)) {
		t.Fatalf("the resume is not in the sealed event log:\n%s", events)
	}

	// The resume holds across the next restart; the count does not grow.
	dev = openDev(t, dir, false)
	defer closeDev(t, dev)
	if st := dev.Status(); st.ReadOnly || st.Indicators != 1 {
		t.Fatalf("restart after the resume: read-only %v, %d indicators; want false, 1", st.ReadOnly, st.Indicators)
	}
}

// The honeypot response stops a file's real log for good: after a restart
// the file is still frozen, until an operator resumes the device.
func TestHoneypotFreezeSurvivesRestart(t *testing.T) {
	dir, b := restoreFixture(t, worm.ResponseHoneypot)
	var data span
	for _, s := range b.spots {
		if strings.HasPrefix(s.what, fuzzLogs[0]) && strings.HasSuffix(s.what, "data") {
			data = s
			break
		}
	}
	if data.len == 0 {
		t.Fatalf("no data span for %s in %v", fuzzLogs[0], b.spots)
	}
	frozen := func(dev *worm.Opened) bool {
		for _, f := range dev.Status().Files {
			if f.Path == fuzzLogs[0] {
				return f.Frozen
			}
		}
		t.Fatalf("%s not in status", fuzzLogs[0])
		return false
	}

	dev := openDev(t, dir, false)
	if _, err := dev.WriteAt(bytes.Repeat([]byte("forged\n"), 147)[:1024], data.off); err != nil {
		t.Fatalf("honeypot: the write lands: %v", err)
	}
	if !frozen(dev) {
		t.Fatal("the rewritten file is not frozen")
	}
	closeDev(t, dev)

	dev = openDev(t, dir, false)
	if !frozen(dev) || dev.Status().Indicators == 0 {
		t.Fatalf("after a restart: frozen %v, %d indicators", frozen(dev), dev.Status().Indicators)
	}
	closeDev(t, dev)

	dev = openDev(t, dir, true)
	defer closeDev(t, dev)
	if frozen(dev) {
		t.Fatal("still frozen once resumed")
	}
}

// The trip is in the sealed event log when the refusal is answered, so a
// device killed right after it comes back read-only: the scheduler used to
// seal it at its next pass (here, an hour away).
func TestTripSealedBeforeTheRefusal(t *testing.T) {
	dir, _ := restoreFixture(t, worm.ResponseReadOnly)
	dev, err := worm.OpenDir(dir, worm.Options{Tick: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer closeDev(t, dev)
	if _, err := dev.WriteAt(make([]byte, 1024), 1024); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("zeroes over the superblock: %v, want refused", err)
	}
	events, err := os.ReadFile(filepath.Join(dir, "store", worm.EventLogPath))
	if err != nil || !bytes.Contains(events, []byte(`"response":"readonly"`)) {
		t.Fatalf("the event log when the refusal is answered: %q, %v; want the trip", events, err)
	}
}

// A restart reads the event log from the restore point Close left: lines
// before it are not read again (here one is garbled after the point was
// written, and the state it carried survives). Without the point, the
// whole log is replayed.
func TestRestoreStartsFromItsPoint(t *testing.T) {
	dir, _ := restoreFixture(t, worm.ResponseReadOnly)
	dev := openDev(t, dir, false)
	if _, err := dev.WriteAt(make([]byte, 1024), 1024); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("zeroes over the superblock: %v, want refused", err)
	}
	closeDev(t, dev)
	point := filepath.Join(dir, "state", "events.restore")
	if _, err := os.Stat(point); err != nil {
		t.Fatalf("no restore point after Close: %v", err)
	}
	logPath := filepath.Join(dir, "store", worm.EventLogPath)
	events, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	garbled := bytes.Clone(events)
	for i := 0; i < len(garbled) && garbled[i] != '\n'; i++ {
		garbled[i] = 'x'
	}
	if err := os.WriteFile(logPath, garbled, 0o600); err != nil {
		t.Fatal(err)
	}
	dev = openDev(t, dir, false)
	if st := dev.Status(); !st.ReadOnly || st.Indicators != 1 {
		t.Fatalf("from the point: read-only %v, %d indicators; want true, 1", st.ReadOnly, st.Indicators)
	}
	closeDev(t, dev)
	if err := os.Remove(point); err != nil {
		t.Fatal(err)
	}
	dev = openDev(t, dir, false)
	defer closeDev(t, dev)
	if st := dev.Status(); st.ReadOnly || st.Indicators != 0 {
		t.Fatalf("the whole log replayed (its one line garbled): read-only %v, %d indicators; want false, 0", st.ReadOnly, st.Indicators)
	}
}
