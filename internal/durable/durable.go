// Package durable holds the one system call the device's own files need
// for durability beyond os.File.Sync.
package durable

import "os"

// Datasync is fdatasync(2) where the system has it, else fsync. It skips
// the journal commit that fsync needs for a timestamp-only change, which
// is all that an overwrite in place changes (the written-block map, the
// keystream burn, the ratchet state); a file that grew still gets its new
// size committed, since fdatasync must flush what reading the data back
// needs.
func Datasync(f *os.File) error { return datasync(f) }
