//go:build !unix

package seal

import "os"

func openNoBlock(path string) (*os.File, error) { return os.Open(path) }
