// Package audit compares what a device's image shows with what its real logs
// hold, for `indelible diff`: the divergence is what an attacker tried to hide
// or change.
//
// "What the image shows" is read with indelible's own parsers (revfs/ext4/layout
// and revfs/ext4/jbd2), by inode number, as the kernel would show it after
// mounting: the committed transactions of a dirty journal are replayed over
// their home blocks (OpenImage). The image is hostile: every read stays inside
// it, every count is bounded, and bad metadata is an error (ErrCorrupt, or
// ErrGone when the inode no longer holds the file), never a panic.
package audit

import (
	"bytes"
	"fmt"
	"io"
)

// RangeKind says how the image and the real log disagree over a byte range.
type RangeKind string

const (
	// Altered: both hold bytes there, and they differ.
	Altered RangeKind = "altered"
	// Missing: the real log holds bytes the image no longer shows (truncated,
	// deleted or hidden on the host).
	Missing RangeKind = "missing"
	// Unsealed: the image shows bytes past the real log's end: appended but
	// not sealed (still pending, or refused after a honeypot trip).
	Unsealed RangeKind = "unsealed"
)

// Range is one divergent byte range, in file offsets.
type Range struct {
	Kind RangeKind `json:"kind"`
	Off  int64     `json:"off"`
	Len  int64     `json:"len"`
}

func (r Range) String() string {
	return fmt.Sprintf("%s [%d, %d) %d bytes", r.Kind, r.Off, r.Off+r.Len, r.Len)
}

// Compare returns the divergent ranges between a real log and the file's
// content in the image, in offset order. Adjacent differing bytes form one
// range; an empty result means the image shows exactly the real log.
func Compare(real, image []byte) []Range {
	out, _ := CompareReaders(bytes.NewReader(real), int64(len(real)), bytes.NewReader(image), int64(len(image)))
	return out
}

// compareChunk is how much of each side CompareReaders holds at once.
const compareChunk = 1 << 20

// CompareReaders is Compare over the first realLen bytes of real and
// imageLen bytes of image, read a chunk at a time: memory stays the same
// whatever the files' sizes. An error is a read that failed.
func CompareReaders(real io.ReaderAt, realLen int64, image io.ReaderAt, imageLen int64) ([]Range, error) {
	var out []Range
	n := min(realLen, imageLen)
	a := make([]byte, min(n, compareChunk))
	b := make([]byte, len(a))
	open := false // the last range is Altered and may go on in the next chunk
	for pos := int64(0); pos < n; {
		c := min(n-pos, compareChunk)
		if err := readFull(real, a[:c], pos); err != nil {
			return out, fmt.Errorf("audit: real log at %d: %w", pos, err)
		}
		if err := readFull(image, b[:c], pos); err != nil {
			return out, fmt.Errorf("audit: image's file at %d: %w", pos, err)
		}
		if bytes.Equal(a[:c], b[:c]) {
			open = false
			pos += c
			continue
		}
		for i := int64(0); i < c; {
			if a[i] == b[i] {
				open = false
				i++
				continue
			}
			j := i
			for j < c && a[j] != b[j] {
				j++
			}
			if open && i == 0 {
				out[len(out)-1].Len += j
			} else {
				out = append(out, Range{Kind: Altered, Off: pos + i, Len: j - i})
			}
			open = j == c
			i = j
		}
		pos += c
	}
	switch {
	case realLen > imageLen:
		out = append(out, Range{Kind: Missing, Off: n, Len: realLen - n})
	case imageLen > realLen:
		out = append(out, Range{Kind: Unsealed, Off: n, Len: imageLen - n})
	}
	return out, nil
}

// readFull fills p from r at off.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	_, err := io.ReadFull(io.NewSectionReader(r, off, int64(len(p))), p)
	return err
}
