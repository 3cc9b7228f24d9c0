// Package durable holds the system calls the device's own files need for
// durability beyond os.File.Sync: fdatasync, and starting writeback early.
package durable

import "os"

// Datasync is fdatasync(2) where the system has it, else fsync. It skips
// the journal commit that fsync needs for a timestamp-only change, which
// is all that an overwrite in place changes (the written-block map, the
// keystream burn, the ratchet state); a file that grew still gets its new
// size committed, since fdatasync must flush what reading the data back
// needs.
func Datasync(f *os.File) error { return datasync(f) }

// StartWriteback asks the kernel to start writing [off, off+n) of f to its
// disk now (n = 0: to the end of the file) without waiting for it
// (sync_file_range SYNC_FILE_RANGE_WRITE): a later Datasync, which is still
// what makes the bytes durable, then finds them on their way. Nothing
// about durability changes. Where the system has no such call it returns
// errors.ErrUnsupported.
func StartWriteback(f *os.File, off, n int64) error { return startWriteback(f, off, n) }

// Drop tells the kernel that [off, off+n) of f will not be read again soon
// (posix_fadvise POSIX_FADV_DONTNEED): the clean cached pages that lie
// wholly inside it (a large folio only when all of it does) are freed at
// once and come back to the next writer, instead of staying cached until
// memory runs short. Called on data already made durable, it changes
// nothing about durability or content. Where the system has no such call
// it does nothing.
func Drop(f *os.File, off, n int64) error { return drop(f, off, n) }
