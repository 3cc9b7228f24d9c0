// Package layout mirrors the on-disk structures of ext4 that the WORM engine
// reads: the superblock, group descriptors, inodes, extent tree nodes and
// directory blocks (linear and htree), with their crc32c checksums.
//
// The structs follow the kernel's C structs (fs/ext4/ext4.h,
// fs/ext4/ext4_extents.h) field by field and are decoded with
// encoding/binary in little-endian order. Everything decoded here comes from
// a host that may be hostile: every parser bounds its counts and lengths and
// returns a *FormatError instead of panicking. The package does no I/O of its
// own; Inspect and LookupPath take an io.ReaderAt supplied by the caller.
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// le is the byte order of every ext4 structure.
var le = binary.LittleEndian

// Sentinel errors, wrapped by *FormatError and by the feature checks.
var (
	ErrBadMagic    = errors.New("layout: bad magic")
	ErrShort       = errors.New("layout: structure truncated")
	ErrUnsupported = errors.New("layout: unsupported ext4 feature")
	ErrNotFound    = errors.New("layout: no such file or directory")
	ErrCorrupt     = errors.New("layout: corrupt structure")
	// ErrOverlap (an ErrCorrupt) is ParseExtentNode's error for leaf
	// extents out of order or overlapping.
	ErrOverlap = fmt.Errorf("%w: extents overlap", ErrCorrupt)
)

// FormatError reports a malformed structure at a byte offset (relative to
// the buffer that was parsed, or to the image for Inspect and LookupPath).
type FormatError struct {
	Off    int64
	Struct string // "superblock", "extent header", "dirent", ...
	Msg    string
	Err    error // sentinel (ErrBadMagic, ErrShort, ErrCorrupt), may be nil
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("layout: %s at byte %d: %s", e.Struct, e.Off, e.Msg)
}

func (e *FormatError) Unwrap() error { return e.Err }

func formatErr(off int64, st string, sentinel error, format string, args ...any) *FormatError {
	return &FormatError{Off: off, Struct: st, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

// decode fills v (a pointer to a fixed-size struct) from the start of b.
func decode(b []byte, v any, off int64, st string) error {
	n := binary.Size(v)
	if len(b) < n {
		return formatErr(off, st, ErrShort, "need %d bytes, have %d", n, len(b))
	}
	if _, err := binary.Decode(b[:n], le, v); err != nil {
		return formatErr(off, st, ErrCorrupt, "%v", err)
	}
	return nil
}
