package main

import (
	"fmt"
	"os"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/internal/durable"
)

// shapedDevice makes a device answer more slowly in one chosen way at a
// time: a fixed wait after each write or flush, or one more 4 KiB write and
// fdatasync of a side file after each flush (what the WORM device's
// written-block map costs a host FLUSH). Served over a plain image, it
// tells how much throughput the host loses to each of the device's costs
// on its own, without the rest of the device (bench/e2e/run.sh's "shaped"
// server; bench/e2e/RESULTS.md, fourteenth session).
type shapedDevice struct {
	blockdev.Device
	shape
	side      *os.File // nil: no side-file sync
	sideBlock [4096]byte
}

// shape are the flags that build a shapedDevice.
type shape struct {
	delayWrite, delaySmallWrite, delayFlush time.Duration
	flushSync                               string
}

func (s shape) active() bool {
	return s.delayWrite > 0 || s.delaySmallWrite > 0 || s.delayFlush > 0 || s.flushSync != ""
}

func newShapedDevice(dev blockdev.Device, s shape) (*shapedDevice, error) {
	d := &shapedDevice{Device: dev, shape: s}
	if s.flushSync != "" {
		f, err := os.OpenFile(s.flushSync, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("-flush-sync: %w", err)
		}
		d.side = f
	}
	return d, nil
}

func (d *shapedDevice) WriteAt(p []byte, off int64) (int, error) {
	n, err := d.Device.WriteAt(p, off)
	if len(p) > 4096 {
		wait(d.delayWrite)
	} else {
		wait(d.delaySmallWrite)
	}
	return n, err
}

// WriteAtFUA keeps the wrapped device's FUA path.
func (d *shapedDevice) WriteAtFUA(p []byte, off int64) (int, error) {
	n, err := blockdev.WriteFUA(d.Device, p, off)
	wait(d.delayWrite)
	return n, err
}

func (d *shapedDevice) Flush() error {
	if err := d.Device.Flush(); err != nil {
		return err
	}
	if d.side != nil {
		// Like the map: rewritten in place, so fdatasync writes one block
		// and flushes the disk's cache once more.
		d.sideBlock[0]++
		if _, err := d.side.WriteAt(d.sideBlock[:], 0); err != nil {
			return err
		}
		if err := durable.Datasync(d.side); err != nil {
			return err
		}
	}
	wait(d.delayFlush)
	return nil
}

func (d *shapedDevice) Close() error {
	err := d.Device.Close()
	if d.side != nil {
		if cerr := d.side.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// wait sleeps for about dur without using a CPU (sleep_linux.go). On a
// virtual machine a sleep overshoots by tens of microseconds even so: read
// what was added from the -latency table, not from the flag.
func wait(dur time.Duration) {
	if dur > 0 {
		sleep(dur)
	}
}
