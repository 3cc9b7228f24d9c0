package main

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
)

// timedDevice times every request the server hands the device, by kind, so
// that an A/B of two trees can compare what each kind of request costs under
// the real load (steadier than the run's throughput on a shared machine).
// It keeps the wrapped device's FUA path; a device's fast-zero probe is not
// passed through (the kernel's ext4 does not ask for it here).
type timedDevice struct {
	dev   blockdev.Device
	mu    sync.Mutex
	times map[string][]time.Duration
}

func newTimedDevice(dev blockdev.Device) *timedDevice {
	return &timedDevice{dev: dev, times: map[string][]time.Duration{}}
}

func (t *timedDevice) note(kind string, since time.Time) {
	d := time.Since(since)
	t.mu.Lock()
	t.times[kind] = append(t.times[kind], d)
	t.mu.Unlock()
}

func writeKind(n int) string {
	if n <= 4096 {
		return "write <=4KiB"
	}
	return "write >4KiB"
}

func (t *timedDevice) ReadAt(p []byte, off int64) (int, error) {
	defer t.note("read", time.Now())
	return t.dev.ReadAt(p, off)
}

func (t *timedDevice) WriteAt(p []byte, off int64) (int, error) {
	defer t.note(writeKind(len(p)), time.Now())
	return t.dev.WriteAt(p, off)
}

func (t *timedDevice) WriteAtFUA(p []byte, off int64) (int, error) {
	defer t.note("write FUA", time.Now())
	return blockdev.WriteFUA(t.dev, p, off)
}

func (t *timedDevice) Flush() error {
	defer t.note("flush", time.Now())
	return t.dev.Flush()
}

func (t *timedDevice) Trim(off, n int64) error {
	defer t.note("trim/zeroes", time.Now())
	return t.dev.Trim(off, n)
}

func (t *timedDevice) WriteZeroes(off, n int64, mayPunch bool) error {
	defer t.note("trim/zeroes", time.Now())
	return t.dev.WriteZeroes(off, n, mayPunch)
}

func (t *timedDevice) Size() int64  { return t.dev.Size() }
func (t *timedDevice) Close() error { return t.dev.Close() }

// report writes one line per kind of request: count, mean, p50, p90, p99
// and the total time the device spent on them.
func (t *timedDevice) report(w io.Writer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := fmt.Fprintf(w, "%-14s %7s %9s %9s %9s %9s %9s\n", "request", "count", "mean µs", "p50 µs", "p90 µs", "p99 µs", "total s"); err != nil {
		return err
	}
	for _, kind := range []string{"write <=4KiB", "write >4KiB", "write FUA", "flush", "read", "trim/zeroes"} {
		ts := t.times[kind]
		if len(ts) == 0 {
			continue
		}
		slices.Sort(ts)
		var sum time.Duration
		for _, d := range ts {
			sum += d
		}
		q := func(p float64) float64 { return us(ts[int(p*float64(len(ts)-1))]) }
		if _, err := fmt.Fprintf(w, "%-14s %7d %9.1f %9.1f %9.1f %9.1f %9.3f\n", kind, len(ts),
			us(sum)/float64(len(ts)), q(0.5), q(0.9), q(0.99), sum.Seconds()); err != nil {
			return err
		}
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
