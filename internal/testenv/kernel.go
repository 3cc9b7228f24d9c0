// The helpers below drive Linux tools (losetup, nbdfuse, mount); they build
// everywhere so that test files vet on every platform, and the tests that
// call them skip or fail with the tool missing.

package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Run runs a command and fails the test with its output when it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// StartProcess starts cmd and registers a cleanup that kills it by PID and
// waits for it. Its output goes to the test log.
func StartProcess(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if cmd.Stdout == nil {
		cmd.Stdout = LogWriter(t)
	}
	if cmd.Stderr == nil {
		cmd.Stderr = LogWriter(t)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("process %d (%s) did not exit after kill", cmd.Process.Pid, cmd.Path)
		}
	})
}

// WaitFor polls cond every 20 ms until it is true or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// KernelMount is an ext4 (or other) filesystem mounted through the real
// kernel from an NBD server: nbdfuse exposes the export as a file, losetup
// makes it a block device, mount attaches the kernel's filesystem driver.
type KernelMount struct {
	Dir     string // the mount point
	Loop    string // /dev/loopN
	fuse    string
	file    string // the nbdfuse file behind Loop
	t       testing.TB
	mounted bool
	nbdfuse *exec.Cmd
}

// MountNBD attaches the NBD export at uri (e.g. "nbd+unix:///?socket=/x.sock")
// through nbdfuse and a loop device, and mounts it with the given filesystem
// options (may be empty). Everything is undone at test cleanup, even on failure.
// With fstype "" nothing is mounted (the loop device is ready for mkfs).
func MountNBD(t testing.TB, uri, fstype, opts string) *KernelMount {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "nbdfuse")
	RequireCommand(t, "losetup")
	base := t.TempDir()
	m := &KernelMount{Dir: filepath.Join(base, "mnt"), fuse: filepath.Join(base, "fuse"), t: t}
	os.Mkdir(m.Dir, 0o755)
	os.Mkdir(m.fuse, 0o755)
	cmd := exec.Command("nbdfuse", m.fuse, uri)
	StartProcess(t, cmd)
	m.nbdfuse = cmd
	t.Cleanup(func() {
		// Unmount FUSE before the kill registered above runs (cleanups run LIFO).
		exec.Command("fusermount3", "-u", m.fuse).Run()
		exec.Command("umount", "-l", m.fuse).Run()
	})
	file := filepath.Join(m.fuse, "nbd")
	WaitFor(t, 10*time.Second, "nbdfuse to expose "+file, func() bool {
		fi, err := os.Stat(file)
		return err == nil && fi.Size() > 0
	})
	m.Loop = AttachLoop(t, file, "--direct-io=off")
	m.file = resolvePath(file) // resolved now: after a crash the FUSE mount no longer answers
	if fstype != "" {
		m.Mount(fstype, opts)
	}
	t.Cleanup(func() {
		if m.mounted {
			m.Unmount()
		}
	})
	return m
}

// Mount mounts the loop device on Dir.
func (m *KernelMount) Mount(fstype, opts string) {
	m.t.Helper()
	args := []string{"-t", fstype}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	out, err := exec.Command("mount", append(args, m.Loop, m.Dir)...).CombinedOutput()
	if err != nil {
		dmesg, _ := exec.Command("dmesg").Output()
		lines := strings.Split(strings.TrimSpace(string(dmesg)), "\n")
		m.t.Fatalf("mount %s on %s: %v: %s\nkernel log:\n%s", m.Loop, m.Dir, err, out,
			strings.Join(lines[max(0, len(lines)-8):], "\n"))
	}
	m.mounted = true
}

// Unmount unmounts Dir, retrying briefly while it is busy.
func (m *KernelMount) Unmount() {
	m.t.Helper()
	var out []byte
	var err error
	for i := 0; i < 50; i++ {
		out, err = exec.Command("umount", m.Dir).CombinedOutput()
		if err == nil {
			m.mounted = false
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.t.Errorf("umount %s: %v\n%s", m.Dir, err, out)
}

// Sync flushes the host's dirty data for the mounted filesystem.
func (m *KernelMount) Sync() {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "sync", "-f", m.Dir).CombinedOutput(); err != nil {
		m.t.Fatalf("sync: %v\n%s", err, out)
	}
}

// String describes the mount for test logs.
func (m *KernelMount) String() string { return fmt.Sprintf("%s on %s", m.Loop, m.Dir) }

// ForceDetach tears the stack down after the NBD server died under it: lazy
// unmount, loop detach, nbdfuse killed and its FUSE mount removed. Dirty data
// the host still held is lost, as on a real crash of the device.
func (m *KernelMount) ForceDetach() {
	exec.Command("umount", "-l", m.Dir).Run()
	m.mounted = false
	DetachLoop(m.Loop, m.file)
	if m.nbdfuse != nil && m.nbdfuse.Process != nil {
		m.nbdfuse.Process.Kill()
	}
	exec.Command("fusermount3", "-u", m.fuse).Run()
	exec.Command("umount", "-l", m.fuse).Run()
}

// Crash is the host losing power while the device stays up: its link to
// the device is cut first (nbdfuse killed), so nothing the host still held
// in memory reaches the device, then the stack is torn down as ForceDetach
// does.
func (m *KernelMount) Crash() {
	if m.nbdfuse != nil && m.nbdfuse.Process != nil {
		m.nbdfuse.Process.Kill()
	}
	m.ForceDetach()
}

// AttachLoop attaches file to a free loop device (extra losetup options may
// be given) and returns the device. It is detached at test cleanup, only if
// it is still ours: see DetachLoop.
func AttachLoop(t testing.TB, file string, opts ...string) string {
	t.Helper()
	RequireCommand(t, "losetup")
	file = resolvePath(file)
	loop := strings.TrimSpace(Run(t, "losetup", append(append([]string{"--find", "--show"}, opts...), file)...))
	t.Cleanup(func() { DetachLoop(loop, file) })
	return loop
}

// DetachLoop detaches loop if it is still backed by file. Loop devices are
// shared by every process on the machine, and a number a test released is
// handed to the next process that asks (packages' tests run in parallel):
// detaching by number alone, twice, or after the kernel released it, took
// another test's device away from under its filesystem.
func DetachLoop(loop, file string) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(loop), "loop", "backing_file"))
	if err != nil {
		return // not attached any more
	}
	back := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
	if back != resolvePath(file) {
		return
	}
	exec.Command("losetup", "-d", loop).Run()
}

// resolvePath is file as the kernel names a loop device's backing file:
// absolute, symbolic links resolved (as far as they still resolve).
func resolvePath(file string) string {
	if r, err := filepath.EvalSymlinks(file); err == nil {
		return r
	}
	if abs, err := filepath.Abs(file); err == nil {
		return abs
	}
	return file
}
