package blockdev

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

var errUnsupported = errors.New("blockdev: operation not supported by the backing file")

func punchHole(f *os.File, off, length int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return errUnsupported
	}
	return err
}

func zeroRange(f *os.File, off, length int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return errUnsupported
	}
	return err
}

// probePunch reports whether the filesystem behind the regular file f
// punches holes: it punches one block at the file's end, where there is no
// data to lose. Block device nodes answer false (no harmless probe there).
func probePunch(f *os.File, size int64) bool {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	return punchHole(f, size, 4096) == nil
}

// deviceSize is the file size, or for a block device node its BLKGETSIZE64.
func deviceSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return fi.Size(), nil
	}
	var size uint64
	if err := ioctlGetSize(f, &size); err != nil {
		return 0, err
	}
	return int64(size), nil
}

func ioctlGetSize(f *os.File, size *uint64) error {
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKGETSIZE64)
	*size = uint64(n)
	return err
}
