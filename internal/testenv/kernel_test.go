package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestMountNBDWithNbdkit checks the kernel path itself against the anchor
// server, so a failure in our server's tests is not confused with a broken
// nbdfuse/loop setup.
func TestMountNBDWithNbdkit(t *testing.T) {
	RequireRoot(t)
	nbdkit := RequireCommand(t, "nbdkit")
	mkfs := RequireCommand(t, "mkfs.ext4")
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	Run(t, "truncate", "-s", "64M", img)
	Run(t, mkfs, "-q", "-F", "-b", "4096", img)
	sock := filepath.Join(dir, "sock")
	StartProcess(t, exec.Command(nbdkit, "-f", "--unix", sock, "file", img))
	WaitFor(t, 10*time.Second, "nbdkit socket", func() bool { _, err := os.Stat(sock); return err == nil })
	m := MountNBD(t, "nbd+unix:///?socket="+sock, "ext4", "")
	if err := os.WriteFile(filepath.Join(m.Dir, "hello"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Sync()
	m.Unmount()
	m.Mount("ext4", "ro")
	b, err := os.ReadFile(filepath.Join(m.Dir, "hello"))
	if err != nil || string(b) != "hi\n" {
		t.Fatalf("read back %q, %v", b, err)
	}
}
