//go:build unix

package seal

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// lockStore takes an exclusive advisory lock on f (the store's .SEALFS.LOG)
// for as long as the store is open: two processes appending to one store
// would each seal with the same keys. It fails with ErrInUse when another
// open file description holds it.
func lockStore(f *os.File) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return ErrInUse
	}
	return err
}

// storeInUse reports whether a process has the store open for sealing
// (holds lockStore's lock on f, a .SEALFS.LOG opened for reading).
func storeInUse(f *os.File) bool {
	err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
	}
	return errors.Is(err, unix.EWOULDBLOCK)
}
