//go:build unix

package cli

import (
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A command that does not watch Env.Context ends on SIGINT, as Ctrl-C
// expects; before, every command caught the signal and only serve and
// lock acted on it, so a verify of a large store could not be stopped.
func TestInterruptEndsCommand(t *testing.T) {
	bin, err := exec.LookPath("indelible") // the test binary, as TestMain installs it
	if err != nil {
		t.Skip("no indelible in PATH:", err)
	}
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	if out, err := exec.Command(bin, "keys", store, "--device-key", filepath.Join(dir, "d.key"), "--auditor-key", filepath.Join(dir, "a.key"), "--size", "64K").CombinedOutput(); err != nil {
		t.Fatalf("keys: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "seal-append", store, "--device-key", filepath.Join(dir, "d.key"), "--id", "5", "--path", "x.log")
	in, err := cmd.StdinPipe() // kept open: the command waits for more lines
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	in.Write([]byte("a line\n"))
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("seal-append exited 0 after SIGINT")
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("seal-append still running 10 s after SIGINT")
	}
}
