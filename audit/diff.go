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

import "fmt"

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
	var out []Range
	n := min(len(real), len(image))
	for i := 0; i < n; {
		if real[i] == image[i] {
			i++
			continue
		}
		j := i
		for j < n && real[j] != image[j] {
			j++
		}
		out = append(out, Range{Kind: Altered, Off: int64(i), Len: int64(j - i)})
		i = j
	}
	switch {
	case len(real) > len(image):
		out = append(out, Range{Kind: Missing, Off: int64(n), Len: int64(len(real) - n)})
	case len(image) > len(real):
		out = append(out, Range{Kind: Unsealed, Off: int64(n), Len: int64(len(image) - n)})
	}
	return out
}
