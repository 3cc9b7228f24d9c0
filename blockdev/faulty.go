package blockdev

import (
	"errors"
	"sync"
)

// ErrInjected is the error a Faulty device returns for an injected fault.
var ErrInjected = errors.New("blockdev: injected fault")

// Op names a Device operation for fault injection.
type Op int

const (
	OpRead Op = iota
	OpWrite
	OpFlush
	OpTrim
	OpWriteZeroes
)

func (o Op) String() string {
	return [...]string{"read", "write", "flush", "trim", "write-zeroes"}[o]
}

// Faulty wraps a Device and fails operations chosen by its Fail hook. It is
// for tests of the layers above (NBD error replies, WORM recovery).
type Faulty struct {
	Device
	mu sync.Mutex
	// Fail is consulted before each operation; returning a non-nil error
	// fails the operation with it without touching the wrapped device.
	Fail func(op Op, off, length int64) error
	// TornWrites, when set, writes only the first half of a failed write
	// before returning the error (a torn write after power loss).
	TornWrites bool
	counts     [5]int
}

var _ Device = (*Faulty)(nil)

func (d *Faulty) check(op Op, off, length int64) error {
	d.mu.Lock()
	d.counts[op]++
	fail := d.Fail
	d.mu.Unlock()
	if fail == nil {
		return nil
	}
	return fail(op, off, length)
}

// Count returns how many times op was attempted.
func (d *Faulty) Count(op Op) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counts[op]
}

func (d *Faulty) ReadAt(p []byte, off int64) (int, error) {
	if err := d.check(OpRead, off, int64(len(p))); err != nil {
		return 0, err
	}
	return d.Device.ReadAt(p, off)
}

func (d *Faulty) WriteAt(p []byte, off int64) (int, error) {
	if err := d.check(OpWrite, off, int64(len(p))); err != nil {
		if d.TornWrites && len(p) > 1 {
			n, _ := d.Device.WriteAt(p[:len(p)/2], off)
			return n, err
		}
		return 0, err
	}
	return d.Device.WriteAt(p, off)
}

func (d *Faulty) Flush() error {
	if err := d.check(OpFlush, 0, 0); err != nil {
		return err
	}
	return d.Device.Flush()
}

func (d *Faulty) Trim(off, length int64) error {
	if err := d.check(OpTrim, off, length); err != nil {
		return err
	}
	return d.Device.Trim(off, length)
}

func (d *Faulty) WriteZeroes(off, length int64, mayPunch bool) error {
	if err := d.check(OpWriteZeroes, off, length); err != nil {
		return err
	}
	return d.Device.WriteZeroes(off, length, mayPunch)
}
