// Package reqtime keeps how long each request a device served took, by kind
// of request, and prints the table both request-level benchmarks show
// (bench/e2e/profserve under the real host, bench/replay on a recorded
// trace): count, mean, p50, p90, p99 and total per kind. On a shared
// machine these are far steadier for an A/B than a run's throughput.
package reqtime

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// The kinds of request, in the order the table lists them.
const (
	SmallWrite = "write <=4KiB"
	LargeWrite = "write >4KiB"
	FUAWrite   = "write FUA"
	Flush      = "flush"
	Read       = "read"
	Discard    = "trim/zeroes"
)

var order = []string{SmallWrite, LargeWrite, FUAWrite, Flush, Read, Discard}

// WriteKind is the kind of a plain write of n bytes.
func WriteKind(n int) string {
	if n <= 4096 {
		return SmallWrite
	}
	return LargeWrite
}

// Table collects request times; it is safe for concurrent use.
type Table struct {
	mu    sync.Mutex
	times map[string][]time.Duration
}

// Add records that a request of the given kind took d.
func (t *Table) Add(kind string, d time.Duration) {
	t.mu.Lock()
	if t.times == nil {
		t.times = map[string][]time.Duration{}
	}
	t.times[kind] = append(t.times[kind], d)
	t.mu.Unlock()
}

// Since records a request of the given kind that started at start.
func (t *Table) Since(kind string, start time.Time) { t.Add(kind, time.Since(start)) }

// Count is how many requests were recorded, of every kind.
func (t *Table) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, ts := range t.times {
		n += len(ts)
	}
	return n
}

// Report writes a header and one line per kind that has requests, each
// line starting with indent.
func (t *Table) Report(w io.Writer, indent string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := fmt.Fprintf(w, "%s%-14s %7s %9s %9s %9s %9s %9s\n", indent, "request", "count", "mean µs", "p50 µs", "p90 µs", "p99 µs", "total s"); err != nil {
		return err
	}
	for _, kind := range order {
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
		if _, err := fmt.Fprintf(w, "%s%-14s %7d %9.1f %9.1f %9.1f %9.1f %9.3f\n", indent, kind, len(ts),
			us(sum)/float64(len(ts)), q(0.5), q(0.9), q(0.99), sum.Seconds()); err != nil {
			return err
		}
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
