package nbd

import (
	"errors"

	"github.com/indelible-worm/indelible/blockdev"
)

// errnoFor maps a device error to the protocol's error value. Writes outside
// the device are ENOSPC (the spec's answer for writes past the end); reads,
// trims and caches outside it are EINVAL.
func errnoFor(err error, write bool) Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, blockdev.ErrReadOnly), errors.Is(err, blockdev.ErrRefused):
		return EPERM
	case errors.Is(err, blockdev.ErrNoSpace):
		return ENOSPC
	case errors.Is(err, blockdev.ErrOutOfRange):
		if write {
			return ENOSPC
		}
		return EINVAL
	default:
		return EIO
	}
}
