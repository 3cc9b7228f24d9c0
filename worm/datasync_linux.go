package worm

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync is fdatasync(2). The written-block map is overwritten in place
// at every host FLUSH; fsync would also commit its new modification time,
// a journal commit of the device's own filesystem per FLUSH that the
// host's FLUSH then waits for. fdatasync still commits what reading the
// data back needs (a chunk written into a hole allocates blocks and may
// grow the file).
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = unix.Fdatasync(int(fd)); serr != unix.EINTR {
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
