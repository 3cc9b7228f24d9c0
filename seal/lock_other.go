//go:build !unix

package seal

import "os"

// lockStore is a no-op where flock(2) does not exist: nothing then stops
// two processes from opening one store.
func lockStore(*os.File) error { return nil }

// storeInUse cannot tell without flock(2).
func storeInUse(*os.File) bool { return false }
