// Command replay plays a recorded host trace (bench/e2e/run.sh TRACE=1, or
// profserve -record) back against a copy of the WORM device directory as it
// was before the trace was recorded, one request at a time, and reports what
// each kind of request cost the device. It measures the device core, the
// ext4 engine and sealing on the kernel's real request stream without the
// host, the client path and their share of the CPU: differences far below
// the end-to-end benchmark's run-to-run noise show up here.
//
//	go run ./bench/replay -dir TEMPLATE_DIR -trace requests.trace [-repeat 3] [-cpuprofile cpu.pprof] [-verify]
//
// The template directory is never modified: each repeat copies it
// (cp -a --sparse=always) into a temporary directory first.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/indelible-worm/indelible/audit"
	"github.com/indelible-worm/indelible/bench/internal/reqtime"
	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/worm"
)

func main() {
	dir := flag.String("dir", "", "device directory as it was before the trace was recorded (required; not modified)")
	trace := flag.String("trace", "", "trace recorded by profserve -record (required)")
	repeat := flag.Int("repeat", 1, "replays, each on a fresh copy of -dir")
	cpu := flag.String("cpuprofile", "", "write a CPU profile of all replays to `file`")
	settle := flag.Duration("settle", 10*time.Second, "after the last request, how long to wait for sealing to catch up")
	verify := flag.Bool("verify", false, "after each replay, check that every real log is a prefix of its file in the image (I1), the journal replayed; exit 1 if one is not")
	flag.Parse()
	if *dir == "" || *trace == "" || *repeat < 1 {
		fmt.Fprintln(os.Stderr, "usage: replay -dir TEMPLATE_DIR -trace FILE [-repeat N] [-cpuprofile FILE]")
		os.Exit(2)
	}
	if *cpu != "" {
		f, err := os.Create(*cpu)
		if err != nil {
			fail(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	for i := 1; i <= *repeat; i++ {
		if err := replayOnce(i, *dir, *trace, *settle, *verify); err != nil {
			pprof.StopCPUProfile()
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "replay:", err)
	os.Exit(1)
}

func replayOnce(run int, template, trace string, settle time.Duration, verify bool) error {
	tmp, err := os.MkdirTemp("", "indelible-replay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "dev")
	if out, err := exec.Command("cp", "-a", "--sparse=always", template, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("copying %s: %v: %s", template, err, out)
	}
	o, err := worm.OpenDir(dir, worm.Options{})
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			o.Close()
		}
	}()
	f, err := os.Open(trace)
	if err != nil {
		return err
	}
	defer f.Close()

	var times reqtime.Table
	mismatches := 0
	var cpu0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &cpu0)
	start := time.Now()
	dev := o.Device
	err = blockdev.ReadTrace(f, func(op blockdev.TraceOp) error {
		kind := reqtime.Discard // trims and write-zeroes
		switch op.Op {
		case blockdev.TraceWrite:
			kind = reqtime.WriteKind(int(op.Len))
		case blockdev.TraceWriteFUA:
			kind = reqtime.FUAWrite
		case blockdev.TraceFlush:
			kind = reqtime.Flush
		}
		t0 := time.Now()
		err := op.Apply(dev)
		times.Since(kind, t0)
		if (err != nil) != op.Failed {
			mismatches++
		}
		return nil
	})
	if err != nil {
		return err
	}
	elapsed := time.Since(start)

	// Let sealing catch up with what the trace made coherent.
	t0 := time.Now()
	pending := func() (n int64) {
		for _, fs := range dev.Status().Files {
			n += max(fs.Coherent-fs.Committed, 0)
		}
		return n
	}
	for pending() > 0 && time.Since(t0) < settle {
		time.Sleep(time.Millisecond)
	}
	caughtUp := time.Since(t0)
	st := dev.Status()
	closed = true
	if err := o.Close(); err != nil {
		return err
	}
	var cpu1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &cpu1)
	cpuSec := func(r syscall.Rusage) float64 {
		return float64(r.Utime.Nano()+r.Stime.Nano()) / 1e9
	}

	var sealed, size int64
	for _, fs := range st.Files {
		sealed += fs.Committed
		size += fs.Size
	}
	// Context switches tell how much of the CPU went to waiting and
	// waking rather than work: compare them with the e2e run's srv_vcs and
	// srv_ivcs for the same requests.
	fmt.Printf("replay %d: %d requests in %.3f s, process CPU %.2f s (replay and sealing to the end), context switches %d voluntary %d involuntary, %d outcome mismatches\n",
		run, times.Count(),
		elapsed.Seconds(), cpuSec(cpu1)-cpuSec(cpu0), cpu1.Nvcsw-cpu0.Nvcsw, cpu1.Nivcsw-cpu0.Nivcsw, mismatches)
	if err := times.Report(os.Stdout, "  "); err != nil {
		return err
	}
	fmt.Printf("  sealed %d of %d bytes in the files, %.0f ms after the last request; indicators %d, read-only %v\n",
		sealed, size, float64(caughtUp)/float64(time.Millisecond), st.Indicators, st.ReadOnly)
	if st.SealError != "" {
		return errors.New("sealing failed: " + st.SealError)
	}
	if verify {
		return verifyPrefixes(dir, st.Files)
	}
	return nil
}

// verifyPrefixes checks that each protected file's real log in device
// directory dir holds the first bytes of the file as the image shows it
// after a journal replay (I1: nothing sealed that the host did not append
// there).
func verifyPrefixes(dir string, files []worm.FileStatus) error {
	img, err := os.Open(filepath.Join(dir, "image.ext4"))
	if err != nil {
		return err
	}
	defer img.Close()
	fi, err := img.Stat()
	if err != nil {
		return err
	}
	bad := 0
	for _, f := range files {
		real, err := os.ReadFile(filepath.Join(dir, "store", f.Path))
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		content, err := audit.ReadImageFile(img, fi.Size(), f.Inode)
		if err != nil {
			return fmt.Errorf("%s: reading the image: %w", f.Path, err)
		}
		n := min(len(real), len(content))
		for i := 0; i < n; i++ {
			if real[i] != content[i] {
				fmt.Printf("  verify: %s: the real log differs from the file at byte %d (real %q, file %q)\n",
					f.Path, i, real[i:min(i+16, n)], content[i:min(i+16, n)])
				bad++
				break
			}
		}
		if len(real) > len(content) {
			fmt.Printf("  verify: %s: real log of %d bytes, the file holds %d\n", f.Path, len(real), len(content))
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("verify: %d real logs are not a prefix of their files", bad)
	}
	fmt.Printf("  verify: %d real logs are prefixes of their files\n", len(files))
	return nil
}
