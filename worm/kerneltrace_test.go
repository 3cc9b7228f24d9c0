package worm_test

import (
	"bytes"
	"compress/gzip"
	"errors"
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
	"github.com/indelible-worm/indelible/seal"
	"github.com/indelible-worm/indelible/worm"
)

// Kernel traces are fixtures too: testdata/traces/MODE holds a device
// directory as `indelible init` left it (image.ext4.gz), the requests the
// kernel's ext4 driver sent it through nbdfuse → loop while a host appended
// to its protected files and churned an unprotected one (requests.trace.gz,
// a blockdev trace), and what the host's files held at the end (want/).
// Replaying them needs neither root nor the kernel, so the engine and the
// device core meet the kernel's real request streams in every test run,
// in all four journal modes. They are rebuilt, as root, by
//
//	WORM_TRACE_FIXTURE=1 go test -run TestMakeTraceFixtures ./worm/
const traceFixtures = "testdata/traces"

var traceModes = []string{"none", "ordered", "writeback", "journal"}

func TestMakeTraceFixtures(t *testing.T) {
	if os.Getenv("WORM_TRACE_FIXTURE") == "" {
		t.Skip("set WORM_TRACE_FIXTURE=1 to rebuild " + traceFixtures)
	}
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mkfs.ext4")
	for _, mode := range traceModes {
		t.Run(mode, func(t *testing.T) { makeTraceFixture(t, mode) })
	}
}

