package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/indelible-worm/indelible/internal/durable"
)

// File is a Device backed by a regular file (or a block device node).
type File struct {
	f        *os.File
	size     int64
	readOnly bool

	// What the backing filesystem can zero without writing buffers, for
	// NBD's FAST_ZERO: canPunch is probed at open (a hole punched past the
	// end of a regular file changes nothing); canZeroRange is learned from
	// the first FALLOC_FL_ZERO_RANGE that succeeds, because no probe of it
	// is harmless (it preallocates).
	canPunch     bool
	canZeroRange atomic.Bool

	// lastFlush is when Flush last ran (UnixNano); wb starts the
	// writeback of large writes early (see WriteAt), nil when read-only.
	lastFlush atomic.Int64
	wb        *writeback
}

// startWriteback is durable.StartWriteback; a variable so that tests can
// watch it.
var startWriteback = durable.StartWriteback

// A write larger than earlyWritebackOver, from a host that has asked for a
// FLUSH within earlyWritebackWhile, has its writeback started at once (see
// WriteAt). Larger than one 4 KiB block: the small metadata blocks a host
// rewrites again and again before a FLUSH are written once, at the FLUSH.
// A host that flushes (a filesystem: fsync, and ext4's journal commits
// every 5 s) needs its data on disk soon anyway; one that never does (fio
// writing to a raw device) is better served by the page cache alone: for
// it, writing back at once made streaming writes disk-bound.
const (
	earlyWritebackOver  = 4096
	earlyWritebackWhile = 10 * time.Second
)

var _ Device = (*File)(nil)
var _ FUAWriter = (*File)(nil)

// OpenFile opens path as a Device. A regular file keeps its current size.
func OpenFile(path string, readOnly bool) (*File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("blockdev: %w", err)
	}
	size, err := deviceSize(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: size of %s: %w", path, err)
	}
	d := &File{f: f, size: size, readOnly: readOnly}
	if !readOnly {
		d.canPunch = probePunch(f, size)
		d.wb = newWriteback(f)
	}
	return d, nil
}

// Size returns the size in bytes.
func (d *File) Size() int64 { return d.size }

// ReadAt reads len(p) bytes at off; a short file reads as zeroes past its end.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > d.size {
		return 0, ErrOutOfRange
	}
	n, err := d.f.ReadAt(p, off)
	if err != nil && n < len(p) {
		// A sparse file shorter than its declared size reads as zeroes.
		if errors.Is(err, io.EOF) {
			clear(p[n:])
			return len(p), nil
		}
		return n, err
	}
	return len(p), nil
}

// WriteAt writes p at off.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if d.readOnly {
		return 0, ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > d.size {
		return 0, ErrOutOfRange
	}
	n, err := d.f.WriteAt(p, off)
	if err == nil && len(p) > earlyWritebackOver &&
		time.Now().UnixNano()-d.lastFlush.Load() < int64(earlyWritebackWhile) {
		// The host's next FLUSH must make these bytes durable, and its
		// fdatasync would otherwise start writing them only then, with
		// the host waiting (an fsync on the host waits for that FLUSH).
		// Started now, the FLUSH mostly waits for writes already under
		// way (about half the FLUSH time, docs/BENCHMARKS.md); started
		// by another goroutine, the request does not wait for it either.
		d.wb.start(off, int64(len(p)))
	}
	return n, mapErr(err)
}

// WriteAtFUA writes p and syncs the file's data before returning.
func (d *File) WriteAtFUA(p []byte, off int64) (int, error) {
	n, err := d.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	return n, d.Flush()
}

// Flush makes all completed writes durable (fdatasync).
func (d *File) Flush() error {
	if d.readOnly {
		return nil
	}
	d.lastFlush.Store(time.Now().UnixNano())
	return mapErr(durable.Datasync(d.f))
}

// Trim deallocates the range where the filesystem can; otherwise it is a no-op,
// which NBD allows.
func (d *File) Trim(off, length int64) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if off < 0 || off+length > d.size {
		return ErrOutOfRange
	}
	if length == 0 {
		return nil
	}
	if err := punchHole(d.f, off, length); err != nil && !errors.Is(err, errUnsupported) {
		return mapErr(err)
	}
	return nil
}

// WriteZeroes zeroes the range, punching a hole when allowed and supported,
// else asking the filesystem to zero it, else writing zero buffers.
func (d *File) WriteZeroes(off, length int64, mayPunch bool) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if off < 0 || off+length > d.size {
		return ErrOutOfRange
	}
	if length == 0 {
		return nil
	}
	if mayPunch {
		if err := punchHole(d.f, off, length); err == nil {
			return nil
		}
	}
	if err := zeroRange(d.f, off, length); err == nil {
		d.canZeroRange.Store(true)
		return nil
	}
	return writeZeroBuffers(d.f, off, length)
}

// CanZeroFast reports whether WriteZeroes on the range would be done by the
// filesystem without writing zero buffers: a hole punch when holes are
// allowed and the filesystem punches, or a zero-range the filesystem has
// already shown it supports. Unknown counts as slow, so a client asking for
// FAST_ZERO is told ENOTSUP rather than kept waiting.
func (d *File) CanZeroFast(off, length int64, mayPunch bool) bool {
	if d.readOnly {
		return false
	}
	return mayPunch && d.canPunch || d.canZeroRange.Load()
}

// Close closes the file, once the writeback it started early has been
// handed to the kernel.
func (d *File) Close() error {
	if d.wb != nil {
		d.wb.stop()
	}
	return d.f.Close()
}

// Fd exposes the descriptor for transports that need it (FUSE passthrough).
func (d *File) Fd() uintptr { return d.f.Fd() }

func writeZeroBuffers(f *os.File, off, length int64) error {
	const chunk = 1 << 20
	buf := make([]byte, min(length, chunk))
	for length > 0 {
		n := min(length, chunk)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return mapErr(err)
		}
		off += n
		length -= n
	}
	return nil
}

func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG) {
		return fmt.Errorf("%w: %v", ErrNoSpace, err)
	}
	return err
}
