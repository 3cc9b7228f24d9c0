package jbd2

import (
	"errors"
	"fmt"
)

// Sentinel errors; test for them with errors.Is. Most parse failures come
// wrapped in a *FormatError that says where.
var (
	// ErrBadMagic: the block does not start with JournalMagic, or the
	// superblock has the wrong block type.
	ErrBadMagic = errors.New("jbd2: bad magic number")
	// ErrBadChecksum: a checksum in the block does not match its contents.
	ErrBadChecksum = errors.New("jbd2: checksum mismatch")
	// ErrUnsupported: a valid journal this package deliberately does not handle.
	ErrUnsupported = errors.New("jbd2: unsupported journal")
	// ErrCorrupt: a field is out of its valid range.
	ErrCorrupt = errors.New("jbd2: corrupt journal structure")
	// ErrTooLong: Scan stopped because it reached its maxBlocks budget.
	ErrTooLong = errors.New("jbd2: scan budget exhausted")
)

// FormatError reports a malformed structure: which C struct, the byte offset
// inside the block handed to the parser, and what is wrong. Err is one of
// the sentinels above.
type FormatError struct {
	Off    int64  // byte offset inside the block
	Struct string // C struct name, "journal_superblock_t"
	Msg    string
	Err    error
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("jbd2: %s at byte %d: %s", e.Struct, e.Off, e.Msg)
}

func (e *FormatError) Unwrap() error { return e.Err }

func formatErr(err error, off int, st, format string, args ...any) *FormatError {
	return &FormatError{Off: int64(off), Struct: st, Msg: fmt.Sprintf(format, args...), Err: err}
}
