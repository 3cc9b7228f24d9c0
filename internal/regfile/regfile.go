// Package regfile opens files that must be regular files, for readers of
// directories someone else may have filled: a store under verification, a
// device directory under audit, a configuration file.
package regfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Open opens path for reading and fails unless it is a regular file. A
// directory someone else filled may hold anything at a path: opening a FIFO
// would block until a writer came (openNoBlock does not wait), and a device
// such as /dev/zero would never end. The check is made on the open file, so
// it and the reads see the same file.
func Open(path string) (*os.File, error) {
	f, err := openNoBlock(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// OpenBeneath opens root/rel like Open, and fails when rel leaves root or
// when rel, or a directory on the way to it below root, is a symbolic link:
// a directory someone else filled (a store copied off a device) may link to
// any file of the machine reading it, such as a genuine copy of a log kept
// elsewhere, and what it holds must be judged as it is. root itself may be a
// link: the caller named it.
func OpenBeneath(root, rel string) (*os.File, error) {
	p := root
	clean := filepath.Clean(rel)
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return nil, fmt.Errorf("%s leaves %s", rel, root)
	}
	for _, c := range strings.Split(clean, string(filepath.Separator)) {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return nil, fmt.Errorf("%s is a symbolic link, not a file of its own", p)
		}
	}
	return Open(p)
}

// ReadSmall reads a regular file expected to hold at most limit bytes, and
// fails when it holds more instead of reading it whole.
func ReadSmall(path string, limit int) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s is larger than the %d bytes it may hold", path, limit)
	}
	return b, nil
}