func makeTraceFixture(t *testing.T, mode string) {
	dir := provisionFixture(t, provision.Options{Size: 16 << 20, BlockSize: 4096, Journal: mode, KeyBytes: 16 << 10})
	out := filepath.Join(t.TempDir(), mode)
	if err := copyTree(dir, out); err != nil {
		t.Fatal(err)
	}
	var trace bytes.Buffer
	want := map[string][]byte{}
	func() {
		dev, err := worm.OpenDir(dir, worm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		rec, err := blockdev.NewRecorder(dev.Device, &trace)
		if err != nil {
			t.Fatal(err)
		}
		t.Run("host", func(t *testing.T) {
			m := testenv.MountNBD(t, nbdtest.StartDevice(t, rec), "ext4", "")
			for i := 0; i < 60; i++ {
				p := filepath.Join(m.Dir, fuzzLogs[i%2])
				fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(fh, "%06d %s\n", i, bytes.Repeat([]byte("appended by the kernel "), 1+i%40))
				if i%5 == 4 {
					fh.Sync()
				}
				fh.Close()
				if i%20 == 10 { // an unprotected file comes and goes
					junk := filepath.Join(m.Dir, "scratch.bin")
					os.WriteFile(junk, bytes.Repeat([]byte{byte(i)}, 40000), 0o644)
					m.Sync()
					os.Remove(junk)
				}
			}
			waitHostSealed(t, m, dir, want)
			m.Unmount()
		})
		if err := rec.Close(); err != nil { // closes the device too: the trace is complete
			t.Fatal(err)
		}
	}()
	if t.Failed() {
		return
	}
	if err := writeGzip(filepath.Join(out, "requests.trace.gz"), trace.Bytes()); err != nil {
		t.Fatal(err)
	}
	for l, b := range want {
		p := filepath.Join(out, "want", l)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	final := filepath.Join(traceFixtures, mode)
	storeFixture(t, out, final)
	t.Logf("wrote %s: %d trace bytes, files of %d and %d bytes", final, trace.Len(), len(want[fuzzLogs[0]]), len(want[fuzzLogs[1]]))
}

// provisionFixture makes a device directory for a fixture: protected files
// fuzzLogs, a short quiescence window, the auditor key thrown away. o gives
// size, block size, journal mode and keystream size.
func provisionFixture(t *testing.T, o provision.Options) string {
	t.Helper()
	cfg := worm.DefaultConfig()
	cfg.Commit.Quiescence.Duration = 200 * time.Millisecond
	o.Dir, o.Logs, o.Config = filepath.Join(t.TempDir(), "dev"), fuzzLogs, cfg
	o.AuditorKey = filepath.Join(t.TempDir(), "auditor.key")
	o.CreateStore = func(store, devKey, audKey string, kb int64) error {
		return seal.Create(store, devKey, audKey, kb, seal.CreateOptions{})
	}
	if _, err := provision.Create(o); err != nil {
		t.Fatal(err)
	}
	return o.Dir
}

// waitHostSealed syncs the host's mount, records what its protected files
// hold in want, and waits until the device at dir has sealed exactly that.
func waitHostSealed(t *testing.T, m *testenv.KernelMount, dir string, want map[string][]byte) {
	t.Helper()
	m.Sync()
	for _, l := range fuzzLogs {
		want[l], _ = os.ReadFile(filepath.Join(m.Dir, l))
	}
	testenv.WaitFor(t, 30*time.Second, "the appends to be sealed", func() bool {
		for _, l := range fuzzLogs {
			got, _ := os.ReadFile(filepath.Join(dir, "store", l))
			if !bytes.Equal(got, want[l]) {
				return false
			}
		}
		return true
	})
}

// storeFixture compresses dir's image and replaces the fixture at to with dir.
func storeFixture(t *testing.T, dir, to string) {
	t.Helper()
	img, err := os.ReadFile(filepath.Join(dir, "image.ext4"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeGzip(filepath.Join(dir, "image.ext4.gz"), img); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "image.ext4"))
	if err := os.RemoveAll(to); err != nil {
		t.Fatal(err)
	}
	if err := copyTree(dir, to); err != nil {
		t.Fatal(err)
	}
}

// unpackImage decompresses a fixture copy's image.ext4.gz in place.
func unpackImage(dir string) ([]byte, error) {
	img, err := readGzip(filepath.Join(dir, "image.ext4.gz"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "image.ext4"), img, 0o600); err != nil {
		return nil, err
	}
	return img, os.Remove(filepath.Join(dir, "image.ext4.gz"))
}

func writeGzip(path string, b []byte) error {
	var zb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zb, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return os.WriteFile(path, zb.Bytes(), 0o644)
}

func readGzip(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// Replaying what the kernel sent, request by request, the device accepts
// every write the kernel had accepted, raises no indicator, and seals
// exactly what the host's files held.
func TestKernelTraces(t *testing.T) {
	for _, mode := range traceModes {
		t.Run(mode, func(t *testing.T) {
			src := filepath.Join(traceFixtures, mode)
			dir := filepath.Join(t.TempDir(), "dev")
			if err := copyTree(src, dir); err != nil {
				t.Fatal(err)
			}
			// init leaves state/ empty, and git keeps no empty directory.
			if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
				t.Fatal(err)
			}
			if _, err := unpackImage(dir); err != nil {
				t.Fatal(err)
			}
			trace, err := readGzip(filepath.Join(dir, "requests.trace.gz"))
			if err != nil {
				t.Fatal(err)
			}
			dev, err := worm.OpenDir(dir, worm.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			n := 0
			err = blockdev.ReadTrace(bytes.NewReader(trace), func(op blockdev.TraceOp) error {
				n++
				if err := op.Apply(dev.Device); (err != nil) != op.Failed {
					return fmt.Errorf("request %d (%c at %d, %d bytes): %v, the kernel's run: failed=%v", n, op.Op, op.Off, op.Len, err, op.Failed)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n < 20 {
				t.Fatalf("only %d requests in the trace", n)
			}
			for _, l := range fuzzLogs {
				want, err := os.ReadFile(filepath.Join(dir, "want", l))
				if err != nil || len(want) == 0 {
					t.Fatalf("%s: no expected content in the fixture (%v)", l, err)
				}
				testenv.WaitFor(t, 10*time.Second, l+" to be sealed", func() bool {
					got, _ := os.ReadFile(filepath.Join(dir, "store", l))
					return bytes.Equal(got, want)
				})
			}
			if st := dev.Device.Status(); st.Indicators != 0 || st.ReadOnly {
				t.Fatalf("indicators %d, read-only %v: %+v", st.Indicators, st.ReadOnly, st.Recent)
			}
			if err := dev.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				t.Fatal(err)
			}
		})
	}
}
