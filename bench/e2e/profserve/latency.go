package main

import (
	"time"

	"github.com/indelible-worm/indelible/bench/internal/reqtime"
	"github.com/indelible-worm/indelible/blockdev"
)

// timedDevice times every request the server hands the device, by kind, so
// that an A/B of two trees can compare what each kind of request costs under
// the real load (steadier than the run's throughput on a shared machine).
// It keeps the wrapped device's FUA path; a device's fast-zero probe is not
// passed through (the kernel's ext4 does not ask for it here).
type timedDevice struct {
	dev   blockdev.Device
	times reqtime.Table
}

func newTimedDevice(dev blockdev.Device) *timedDevice { return &timedDevice{dev: dev} }

func (t *timedDevice) ReadAt(p []byte, off int64) (int, error) {
	defer t.times.Since(reqtime.Read, time.Now())
	return t.dev.ReadAt(p, off)
}

func (t *timedDevice) WriteAt(p []byte, off int64) (int, error) {
	defer t.times.Since(reqtime.WriteKind(len(p)), time.Now())
	return t.dev.WriteAt(p, off)
}

func (t *timedDevice) WriteAtFUA(p []byte, off int64) (int, error) {
	defer t.times.Since(reqtime.FUAWrite, time.Now())
	return blockdev.WriteFUA(t.dev, p, off)
}

func (t *timedDevice) Flush() error {
	defer t.times.Since(reqtime.Flush, time.Now())
	return t.dev.Flush()
}

func (t *timedDevice) Trim(off, n int64) error {
	defer t.times.Since(reqtime.Discard, time.Now())
	return t.dev.Trim(off, n)
}

func (t *timedDevice) WriteZeroes(off, n int64, mayPunch bool) error {
	defer t.times.Since(reqtime.Discard, time.Now())
	return t.dev.WriteZeroes(off, n, mayPunch)
}

func (t *timedDevice) Size() int64  { return t.dev.Size() }
func (t *timedDevice) Close() error { return t.dev.Close() }
