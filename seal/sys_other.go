//go:build !linux

package seal

import "os"

// mapPopulate is Linux's; elsewhere pages are mapped as they are touched.
const mapPopulate = 0

// datasync falls back to fsync where fdatasync is not portable.
func datasync(f *os.File) error { return f.Sync() }
