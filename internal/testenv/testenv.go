// Package testenv holds helpers shared by tests that need real parts of the
// machine: root, external commands (nbdkit, nbdinfo, fio, mkfs), and the
// nbdfuse → losetup → mount path to the kernel's ext4 driver.
//
// Tests that need something missing skip with a clear reason, except under
// CI=true, where every requirement must be met and a missing one fails the test.
package testenv

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// InCI reports whether the suite runs in CI (CI=true), where nothing may skip
// for lack of root or tools.
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips the test with reason, or fails it under CI (CI=true),
// where every requirement must be met.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true but %s; run scripts/test, which installs what tests need", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (or under CI fails) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "test needs root (loop devices, mount, FUSE); run it with sudo")
	}
}

// RequireCommand returns the path of name, skipping (or failing under CI)
// when it is not installed.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, serr := os.Stat(dir + "/" + name); serr == nil {
				return dir + "/" + name
			}
		}
		SkipOrFail(t, name+" is not installed (scripts/install-deps --test installs it)")
	}
	return p
}

// RequireShort skips slow tests under -short.
func RequireLong(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow test skipped with -short")
	}
}

// LogWriter writes what it is given into the test's log, a line at a time
// as it comes (a process's output, a logger's records).
func LogWriter(t testing.TB) io.Writer { return testWriter{t} }

// Logger is an slog logger at level Info writing into the test's log: for
// the devices a test opens.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(LogWriter(t), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// BytesAllocated returns the bytes of heap f allocates (runtime.MemStats
// TotalAlloc before and after, a GC first): the measure of the tests that
// bound what hostile input can make a parser allocate.
func BytesAllocated(f func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	f()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}
