//go:build !unix

package seal

import (
	"io"
	"os"
)

// seqReader reads real logs with large preads where mapping is not available.
type seqReader struct {
	f  *os.File
	pr *preadReader

	beforeUnmap func() // unused: nothing is mapped
}

func newSeqReader(f *os.File, size int64) *seqReader {
	return &seqReader{f: f, pr: &preadReader{f: f, off: -1}}
}

func (r *seqReader) feed(w io.Writer, off, n int64) error { return r.pr.feed(w, off, n) }

func (r *seqReader) close() { r.f.Close() }

// span is never available without mappings: verification uses feed.
func (r *seqReader) span(off, n int64) ([]byte, bool) { return nil, false }
