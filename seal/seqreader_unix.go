//go:build unix

package seal

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// seqReader feeds byte ranges of a real log to a MAC straight from a
// read-only mapping of the file: verification hashes every byte once, and
// copying it through read(2) first would cost a third of the time. A file
// that shrinks while mapped raises SIGBUS on access; feed turns that into
// an error (runtime/debug.SetPanicOnFault) instead of a crash.
type seqReader struct {
	f    *os.File
	data []byte
	pr   *preadReader // when mapping failed
}

func newSeqReader(f *os.File, size int64) *seqReader {
	r := &seqReader{f: f}
	if size > 0 && int64(int(size)) == size {
		if d, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED); err == nil {
			unix.Madvise(d, unix.MADV_SEQUENTIAL)
			r.data = d
			return r
		}
	}
	r.pr = &preadReader{f: f, off: -1}
	return r
}

func (r *seqReader) feed(w io.Writer, off, n int64) (err error) {
	if r.pr != nil {
		return r.pr.feed(w, off, n)
	}
	if off < 0 || n < 0 || off+n > int64(len(r.data)) {
		return io.ErrUnexpectedEOF
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			err = fmt.Errorf("seal: real log changed while being verified: %v", p)
		}
	}()
	w.Write(r.data[off : off+n])
	return nil
}

func (r *seqReader) close() {
	if r.data != nil {
		unix.Munmap(r.data)
		r.data = nil
	}
	r.f.Close()
}
