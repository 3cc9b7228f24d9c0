package blockdev

import (
	"cmp"
	"os"
	"slices"
	"sync"
	"sync/atomic"
)

// writeback starts the writeback of the ranges File.WriteAt hands it, on its
// own goroutine: sync_file_range submits the I/O in the caller's context
// (inline, it was about two fifths of a large write's time on the request
// path: bench/e2e/RESULTS.md), and the host's request need not wait for
// that. Ranges queued
// together are sorted and merged, so that a host writing one extent in
// several requests costs one call. The ranges are hints: when the queue is
// full a range is dropped, and the host's next FLUSH (fdatasync) writes it
// as it would have anyway.
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
// large writes, a few KiB of memory.
const wbQueue = 256

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
	var settled []chan struct{}
	for {
		select {
		case <-w.quit:
			return
		case r := <-w.queue:
			batch = append(batch[:0], r)
		}
		// Take whatever else is waiting, up to one queue's worth.
	drain:
		for len(batch) < wbQueue {
			select {
			case r := <-w.queue:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		settled = settled[:0]
		ranges := batch[:0]
		for _, r := range batch {
			if r.settled != nil {
				settled = append(settled, r.settled)
			} else {
				ranges = append(ranges, r)
			}
		}
		for _, r := range mergeRanges(ranges) {
			if w.refused.Load() {
				break
			}
			if err := startWriteback(w.f, r.off, r.n); err != nil {
				w.refused.Store(true) // a hint only: never an error
			}
		}
		for _, ch := range settled {
			close(ch)
		}
	}
}

// mergeRanges sorts rs by offset and joins those that overlap or touch, in
// place.
func mergeRanges(rs []wbRange) []wbRange {
	if len(rs) < 2 {
		return rs
	}
	slices.SortFunc(rs, func(a, b wbRange) int { return cmp.Compare(a.off, b.off) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.off <= last.off+last.n {
			last.n = max(last.n, r.off+r.n-last.off)
			continue
		}
		out = append(out, r)
	}
	return out
}
