//go:build !linux

package durable

import (
	"errors"
	"os"
)

func datasync(f *os.File) error { return f.Sync() }

func startWriteback(f *os.File, off, n int64) error { return errors.ErrUnsupported }

func drop(f *os.File, off, n int64) error { return nil }
