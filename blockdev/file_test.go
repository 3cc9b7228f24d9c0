package blockdev

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func newFile(t testing.TB, size int64) *File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestFileRoundTrip(t *testing.T) {
	d := newFile(t, 1<<20)
	if d.Size() != 1<<20 {
		t.Fatalf("size %d", d.Size())
	}
	want := bytes.Repeat([]byte("indelible"), 1000)
	if _, err := d.WriteAt(want, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteFUA(d, want[:10], 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestFileZeroesAndTrim(t *testing.T) {
	for _, punch := range []bool{false, true} {
		d := newFile(t, 1<<20)
		ones := bytes.Repeat([]byte{0xff}, 64<<10)
		if _, err := d.WriteAt(ones, 0); err != nil {
			t.Fatal(err)
		}
		if err := d.WriteZeroes(4096, 8192, punch); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 64<<10)
		d.ReadAt(got, 0)
		for i, b := range got {
			want := byte(0xff)
			if i >= 4096 && i < 4096+8192 {
				want = 0
			}
			if b != want {
				t.Fatalf("punch=%v: byte %d = %#x, want %#x", punch, i, b, want)
			}
		}
		if err := d.Trim(0, 4096); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFileBounds(t *testing.T) {
	d := newFile(t, 8192)
	if _, err := d.WriteAt(make([]byte, 10), 8190); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("write past end: %v", err)
	}
	if _, err := d.ReadAt(make([]byte, 10), -1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("read at -1: %v", err)
	}
	if err := d.Trim(8000, 500); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("trim past end: %v", err)
	}
}

func TestFileReadOnly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ro")
	os.WriteFile(p, make([]byte, 4096), 0o600)
	d, err := OpenFile(p, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write on read-only: %v", err)
	}
}

func TestFaultyInjects(t *testing.T) {
	d := &Faulty{Device: newFile(t, 8192), TornWrites: true}
	d.Fail = func(op Op, off, length int64) error {
		if op == OpWrite && off == 0 {
			return ErrInjected
		}
		return nil
	}
	if _, err := d.WriteAt([]byte{1, 2, 3, 4}, 0); !errors.Is(err, ErrInjected) {
		t.Fatalf("want injected fault, got %v", err)
	}
	got := make([]byte, 4)
	d.ReadAt(got, 0)
	if !bytes.Equal(got, []byte{1, 2, 0, 0}) {
		t.Fatalf("torn write left %v", got)
	}
	if d.Count(OpWrite) != 1 || d.Count(OpRead) != 1 {
		t.Fatalf("counts: write %d read %d", d.Count(OpWrite), d.Count(OpRead))
	}
}
