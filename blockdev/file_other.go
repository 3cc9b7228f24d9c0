//go:build !linux

package blockdev

import (
	"errors"
	"os"
)

var errUnsupported = errors.New("blockdev: operation not supported on this system")

func punchHole(f *os.File, off, length int64) error { return errUnsupported }
func zeroRange(f *os.File, off, length int64) error { return errUnsupported }
func probePunch(f *os.File, size int64) bool        { return false }
func deviceSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
