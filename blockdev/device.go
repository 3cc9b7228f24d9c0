// Package blockdev defines the Device interface that the NBD server exports and
// the WORM core implements, a file-backed Device, and a fault-injecting wrapper
// for tests.
package blockdev

import (
	"errors"
	"io"
)

// Device is a fixed-size random-access block device.
//
// Offsets and lengths are in bytes; callers (the NBD server) have already
// checked them against Size. Implementations must be safe for concurrent use:
// the NBD server issues requests from many goroutines at once.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Size is the device size in bytes; it does not change while serving.
	Size() int64
	// Flush makes every completed write durable.
	Flush() error
	// Trim tells the device that the range is no longer needed. Reads of a
	// trimmed range may return zeroes or the old contents.
	Trim(off, length int64) error
	// WriteZeroes makes the range read as zeroes. When mayPunch is true the
	// device may deallocate the range (NBD: no NO_HOLE flag).
	WriteZeroes(off, length int64, mayPunch bool) error
	Close() error
}

// FUAWriter is implemented by devices that can make a single write durable
// more cheaply than WriteAt followed by Flush (NBD's FUA flag).
type FUAWriter interface {
	WriteAtFUA(p []byte, off int64) (int, error)
}

// Sentinel errors a Device may return; the NBD server maps them to protocol
// errors (EPERM, ENOSPC, EINVAL, EIO).
var (
	ErrReadOnly   = errors.New("blockdev: device is read-only")
	ErrOutOfRange = errors.New("blockdev: range outside the device")
	ErrNoSpace    = errors.New("blockdev: no space left on the backing store")
	// ErrRefused means the write would change protected data and the device
	// refused it (WORM policy); NBD reports it as EPERM.
	ErrRefused = errors.New("blockdev: write refused by WORM policy")
)

// WriteFUA writes p at off and makes it durable, using the device's FUAWriter
// when it has one.
func WriteFUA(d Device, p []byte, off int64) (int, error) {
	if f, ok := d.(FUAWriter); ok {
		return f.WriteAtFUA(p, off)
	}
	n, err := d.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	return n, d.Flush()
}
