package blockdev

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// writeback starts the writeback of the ranges File.WriteAt hands it, on its
// own goroutine: sync_file_range submits the I/O in the caller's context
// (inline, it was about two fifths of a large write's time on the request
// path: bench/e2e/RESULTS.md), and the host's request need not wait for
// that. The ranges that arrive within wbGather of the first are written
// back by one call spanning them all: a call submits its I/O under one
// plug, so the disk is told once for the lot, and on a VM each such
// notification is an exit to the hypervisor that cost about as much as
// the rest of the call (a host appending to sixteen files at once cost
// sixteen calls). The span may take in dirty pages between the ranges,
// small metadata blocks the host may write again before its FLUSH, which
// are then written twice: measured cheaper than the calls, 2026-12-02. The
// ranges are hints: when the queue is full a range is dropped, and the
// host's next FLUSH (fdatasync) writes it as it would have anyway.
type writeback struct {
	f       *os.File
	queue   chan wbRange
	quit    chan struct{}
	done    chan struct{}
	stopped sync.Once
	refused atomic.Bool // the file refused once: asked no more
}

// wbRange is a range to write back, or, with settled set, a request to be
// told when every range queued before it has been handed to the kernel.
type wbRange struct {
	off, n  int64
	settled chan struct{}
}

// wbQueue bounds the ranges waiting: a few milliseconds of a busy host's
// large writes, a few KiB of memory. wbGather is how long the goroutine
// waits for more ranges after the first before it starts their writeback:
// short beside the host's FLUSH interval, long beside its writes.
const (
	wbQueue  = 256
	wbGather = 2 * time.Millisecond
)

func newWriteback(f *os.File) *writeback {
	w := &writeback{f: f, queue: make(chan wbRange, wbQueue), quit: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// start queues [off, off+n) without blocking; the range is dropped when
// the file refused before or the queue is full.
func (w *writeback) start(off, n int64) {
	if w.refused.Load() {
		return
	}
	select {
	case w.queue <- wbRange{off: off, n: n}:
	default:
	}
}

// settle waits until every range queued before it has been handed to the
// kernel (or dropped after a refusal). For tests and for Close.
func (w *writeback) settle() {
	ch := make(chan struct{})
	select {
	case w.queue <- wbRange{settled: ch}:
	case <-w.done:
		return
	}
	select {
	case <-ch:
	case <-w.done:
	}
}

// stop ends the goroutine once it has handed over what is queued; start
// may still be called afterwards (its ranges are then never written back
// early, which only the FLUSH notices).
func (w *writeback) stop() {
	w.stopped.Do(func() {
		w.settle()
		close(w.quit)
		<-w.done
	})
}

func (w *writeback) run() {
	defer close(w.done)
	var batch []wbRange
	gather := time.NewTimer(wbGather)
	gather.Stop()
	for {
		select {
		case <-w.quit:
			return
		case r := <-w.queue:
			batch = append(batch[:0], r)
		}
		// Take what comes within wbGather, up to one queue's worth; a
		// settle request ends the wait (it waits for what came before),
		// so a batch holds at most one, last.
		gather.Reset(wbGather)
	take:
		for len(batch) < wbQueue && batch[len(batch)-1].settled == nil {
			select {
			case r := <-w.queue:
				batch = append(batch, r)
			case <-gather.C:
				break take
			}
		}
		gather.Stop()
		var settled chan struct{}
		first, end := int64(-1), int64(0)
		for _, r := range batch {
			switch {
			case r.settled != nil:
				settled = r.settled
			case first < 0:
				first, end = r.off, r.off+r.n
			default:
				first, end = min(first, r.off), max(end, r.off+r.n)
			}
		}
		if first >= 0 && !w.refused.Load() {
			if err := startWriteback(w.f, first, end-first); err != nil {
				w.refused.Store(true) // a hint only: never an error
			}
		}
		if settled != nil {
			close(settled)
		}
	}
}
