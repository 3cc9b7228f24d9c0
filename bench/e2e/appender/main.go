// Command appender is the load generator of the end-to-end benchmark
// (bench/e2e/run.sh). It runs on the host side: W writers each append
// fixed-size records to their own file on a mounted filesystem with O_APPEND,
// calling fsync every N appends, and reports the throughput.
//
// When given the device's sealed-log store (-store), it also measures the
// seal lag: for every fsync that returned, the time until the real log of
// that file holds at least the bytes the fsync covered. "Holds" means the
// store has written the bytes to the real log (it makes them durable in the
// same commit, see seal.Store.Append). The real logs are watched with
// inotify: each write the store makes to one wakes the tracker, which stats
// that file, so the figure is late only by the wake-up. (Until 2026-11-30 the
// tracker stat'ed all sixteen real logs every millisecond: 0.8 s of CPU per
// 9 s run, taken from the two cores the host and the device share and from
// the device's runs only. -poll D still does that, for comparison.)
//
// Output is one line of key=value pairs on stdout, for run.sh to parse:
//
//	bytes=268435456 secs=12.345 mbps=21.74 fsyncs=16384 lag_n=16384 lag_p50_ms=... lag_p99_ms=... lag_max_ms=... unsealed=0 verified=16
//
// With -verify, once every fsync is sealed it checks that each real log is a
// prefix of (here: equal to) the file as the host reads it (invariant I1).
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "appender:", err)
		os.Exit(1)
	}
}

// mark is one fsync that returned: the file held end bytes at time at.
type mark struct {
	end int64
	at  time.Time
}

// lagTracker turns fsync marks into seal lags by watching real-log sizes.
type lagTracker struct {
	store string
	paths []string

	mu      sync.Mutex
	pending [][]mark // per file, in increasing end order
	size    []int64  // per file, the real log's size when last looked at
	lags    []time.Duration
}

func newLagTracker(store string, paths []string) *lagTracker {
	return &lagTracker{store: store, paths: paths, pending: make([][]mark, len(paths)), size: make([]int64, len(paths))}
}

// add records that file held end bytes when an fsync returned at at. A real
// log already that long (sealed before the fsync returned) retires the mark
// at once: no later write of the store would.
func (t *lagTracker) add(file int, end int64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.pending[file]) == 0 && t.size[file] >= end {
		t.lags = append(t.lags, time.Since(at))
		return
	}
	t.pending[file] = append(t.pending[file], mark{end, at})
}

// look stats file i's real log and retires the marks it now covers.
func (t *lagTracker) look(i int, now time.Time) {
	fi, err := os.Stat(filepath.Join(t.store, t.paths[i]))
	size := int64(0)
	if err == nil {
		size = fi.Size()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.size[i] = max(t.size[i], size)
	q := t.pending[i]
	k := 0
	for k < len(q) && q[k].end <= t.size[i] {
		t.lags = append(t.lags, now.Sub(q[k].at))
		k++
	}
	t.pending[i] = q[k:]
}

// poll looks at every file with pending marks once and returns how many
// marks are still pending.
func (t *lagTracker) poll() int {
	now := time.Now()
	for i := range t.paths {
		t.mu.Lock()
		n := len(t.pending[i])
		t.mu.Unlock()
		if n > 0 {
			t.look(i, now)
		}
	}
	return t.left()
}

func (t *lagTracker) left() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, q := range t.pending {
		n += len(q)
	}
	return n
}

