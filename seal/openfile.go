package seal

import (
	"fmt"
	"io"
	"os"
)

// openRegular opens path for reading and fails unless it is a regular
// file. A store under verification may hold anything at a path: opening a
// FIFO would block until a writer came (openNoBlock does not wait), and a
// device such as /dev/zero would never end.
func openRegular(path string) (*os.File, error) {
	f, err := openNoBlock(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("seal: %s is not a regular file (%s)", path, st.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readSmall reads a file expected to hold at most limit bytes, and fails
// when it holds more instead of reading it whole.
func readSmall(path string, limit int) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("seal: %s is larger than the %d bytes it may hold", path, limit)
	}
	return b, nil
}
