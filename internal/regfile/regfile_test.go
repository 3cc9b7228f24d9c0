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
