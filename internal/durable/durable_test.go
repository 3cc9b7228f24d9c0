package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDatasync(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("sealed")); err != nil {
		t.Fatal(err)
	}
	if err := Datasync(f); err != nil {
		t.Fatalf("Datasync of an open file: %v", err)
	}
	f.Close()
	if err := Datasync(f); err == nil {
		t.Fatal("Datasync of a closed file succeeded")
	}
}

func TestStartWriteback(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if err := StartWriteback(f, 0, 64<<10); err != nil {
		t.Fatalf("StartWriteback of an open file: %v", err)
	}
	f.Close()
	if err := StartWriteback(f, 0, 0); err == nil {
		t.Fatal("StartWriteback of a closed file succeeded")
	}
}
