package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// SampleLen is how many bytes of each side a Divergence quotes.
const SampleLen = 64

// Divergence is one divergent range with a sample of both sides, so a
// report shows what was changed or hidden, not only where.
type Divergence struct {
	Range
	Real  string `json:"real,omitempty"`  // Go-quoted sample of the real log's bytes there
	Image string `json:"image,omitempty"` // Go-quoted sample of the image's bytes there
}

// FileReport is the comparison of one protected file.
type FileReport struct {
	Path     string `json:"path"`
	Inode    uint64 `json:"inode"`
	RealLen  int64  `json:"real_len"`
	ImageLen int64  `json:"image_len"`
	// Gone says why the image no longer holds the file (inode freed,
	// reused as something else, unreadable metadata); then the whole real
	// log is reported missing.
	Gone string `json:"gone,omitempty"`
	// Entry is what the file's path names in the image now: "" when it
	// still names the protected inode, else what it names instead.
	Entry string `json:"entry,omitempty"`
	// Replaced says that the inode holds another file than at init (its
	// generation changed: the protected file was deleted and a new one
	// given its number); the new file's bytes are still compared.
	Replaced string       `json:"replaced,omitempty"`
	Ranges   []Divergence `json:"ranges"`
}

// Diverges reports whether what the host sees disagrees with the real log:
// the image no longer holds the file (Gone), its path no longer names it
// (Entry: whoever opens the path gets another file or none), its inode
// holds a new file (Replaced), any altered or missing range, and with
// strict also bytes the image shows past the real log (appended but not
// sealed).
func (r *FileReport) Diverges(strict bool) bool {
	if r.Gone != "" || r.Entry != "" || r.Replaced != "" {
		return true
	}
	for _, d := range r.Ranges {
		if d.Kind != Unsealed || strict {
			return true
		}
	}
	return false
}

// Bytes sums the lengths of the ranges of one kind.
func (r *FileReport) Bytes(k RangeKind) int64 {
	var n int64
	for _, d := range r.Ranges {
		if d.Kind == k {
			n += d.Len
		}
	}
	return n
}

// Protected names a protected file as device.toml records it.
type Protected struct {
	Path  string
	Inode uint64
	// Generation is the inode's i_generation at init, nil where it was
	// not recorded: another one means the file was deleted and its inode
	// number given to a new file.
	Generation *uint32
}

// DiffFile compares the protected file p as the image im shows it with its
// real log (realLen bytes of real). The image is read by inode, so a
// rename or a removed directory entry hides no byte, and the path is
// looked up too: a path that names another inode, or none, is reported in
// Entry. An inode that now holds another file (its generation changed) is
// reported in Replaced, and its bytes compared all the same. Both sides
// are read a chunk at a time; an error is a read that failed.
func DiffFile(im *Image, p Protected, real io.ReaderAt, realLen int64) (*FileReport, error) {
	path, ino := p.Path, p.Inode
	rep := &FileReport{Path: path, Inode: ino, RealLen: realLen, Ranges: []Divergence{}}
	var shown io.ReaderAt = bytes.NewReader(nil)
	f, err := im.OpenFile(ino)
	switch {
	case err != nil:
		rep.Gone = err.Error()
	default:
		if p.Generation != nil && f.Generation != *p.Generation {
			rep.Replaced = fmt.Sprintf("inode %d holds another file: generation %d, %d at init (the protected file was deleted and a new one given its inode)",
				ino, f.Generation, *p.Generation)
		}
		shown = f
		rep.ImageLen = f.Size
	}
	if got, err := im.Lookup(path); err != nil {
		rep.Entry = "no directory entry: " + err.Error()
		if errors.Is(err, errNotFound) {
			rep.Entry = "no directory entry (removed or renamed)"
		}
	} else if got != ino {
		rep.Entry = fmt.Sprintf("names inode %d instead", got)
	}
	ranges, err := CompareReaders(real, realLen, shown, rep.ImageLen)
	if errors.Is(err, ErrCorrupt) && rep.Gone == "" {
		// The image's blocks for the file cannot be read (the kernel would
		// fail the read too): the file is as good as gone. A failing read
		// of the real log stays an error.
		rep.Gone = err.Error()
		rep.ImageLen, shown = 0, bytes.NewReader(nil)
		ranges, err = CompareReaders(real, realLen, shown, 0)
	}
	if err != nil {
		return rep, err
	}
	for _, r := range ranges {
		d := Divergence{Range: r}
		if d.Real, err = sample(real, realLen, r); err == nil {
			d.Image, err = sample(shown, rep.ImageLen, r)
		}
		if err != nil {
			return rep, err
		}
		rep.Ranges = append(rep.Ranges, d)
	}
	return rep, nil
}

// sample quotes up to SampleLen bytes of the size bytes of r at the start of
// the range.
func sample(r io.ReaderAt, size int64, rg Range) (string, error) {
	if rg.Off >= size {
		return "", nil
	}
	b := make([]byte, min(rg.Len, SampleLen, size-rg.Off))
	if err := readFull(r, b, rg.Off); err != nil {
		return "", fmt.Errorf("audit: sample at %d: %w", rg.Off, err)
	}
	return strconv.Quote(string(b)), nil
}
