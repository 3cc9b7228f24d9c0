package hostflags

import "errors"

// ErrUnsupportedFS is wrapped by errors about filesystems that have no
// immutable or append-only flags (tmpfs on older kernels, FAT, exFAT, FUSE,
// procfs, many network filesystems).
var ErrUnsupportedFS = errors.New("filesystem does not support immutable/append-only flags")

// ErrUnsupportedOS is returned by Run on systems with neither Linux inode
// flags nor BSD file flags.
var ErrUnsupportedOS = errors.New("hostflags: immutability flags are not supported on this operating system")
