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
// copying it through read(2) first costs more than mapping it. The file is
// mapped a window at a time, each window populated in one call
// (MAP_POPULATE): touching a fresh mapping page by page costs a page fault
// every few pages, which profiles showed at a sixth of verification time.
// (MAP_POPULATE is Linux's; elsewhere pages fault in as they are touched.)
// Windows also bound the address space and page tables a large log takes.
// A file that shrinks while mapped raises SIGBUS on access; feed turns that
// into an error (runtime/debug.SetPanicOnFault) instead of a crash.
type seqReader struct {
	f      *os.File
	size   int64
	win    []byte // mapping of [winOff, winOff+len(win))
	winOff int64
	pr     *preadReader // when mapping failed

	// beforeUnmap, when set, runs before the window is unmapped: the
	// verifier hands out slices of it (see span) and must finish with them.
	beforeUnmap func()
}

// mapWindow is the largest mapping a seqReader holds: big enough that
// remapping is rare (one mmap per 32 MiB verified), small enough that
// populating it up front is not a long stall nor a large page-table cost
// when many logs are open at once.
const (
	mapWindowShift = 25
	mapWindow      = 1 << mapWindowShift // 32 MiB
)

func newSeqReader(f *os.File, size int64) *seqReader {
	return &seqReader{f: f, size: size, winOff: -1}
}

// mapAt maps the window holding off; false means mapping failed and r
// falls back to reads.
func (r *seqReader) mapAt(off int64) bool {
	r.unmap()
	start := off &^ (mapWindow - 1)
	n := min(int64(mapWindow), r.size-start)
	d, err := unix.Mmap(int(r.f.Fd()), start, int(n), unix.PROT_READ, unix.MAP_SHARED|mapPopulate)
	if err != nil {
		r.pr = &preadReader{f: r.f, off: -1}
		return false
	}
	unix.Madvise(d, unix.MADV_SEQUENTIAL)
	r.win, r.winOff = d, start
	return true
}

// mapped reports whether off lies in the window, mapping the window that
// holds it if needed; false means mapping failed and r falls back to reads.
func (r *seqReader) mapped(off int64) bool {
	if off >= r.winOff && off < r.winOff+int64(len(r.win)) {
		return true
	}
	return r.mapAt(off)
}

func (r *seqReader) feed(w io.Writer, off, n int64) (err error) {
	if r.pr != nil {
		return r.pr.feed(w, off, n)
	}
	if off < 0 || n < 0 || off+n > r.size || off+n < 0 {
		return io.ErrUnexpectedEOF
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			err = fmt.Errorf("seal: real log changed while being verified: %v", p)
		}
	}()
	for n > 0 {
		if !r.mapped(off) {
			return r.pr.feed(w, off, n)
		}
		p := r.win[off-r.winOff:]
		if int64(len(p)) > n {
			p = p[:n]
		}
		w.Write(p)
		off += int64(len(p))
		n -= int64(len(p))
	}
	return nil
}

// span returns [off, off+n) of the file as a slice of its mapping, valid
// until the window moves (beforeUnmap), when the range lies within one
// window; ok is false otherwise (the caller then uses feed). Touching the
// slice raises SIGBUS if the file shrinks meanwhile: callers read it under
// debug.SetPanicOnFault.
func (r *seqReader) span(off, n int64) (b []byte, ok bool) {
	if r.pr != nil || off < 0 || n <= 0 || off+n > r.size || off+n < 0 {
		return nil, false
	}
	if off>>mapWindowShift != (off+n-1)>>mapWindowShift {
		return nil, false
	}
	if !r.mapped(off) {
		return nil, false
	}
	return r.win[off-r.winOff : off-r.winOff+n], true
}

func (r *seqReader) unmap() {
	if r.win != nil {
		if r.beforeUnmap != nil {
			r.beforeUnmap()
		}
		unix.Munmap(r.win)
		r.win, r.winOff = nil, -1
	}
}

func (r *seqReader) close() {
	r.unmap()
	r.f.Close()
}
