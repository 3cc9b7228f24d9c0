//go:build unix

package regfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A FIFO is refused at once (no writer is waited for); a regular file
// opens; a file over ReadSmall's limit is refused, one at it is read.
func TestOpenAndReadSmall(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := Open(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		if f != nil {
			f.Close()
		}
		t.Fatalf("FIFO: %v", err)
	}
	if _, err := Open(dir); err == nil {
		t.Fatal("a directory opened")
	}
	p := filepath.Join(dir, "small")
	if err := os.WriteFile(p, []byte("12\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadSmall(p, 3); err != nil || string(b) != "12\n" {
		t.Fatalf("ReadSmall at its limit: %q, %v", b, err)
	}
	if _, err := ReadSmall(p, 2); err == nil {
		t.Fatal("ReadSmall read a file over its limit")
	}
}

// OpenBeneath opens a regular file below root, through a root that is
// itself a link, and refuses a link as the file or as a directory on the
// way, and a path that leaves root.
func TestOpenBeneath(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "store")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "sub"), outside} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(root, "sub", "a.log"), filepath.Join(outside, "a.log")} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(outside, "a.log"), filepath.Join(root, "b.log")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "linked")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(root, filepath.Join(base, "root-link")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		root, rel string
		ok        bool
	}{
		{root, "sub/a.log", true},
		{filepath.Join(base, "root-link"), "sub/a.log", true},
		{root, "b.log", false},        // the file is a link
		{root, "linked/a.log", false}, // a directory on the way is a link
		{root, "../outside/a.log", false},
		{root, "sub/../../outside/a.log", false},
		{root, filepath.Join(outside, "a.log"), false},
	} {
		f, err := OpenBeneath(c.root, filepath.FromSlash(c.rel))
		if f != nil {
			f.Close()
		}
		if (err == nil) != c.ok {
			t.Errorf("OpenBeneath(%s, %s): %v, want ok=%v", c.root, c.rel, err, c.ok)
		}
	}
}