func run() error {
	mount := flag.String("mount", "", "mount point of the filesystem under test (required)")
	files := flag.String("files", "", "comma-separated file paths relative to -mount, one per writer (required)")
	size := flag.Int("append", 4096, "bytes per append")
	every := flag.Int("fsync-every", 16, "fsync after this many appends")
	perWriter := flag.Int64("per-writer", 16<<20, "bytes each writer appends")
	store := flag.String("store", "", "the device's sealed-log store: measure seal lag against its real logs")
	pollEvery := flag.Duration("poll", 0, "stat the real logs this often instead of watching them with inotify (0: watch)")
	lagTimeout := flag.Duration("lag-timeout", 30*time.Second, "how long to wait for the last fsyncs to be sealed")
	verify := flag.Bool("verify", false, "after sealing, check every real log equals the host's file")
	flag.Parse()
	if *mount == "" || *files == "" {
		return errors.New("-mount and -files are required")
	}
	if *size <= 0 || *every <= 0 || *perWriter <= 0 {
		return errors.New("-append, -fsync-every and -per-writer must be positive")
	}
	paths := strings.Split(*files, ",")
	writes := *perWriter / int64(*size)

	var tr *lagTracker
	if *store != "" {
		tr = newLagTracker(*store, paths)
	}
	// wait sleeps until the real logs may have changed, at most d.
	wait := func(d time.Duration) error { time.Sleep(min(d, *pollEvery)); tr.poll(); return nil }
	if tr != nil && *pollEvery <= 0 {
		w, err := newRealLogWatch(tr)
		if err != nil {
			return err
		}
		defer w.close()
		wait = w.wait
	}

	// Open everything first so that the timed part is appends and fsyncs only.
	fs := make([]*os.File, len(paths))
	for i, p := range paths {
		f, err := os.OpenFile(filepath.Join(*mount, p), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		fs[i] = f
	}

	stopWatch := make(chan struct{})
	watchDone := make(chan error, 1)
	if tr != nil {
		go func() {
			for {
				select {
				case <-stopWatch:
					watchDone <- nil
					return
				default:
				}
				if err := wait(50 * time.Millisecond); err != nil {
					watchDone <- err
					return
				}
			}
		}()
	} else {
		watchDone <- nil
	}

	var wg sync.WaitGroup
	errs := make([]error, len(paths))
	fsyncs := make([]int, len(paths))
	cpu0 := selfCPU()
	start := time.Now()
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fsyncs[i], errs[i] = writer(fs[i], i, *size, *every, writes, tr)
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	cpu := selfCPU() - cpu0
	close(stopWatch)
	if err := errors.Join(append(errs, <-watchDone)...); err != nil {
		return err
	}
	total := writes * int64(*size) * int64(len(paths))
	nsync := 0
	for _, n := range fsyncs {
		nsync += n
	}
	fmt.Printf("bytes=%d secs=%.3f mbps=%.2f fsyncs=%d app_cpu_s=%.2f", total, secs, float64(total)/secs/1e6, nsync, cpu.Seconds())

	if tr != nil {
		deadline := time.Now().Add(*lagTimeout)
		left := tr.left()
		for left > 0 && time.Now().Before(deadline) {
			if err := wait(time.Until(deadline)); err != nil {
				return err
			}
			left = tr.left()
		}
		lags := tr.lags
		slices.Sort(lags)
		fmt.Printf(" lag_n=%d lag_p50_ms=%.1f lag_p99_ms=%.1f lag_max_ms=%.1f unsealed=%d",
			len(lags), ms(pct(lags, 50)), ms(pct(lags, 99)), ms(pct(lags, 100)), left)
		if *verify {
			ok, err := verifyLogs(*mount, *store, paths)
			if err != nil {
				fmt.Println()
				return err
			}
			fmt.Printf(" verified=%d", ok)
		}
	}
	fmt.Println()
	return nil
}

// writer appends writes records of size bytes to f, fsyncing every every
// appends (and once at the end if the count is not a multiple).
func writer(f *os.File, id, size, every int, writes int64, tr *lagTracker) (int, error) {
	buf := make([]byte, size)
	var end int64
	nsync := 0
	for w := int64(0); w < writes; w++ {
		fill(buf, id, w)
		if _, err := f.Write(buf); err != nil {
			return nsync, err
		}
		end += int64(size)
		if (w+1)%int64(every) == 0 || w+1 == writes {
			if err := f.Sync(); err != nil {
				return nsync, err
			}
			nsync++
			if tr != nil {
				tr.add(id, end, time.Now())
			}
		}
	}
	return nsync, nil
}

// fill writes a recognisable record: text lines naming the writer and the
// record number, padded to the record size, ending in a newline. A misplaced
// or zeroed block in a real log is then visible to the eye and to -verify.
func fill(buf []byte, id int, seq int64) {
	line := fmt.Appendf(nil, "writer %02d record %09d the quick brown fox jumps over the lazy dog\n", id, seq)
	for i := 0; i < len(buf); i += len(line) {
		copy(buf[i:], line)
	}
	buf[len(buf)-1] = '\n'
}

// verifyLogs checks that each real log equals the host's view of its file.
func verifyLogs(mount, store string, paths []string) (int, error) {
	for _, p := range paths {
		host, err := os.ReadFile(filepath.Join(mount, p))
		if err != nil {
			return 0, err
		}
		real, err := os.ReadFile(filepath.Join(store, p))
		if err != nil {
			return 0, err
		}
		if !bytes.Equal(host, real) {
			return 0, fmt.Errorf("%s: real log (%d bytes) differs from the host's file (%d bytes)", p, len(real), len(host))
		}
	}
	return len(paths), nil
}

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	return s[max(0, min(i, len(s))-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// selfCPU is the user and system CPU time this process has used: over the
// timed span it is the host side's share of the run that runs in the
// appender's threads (its writes and fsyncs through ext4, the loop device
// and FUSE), plus, in the device's runs, the seal-lag tracker.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
