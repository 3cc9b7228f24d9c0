package blockdev

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
)

// A trace is the sequence of requests a host sent to a device, as they
// completed, so that a developer can replay a real kernel's writes against
// the WORM device offline (bench/replay) and measure what each costs,
// without the noise of the host, the client path and the other processes.
//
// Format: the 8-byte magic traceMagic, then one record per request:
//
//	op     1 byte  (TraceWrite, TraceWriteFUA, TraceFlush, TraceTrim, TraceZero, TraceZeroPunch)
//	failed 1 byte  (1 when the device returned an error)
//	off    8 bytes little-endian
//	len    8 bytes little-endian
//	data   len bytes, for the two write ops only
//
// Reads are not recorded: they change nothing a replay could measure.
// A trace holds every byte the host wrote: treat it like the image.
const traceMagic = "IDLTRC01"

// Trace operations.
const (
	TraceWrite     byte = 'W'
	TraceWriteFUA  byte = 'U'
	TraceFlush     byte = 'F'
	TraceTrim      byte = 'T'
	TraceZero      byte = 'Z' // write zeroes, the range must stay allocated
	TraceZeroPunch byte = 'P' // write zeroes, the device may punch the range
)

// MaxTraceWrite bounds the data of one recorded write; NBD clients send at
// most 32 MiB per request.
const MaxTraceWrite = 64 << 20

// TraceOp is one recorded request.
type TraceOp struct {
	Op     byte
	Failed bool
	Off    int64
	Len    int64
	Data   []byte // the written bytes (TraceWrite, TraceWriteFUA); valid until the next op
}

// Apply sends the recorded request to dev (a write with FUA through
// WriteFUA) and returns dev's answer.
func (op TraceOp) Apply(dev Device) error {
	var err error
	switch op.Op {
	case TraceWrite:
		_, err = dev.WriteAt(op.Data, op.Off)
	case TraceWriteFUA:
		_, err = WriteFUA(dev, op.Data, op.Off)
	case TraceFlush:
		err = dev.Flush()
	case TraceTrim:
		err = dev.Trim(op.Off, op.Len)
	case TraceZero, TraceZeroPunch:
		err = dev.WriteZeroes(op.Off, op.Len, op.Op == TraceZeroPunch)
	default:
		err = fmt.Errorf("%w: unknown operation %#x", ErrBadTrace, op.Op)
	}
	return err
}

// Recorder is a Device that passes every request to the wrapped device and
// records each one that modified or flushed it, once it completed. Records
// are written in completion order: a request the host sent only after
// another completed is recorded after it, so a replay in trace order keeps
// every ordering the host relied on.
type Recorder struct {
	dev    Device
	mu     sync.Mutex
	w      *bufio.Writer
	c      io.Closer
	err    error // first error writing the trace; recording stops there
	closed bool
}

var _ Device = (*Recorder)(nil)

// NewRecorder starts a trace on w and records dev's requests into it. Close
// flushes the trace and closes w (when it is an io.Closer) and dev.
func NewRecorder(dev Device, w io.Writer) (*Recorder, error) {
	r := &Recorder{dev: dev, w: bufio.NewWriterSize(w, 1<<20)}
	if c, ok := w.(io.Closer); ok {
		r.c = c
	}
	if _, err := r.w.WriteString(traceMagic); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Recorder) record(op byte, err error, off, n int64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return
	}
	var h [18]byte
	h[0] = op
	if err != nil {
		h[1] = 1
	}
	binary.LittleEndian.PutUint64(h[2:], uint64(off))
	binary.LittleEndian.PutUint64(h[10:], uint64(n))
	if _, r.err = r.w.Write(h[:]); r.err == nil && data != nil {
		_, r.err = r.w.Write(data)
	}
}

// Err returns the first error writing the trace, if any.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *Recorder) ReadAt(p []byte, off int64) (int, error) { return r.dev.ReadAt(p, off) }
func (r *Recorder) Size() int64                             { return r.dev.Size() }

