// Command profserve runs the indelible command line in-process with a CPU
// profile (and optionally a heap profile and an execution trace) around it,
// for bench/e2e/run.sh. It exists so that the benchmark can profile
// `indelible serve` under load without a profiling switch in the real binary.
//
//	profserve -cpuprofile cpu.pprof [-memprofile heap.pprof] [-trace t.out] [-record requests.trace] [-latency FILE] -- serve DIR --listen unix:SOCK
//	profserve [-delay-write D] [-delay-small-write D] [-delay-flush D] [-flush-sync FILE] -latency FILE -- serve IMAGE --listen unix:SOCK
//
// -record writes every request the host completes (writes with their data,
// flushes, trims) to a trace that bench/replay plays back against a copy of
// the device directory as it was before serving. -latency times every
// request the device serves and writes, per kind of request, the count,
// mean, p50, p90, p99 and total time to FILE when the command returns.
//
// The -delay-* and -flush-sync flags slow the served device down in one
// chosen way (shape.go): served over a plain image, they measure what one
// of the WORM device's costs alone takes from the host's throughput.
//
// The profiles are written when the command returns, so stop the server with
// SIGINT or SIGTERM (it then shuts down gracefully), not SIGKILL.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/internal/cli"
)

func main() {
	cpu := flag.String("cpuprofile", "", "write a CPU profile to `file`")
	mem := flag.String("memprofile", "", "write a heap profile to `file` when the command returns")
	tr := flag.String("trace", "", "write an execution trace to `file`")
	record := flag.String("record", "", "record the host's requests to `file` (blockdev trace, for bench/replay)")
	latency := flag.String("latency", "", "time the device's requests and write a table per kind to `file` when the command returns")
	blockRate := flag.Int("blockprofile-rate", 0, "if > 0, record blocking events (runtime.SetBlockProfileRate) and write block.pprof and mutex.pprof next to -cpuprofile")
	var sh shape
	flag.DurationVar(&sh.delayWrite, "delay-write", 0, "wait this long after each write larger than 4 KiB (and each FUA write)")
	flag.DurationVar(&sh.delaySmallWrite, "delay-small-write", 0, "wait this long after each write of 4 KiB or less")
	flag.DurationVar(&sh.delayFlush, "delay-flush", 0, "wait this long after each flush")
	flag.StringVar(&sh.flushSync, "flush-sync", "", "after each flush, rewrite 4 KiB of `file` and fdatasync it (one more disk flush, as the written-block map costs)")
	flag.Parse()
	code, err := run(*cpu, *mem, *tr, *record, *latency, *blockRate, sh, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "profserve:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(cpu, mem, tr, record, latency string, blockRate int, sh shape, args []string) (int, error) {
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, err
		}
		defer pprof.StopCPUProfile()
	}
	if tr != "" {
		f, err := os.Create(tr)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return 0, err
		}
		defer trace.Stop()
	}
	if blockRate > 0 {
		runtime.SetBlockProfileRate(blockRate)
		runtime.SetMutexProfileFraction(1)
	}
	env := cli.StdEnv()
	var timed *timedDevice
	if record != "" || latency != "" || sh.active() {
		env.WrapDevice = func(dev blockdev.Device) (blockdev.Device, error) {
			if sh.active() {
				shaped, err := newShapedDevice(dev, sh)
				if err != nil {
					return nil, err
				}
				dev = shaped
			}
			if record != "" {
				f, err := os.Create(record)
				if err != nil {
					return nil, err
				}
				r, err := blockdev.NewRecorder(dev, f)
				if err != nil {
					f.Close()
					return nil, err
				}
				dev = r
			}
			if latency != "" {
				timed = newTimedDevice(dev)
				dev = timed
			}
			return dev, nil
		}
	}
	code := cli.Main(append([]string{"indelible"}, args...), env)
	if timed != nil {
		if err := writeReport(latency, timed); err != nil {
			return code, err
		}
	}
	if blockRate > 0 && cpu != "" {
		for _, name := range []string{"block", "mutex"} {
			if err := writeProfile(name, cpu+"."+name); err != nil {
				return code, err
			}
		}
	}
	if mem != "" {
		runtime.GC()
		if err := writeProfile("heap", mem); err != nil {
			return code, err
		}
	}
	return code, nil
}

// writeReport writes the request-time table (bench/internal/reqtime) to path.
func writeReport(path string, t *timedDevice) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := t.times.Report(f, ""); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
