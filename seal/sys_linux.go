package seal

import (
	"os"

	"golang.org/x/sys/unix"
)

// mapPopulate asks mmap to map the whole range at once (see seqReader).
const mapPopulate = unix.MAP_POPULATE

// startWriteback asks the kernel to start writing [off, off+n) of f to
// disk now (n = 0: to the end of the file), without waiting
// (sync_file_range SYNC_FILE_RANGE_WRITE): the disk then works while the
// batch's MACs are computed, and the commit's fdatasync, which is still
// what makes the bytes durable, finds them already on their way. Errors
// are left to that fdatasync.
func startWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
