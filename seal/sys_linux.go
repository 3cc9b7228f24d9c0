package seal

import (
	"os"

	"golang.org/x/sys/unix"
)

// mapPopulate asks mmap to map the whole range at once (see seqReader).
const mapPopulate = unix.MAP_POPULATE

// datasync is fdatasync(2): it skips the journal commit that an
// fsync would need for a timestamp-only change, which is all that an
// overwrite in place (keystream burn, ratchet state) changes. Appended files
// still get their new size committed: fdatasync must flush a size change.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
