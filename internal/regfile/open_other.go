//go:build !unix

package regfile

import "os"

func openNoBlock(path string) (*os.File, error) { return os.Open(path) }
