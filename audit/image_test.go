package audit

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// loadImage decompresses testdata/NAME.img.gz.
func loadImage(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".img.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDirtyJournalReplayed: images the kernel left with a dirty journal (see
// testdata/make.sh). The home inode says the log is empty; the committed
// transactions say otherwise, and the reader must show what the kernel would
// show after recovery.
func TestDirtyJournalReplayed(t *testing.T) {
	for _, name := range []string{"ordered-dirty", "journal-dirty"} {
		t.Run(name, func(t *testing.T) {
			img := loadImage(t, name)
			want, err := os.ReadFile(filepath.Join("testdata", name+".want"))
			if err != nil {
				t.Fatal(err)
			}
			r := bytes.NewReader(img)
			// Without the journal the file is empty: the replay is what
			// makes the difference.
			home, err := layout.OpenImage(r)
			if err != nil {
				t.Fatal(err)
			}
			ino, err := home.Lookup("var/log/app.log")
			if err != nil {
				t.Fatal(err)
			}
			hin, _, err := home.ReadInode(ino)
			if err != nil {
				t.Fatal(err)
			}
			if hin.Size() != 0 {
				t.Fatalf("fixture: the home inode already has size %d; rebuild with make.sh", hin.Size())
			}
			im, err := OpenImage(r, int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			if im.Replayed == 0 {
				t.Fatalf("no journal block replayed; notes: %q", im.Notes)
			}
			data, err := readFile(im, ino)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, want) {
				t.Fatalf("replayed content: %d bytes, want %d; first difference at %d", len(data), len(want), firstDiff(data, want))
			}
			got, err := ReadImageFile(r, int64(len(img)), ino)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("ReadImageFile: %d bytes, %v", len(got), err)
			}
			t.Logf("%s: %d blocks replayed; %q", name, im.Replayed, im.Notes)

			// With needs_recovery cleared the kernel wipes the journal at
			// mount instead of replaying it: the home blocks are what the
			// host sees, and the reader must show those.
			img = bytes.Clone(img)
			sbRaw := img[layout.SuperBlockOffset : layout.SuperBlockOffset+layout.SuperBlockSize]
			incompat := binary.LittleEndian.Uint32(sbRaw[0x60:])
			if incompat&uint32(layout.IncompatRecover) == 0 {
				t.Fatalf("fixture: needs_recovery is not set (incompat %#x)", incompat)
			}
			binary.LittleEndian.PutUint32(sbRaw[0x60:], incompat&^uint32(layout.IncompatRecover))
			binary.LittleEndian.PutUint32(sbRaw[0x3FC:], layout.SuperBlockChecksum(sbRaw))
			im, err = OpenImage(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			if data, err := readFile(im, ino); err != nil || len(data) != 0 || im.Replayed != 0 {
				t.Fatalf("needs_recovery clear: %d bytes shown, %d blocks replayed, %v; want the empty home file", len(data), im.Replayed, err)
			}
			if !strings.Contains(strings.Join(im.Notes, "\n"), "needs_recovery") {
				t.Errorf("needs_recovery clear: notes %q do not say the journal is discarded", im.Notes)
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// mkImage builds a small ext4 image holding var/log/app.log (content) and
// var/log/other.log with mkfs.ext4 -d, and returns its path and the inode of
// app.log.
func mkImage(t *testing.T, content []byte) (string, uint64) {
	t.Helper()
	testenv.RequireCommand(t, "mkfs.ext4")
	testenv.RequireCommand(t, "debugfs")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "var/log"), 0o755)
	os.WriteFile(filepath.Join(root, "var/log/app.log"), content, 0o644)
	os.WriteFile(filepath.Join(root, "var/log/other.log"), []byte("another file\n"), 0o644)
	img := filepath.Join(dir, "img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "1024", "-d", root, img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(img)
	home, err := layout.OpenImage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	ino, err := home.Lookup("var/log/app.log")
	if err != nil {
		t.Fatal(err)
	}
	return img, ino
}

func debugfs(t *testing.T, img, req string) {
	t.Helper()
	cmd := exec.Command("debugfs", "-w", "-f", "-", img)
	cmd.Stdin = strings.NewReader(req + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "Usage") || strings.Contains(string(out), "not found") {
		t.Fatalf("debugfs %q: %v\n%s", req, err, out)
	}
}

// TestReadFileByInode: the reader follows the inode, not the path, and
// says why when the inode no longer holds the file.
func TestReadFileByInode(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef\n"), 1000) // 17000 bytes, several extents' worth of 1 KiB blocks
	cases := []struct {
		name    string
		attack  func(t *testing.T, img string, ino uint64)
		want    []byte
		wantErr error
		errText string
	}{
		{"intact", func(*testing.T, string, uint64) {}, content, nil, ""},
		{"renamed", func(t *testing.T, img string, ino uint64) {
			debugfs(t, img, "ln var/log/app.log var/app.log.1\nunlink var/log/app.log")
		}, content, nil, ""},
		{"entry removed", func(t *testing.T, img string, ino uint64) {
			debugfs(t, img, "unlink var/log/app.log")
		}, content, nil, ""},
		{"size cut", func(t *testing.T, img string, ino uint64) {
			debugfs(t, img, fmt.Sprintf("sif <%d> size 100", ino))
		}, content[:100], nil, ""},
		{"deleted", func(t *testing.T, img string, ino uint64) {
			debugfs(t, img, "rm var/log/app.log")
		}, nil, ErrGone, "link count 0"},
		{"clri", func(t *testing.T, img string, ino uint64) {
			debugfs(t, img, fmt.Sprintf("clri <%d>", ino))
		}, nil, ErrGone, "free"},
		{"now a directory", func(t *testing.T, img string, ino uint64) {
			debugfs(t, img, fmt.Sprintf("sif <%d> mode 040755", ino))
		}, nil, ErrGone, "no longer a regular file"},
		{"extents flag cleared", func(t *testing.T, img string, ino uint64) {
			debugfs(t, img, fmt.Sprintf("sif <%d> flags 0", ino))
		}, nil, ErrGone, "no longer uses extents"},
		{"huge size", func(t *testing.T, img string, ino uint64) {
			debugfs(t, img, fmt.Sprintf("sif <%d> size 0x7fffffffffff", ino))
		}, nil, ErrCorrupt, "more than the"},
		{"checksum broken", func(t *testing.T, img string, ino uint64) {
			debugfs(t, img, fmt.Sprintf("sif <%d> checksum 0x1234", ino))
		}, nil, ErrGone, "fails its checksum"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, ino := mkImage(t, content)
			c.attack(t, img, ino)
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			im, err := OpenImage(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			data, err := readFile(im, ino)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.errText) {
					t.Fatalf("err = %v, want %v containing %q", err, c.wantErr, c.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, c.want) {
				t.Fatalf("read %d bytes, want %d; first difference at %d", len(data), len(c.want), firstDiff(data, c.want))
			}
		})
	}
}

// TestImageBounds: images whose metadata lies about their size are
// refused, not read past their end.
func TestImageBounds(t *testing.T) {
	img, ino := mkImage(t, []byte("hello\n"))
	b, _ := os.ReadFile(img)
	// The image cut in half: the superblock claims blocks it lacks.
	if _, err := OpenImage(bytes.NewReader(b), int64(len(b)/2)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("half image: %v, want ErrCorrupt", err)
	}
	if _, err := ReadImageFile(bytes.NewReader(make([]byte, 1<<20)), 1<<20, ino); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("zeros: %v, want ErrCorrupt", err)
	}
	if _, err := ReadImageFile(bytes.NewReader(b), int64(len(b)), 1<<40); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("inode out of range: %v, want ErrCorrupt", err)
	}
}

// readFile opens inode ino in im and reads it whole: through ReadAll when
// the file claims more than the image holds (which ReadAll refuses; the
// kernel would show the rest as zeros, and readAllOf would go on reading
// them), else through readAllOf.
func readFile(im *Image, ino uint64) ([]byte, error) {
	f, err := im.OpenFile(ino)
	if err != nil {
		return nil, err
	}
	if f.Size > im.size {
		return f.ReadAll()
	}
	return readAllOf(f)
}

// readAllOf reads f whole through its ReadAt, in odd-sized pieces so that
// reads start and end inside blocks and extents.
func readAllOf(f *File) ([]byte, error) {
	var out []byte
	buf := make([]byte, 3001)
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}
