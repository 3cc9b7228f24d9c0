package nbd_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/nbd"
	"github.com/indelible-worm/indelible/nbd/nbdtest"
)

// TestKernelExt4 puts the kernel's ext4 driver on top of the server:
// nbdfuse (4 connections by default) → loop device → mkfs.ext4 → mount →
// write files → sync → umount → e2fsck -fn must be clean → remount and
// the files must be intact.
func TestKernelExt4(t *testing.T) {
	testenv.RequireRoot(t)
	mkfs := testenv.RequireCommand(t, "mkfs.ext4")
	e2fsck := testenv.RequireCommand(t, "e2fsck")
	checkGoroutines(t)
	srv := nbdtest.Start(t, nbd.Config{Exports: []nbd.Export{{Device: newFile(t, 128<<20)}}})
	m := testenv.MountNBD(t, srv.URI, "", "")
	testenv.Run(t, mkfs, "-q", "-F", "-b", "4096", m.Loop)
	m.Mount("ext4", "")

	files := map[string][]byte{}
	for i := range 20 {
		b := make([]byte, 1+i*97_000)
		rand.Read(b)
		name := fmt.Sprintf("dir%d/file%d", i%3, i)
		files[name] = b
		p := filepath.Join(m.Dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Appends, as a log would see them, with an fsync after each.
	f, err := os.OpenFile(filepath.Join(m.Dir, "app.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var log []byte
	for i := range 200 {
		line := fmt.Appendf(nil, "line %d of the log\n", i)
		log = append(log, line...)
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.Close()
	files["app.log"] = log
	m.Sync()
	m.Unmount()

	if out, err := exec.Command(e2fsck, "-fn", m.Loop).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn after unmount: %v\n%s", err, out)
	}
	m.Mount("ext4", "ro")
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(m.Dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after remount: %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}
}