func (r *Recorder) WriteAt(p []byte, off int64) (int, error) {
	n, err := r.dev.WriteAt(p, off)
	r.record(TraceWrite, err, off, int64(len(p)), p)
	return n, err
}

// WriteAtFUA keeps the wrapped device's FUA path (see WriteFUA).
func (r *Recorder) WriteAtFUA(p []byte, off int64) (int, error) {
	n, err := WriteFUA(r.dev, p, off)
	r.record(TraceWriteFUA, err, off, int64(len(p)), p)
	return n, err
}

func (r *Recorder) Flush() error {
	err := r.dev.Flush()
	r.record(TraceFlush, err, 0, 0, nil)
	return err
}

func (r *Recorder) Trim(off, length int64) error {
	err := r.dev.Trim(off, length)
	r.record(TraceTrim, err, off, length, nil)
	return err
}

func (r *Recorder) WriteZeroes(off, length int64, mayPunch bool) error {
	err := r.dev.WriteZeroes(off, length, mayPunch)
	op := TraceZero
	if mayPunch {
		op = TraceZeroPunch
	}
	r.record(op, err, off, length, nil)
	return err
}

// CanZeroFast answers for the wrapped device (the NBD server's FastZeroer).
func (r *Recorder) CanZeroFast(off, length int64, mayPunch bool) bool {
	fz, ok := r.dev.(interface {
		CanZeroFast(off, length int64, mayPunch bool) bool
	})
	return ok && fz.CanZeroFast(off, length, mayPunch)
}

// Close flushes the trace, then closes the trace's writer and the device.
// Closing again does nothing.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	err := r.err
	if err == nil {
		err = r.w.Flush()
	}
	r.err = errors.New("blockdev: recorder closed")
	r.mu.Unlock()
	if r.c != nil {
		if cerr := r.c.Close(); err == nil {
			err = cerr
		}
	}
	if derr := r.dev.Close(); err == nil {
		err = derr
	}
	return err
}

// ErrBadTrace is returned by ReadTrace for input that is not a trace.
var ErrBadTrace = errors.New("blockdev: not a valid trace")

// ReadTrace calls fn with each request recorded in the trace read from r,
// in order, and stops at the end of the trace, at fn's first error or at a
// malformed record. A trace cut short inside a record (a recorder killed
// mid-write) is reported as ErrBadTrace after the complete records.
func ReadTrace(r io.Reader, fn func(TraceOp) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var magic [len(traceMagic)]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil || string(magic[:]) != traceMagic {
		return fmt.Errorf("%w: no trace header", ErrBadTrace)
	}
	var buf []byte
	for i := 0; ; i++ {
		var h [18]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("%w: record %d cut short", ErrBadTrace, i)
		}
		op := TraceOp{Op: h[0], Failed: h[1] != 0,
			Off: int64(binary.LittleEndian.Uint64(h[2:])), Len: int64(binary.LittleEndian.Uint64(h[10:]))}
		if h[1] > 1 || op.Off < 0 || op.Len < 0 || op.Len > math.MaxInt64-op.Off {
			return fmt.Errorf("%w: record %d: flag %d, offset %d, length %d", ErrBadTrace, i, h[1], op.Off, op.Len)
		}
		switch op.Op {
		case TraceWrite, TraceWriteFUA:
			if op.Len > MaxTraceWrite {
				return fmt.Errorf("%w: record %d: write of %d bytes (at most %d)", ErrBadTrace, i, op.Len, MaxTraceWrite)
			}
			if cap(buf) < int(op.Len) {
				buf = make([]byte, op.Len)
			}
			op.Data = buf[:op.Len]
			if _, err := io.ReadFull(br, op.Data); err != nil {
				return fmt.Errorf("%w: record %d: write data cut short", ErrBadTrace, i)
			}
		case TraceFlush, TraceTrim, TraceZero, TraceZeroPunch:
		default:
			return fmt.Errorf("%w: record %d: unknown operation %#x", ErrBadTrace, i, op.Op)
		}
		if err := fn(op); err != nil {
			return err
		}
	}
}
