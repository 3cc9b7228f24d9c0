//go:build !linux

package seal

import "os"

// mapPopulate is Linux's; elsewhere pages are mapped as they are touched.
const mapPopulate = 0

// startWriteback has no portable equivalent: the commit's fsync does it all.
func startWriteback(f *os.File, off, n int64) {}
