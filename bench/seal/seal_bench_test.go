// Package sealbench measures the sealed-log store: sealing throughput
// (appends/s with per-append durability and with group commit) and
// verification throughput (MB/s of real log verified on one core).
// bench/seal/run.sh runs it; RESULTS.md records what it showed.
package sealbench

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/seal"
	"github.com/indelible-worm/indelible/worm"
)

type fixture struct{ store, dev, aud string }

func newFixture(b *testing.B, keyBytes int64) fixture {
	b.Helper()
	d := b.TempDir()
	f := fixture{filepath.Join(d, "store"), filepath.Join(d, "device.key"), filepath.Join(d, "auditor.key")}
	if err := seal.Create(f.store, f.dev, f.aud, keyBytes, seal.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	return f
}

var sizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"4KiB", 4 << 10}, {"1MiB", 1 << 20}}

// BenchmarkAppend seals b.N appends. "sync" is one appender with
// per-append durability; "group" is 16 appenders (one file each) sharing
// commits within GroupCommit = 2 ms, as a busy device would.
func BenchmarkAppend(b *testing.B) {
	for _, sz := range sizes {
		for _, mode := range []string{"sync", "group"} {
			b.Run(sz.name+"/"+mode, func(b *testing.B) {
				f := newFixture(b, seal.KeyBytesFor(int64(b.N)+64, 0))
				o := seal.Options{}
				writers := 1
				if mode == "group" {
					o.GroupCommit = 2 * time.Millisecond
					writers = 16
				}
				s, err := seal.Open(f.store, f.dev, o)
				if err != nil {
					b.Fatal(err)
				}
				data := make([]byte, sz.n)
				for i := range data {
					data[i] = byte('a' + i%26)
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				b.SetBytes(int64(sz.n))
				b.ResetTimer()
				start := time.Now()
				cpu0 := cpuTime()
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						ref := seal.FileRef{ID: uint64(100 + w), Path: fmt.Sprintf("w%d.log", w)}
						for next.Add(1) <= int64(b.N) {
							if err := s.Append(ref, s.Watermark(ref.ID), data); err != nil {
								b.Error(err)
								return
							}
						}
					}(w)
				}
				wg.Wait()
				el := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/el.Seconds(), "appends/s")
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/append")
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkAppendBatch seals b.N appends as batches of 16 (one per file,
// the way the device commits every file that became coherent), each batch
// durable before the next: how fast the device core can seal.
func BenchmarkAppendBatch(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			f := newFixture(b, seal.KeyBytesFor(int64(b.N)+64, 0))
			s, err := seal.Open(f.store, f.dev, seal.Options{})
			if err != nil {
				b.Fatal(err)
			}
			data := make([]byte, sz.n)
			ops := make([]seal.AppendOp, 16)
			for i := range ops {
				ops[i] = seal.AppendOp{File: seal.FileRef{ID: uint64(100 + i), Path: fmt.Sprintf("b%d.log", i)}, Data: data}
			}
			b.SetBytes(int64(sz.n))
			b.ResetTimer()
			cpu0 := cpuTime()
			for done := 0; done < b.N; done += len(ops) {
				k := min(len(ops), b.N-done)
				for i := range ops[:k] {
					ops[i].Off = s.Watermark(ops[i].File.ID)
				}
				if err := s.AppendBatch(ops[:k]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/append")
			b.StopTimer()
			s.Close()
		})
	}
}

// BenchmarkAppendLarge seals one 64 MiB append at a time, durable before
// the next: the store's best case (a single writer of large appends, such
// as `indelible seal-append` of a big file). The store seals such an
// append as 4 MiB entries whose MACs run on every core. The device never
// hands the store more than a pass at a time: BenchmarkDevicePass.
func BenchmarkAppendLarge(b *testing.B) {
	const n = 64 << 20
	f := newFixture(b, seal.KeyBytesFor(int64(b.N)*16+64, 0))
	s, err := seal.Open(f.store, f.dev, seal.Options{})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, n)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	ref := seal.FileRef{ID: 100, Path: "large.log"}
	b.SetBytes(n)
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if err := s.Append(ref, s.Watermark(ref.ID), data); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(n)*float64(b.N)/1e6/cpu.Seconds(), "MB/cpu-s")
	s.Close()
}

// BenchmarkDevicePass seals the way the device does when the host has
// written faster than it seals: pass after pass, each reading the coherent
// bytes of its files from the image (the host's writes, still in the page
// cache) and sealing them as one batch, durable before the next pass. A
// pass takes at most worm.SealPassLimits: up to 4 MiB of one file, 8 MiB of
// all files. "1file" is one log written at full speed, "16files" sixteen.
// Its MB/s is the device's sealing capacity, the figure to hold against
// the NBD bench's write throughput (bench/seal/vs-nbd.sh). The image lives
// beside the store ($TMPDIR), as the device directory keeps them.
func BenchmarkDevicePass(b *testing.B) {
	perFile, perPass := worm.SealPassLimits()
	for _, files := range []int{1, 16} {
		b.Run(fmt.Sprintf("%dfile%s", files, map[bool]string{true: "s"}[files > 1]), func(b *testing.B) {
			chunk := min(perFile, perPass/int64(files))
			const imageBytes = 256 << 20
			dir := b.TempDir()
			img, err := os.Create(filepath.Join(dir, "image"))
			if err != nil {
				b.Fatal(err)
			}
			defer img.Close()
			fill := make([]byte, 1<<20)
			for i := range fill {
				fill[i] = byte(' ' + i%90)
			}
			for off := int64(0); off < imageBytes; off += int64(len(fill)) {
				if _, err := img.WriteAt(fill, off); err != nil {
					b.Fatal(err)
				}
			}
			// One entry per file and pass: a pass takes at most 4 MiB of
			// a file, the most the store seals in one entry.
			f := newFixture(b, seal.KeyBytesFor(int64(b.N)*int64(files)+64, 0))
			s, err := seal.Open(f.store, f.dev, seal.Options{})
			if err != nil {
				b.Fatal(err)
			}
			slab := make([]byte, perPass)
			ops := make([]seal.AppendOp, files)
			for i := range ops {
				ops[i].File = seal.FileRef{ID: uint64(100 + i), Path: fmt.Sprintf("p%d.log", i)}
			}
			b.SetBytes(chunk * int64(files))
			b.ResetTimer()
			cpu0 := cpuTime()
			pos := int64(0)
			for n := 0; n < b.N; n++ {
				buf := slab
				for i := range ops {
					if pos+chunk > imageBytes {
						pos = 0
					}
					if _, err := img.ReadAt(buf[:chunk], pos); err != nil {
						b.Fatal(err)
					}
					ops[i].Off, ops[i].Data = s.Watermark(ops[i].File.ID), buf[:chunk]
					buf, pos = buf[chunk:], pos+chunk
				}
				if err := s.AppendBatch(ops); err != nil {
					b.Fatal(err)
				}
			}
			cpu := cpuTime() - cpu0
			b.StopTimer()
			b.ReportMetric(float64(chunk*int64(files))*float64(b.N)/1e6/cpu.Seconds(), "MB/cpu-s")
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkVerify verifies a store of 256 MiB of real log in appends of each
// size, on one core (GOMAXPROCS=1 while it runs).
func BenchmarkVerify(b *testing.B) {
	const total = 256 << 20
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			n := total / sz.n
			if sz.n == 64 {
				n = (16 << 20) / 64 // 262144 entries: enough for a stable figure
			}
			f := buildStore(b, n, sz.n)
			prev := runtime.GOMAXPROCS(1)
			defer runtime.GOMAXPROCS(prev)
			b.SetBytes(int64(n * sz.n))
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				sum, err := seal.Verify(f.store, seal.VerifyOptions{AuditorKey: f.aud})
				if err != nil || !sum.OK() || sum.Bytes != int64(n*sz.n) {
					b.Fatalf("%v %v", sum, err)
				}
			}
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			// On a shared machine wall time includes other tenants' load;
			// bytes per CPU-second is what one core of our own achieves.
			b.ReportMetric(float64(n*sz.n)*float64(b.N)/1e6/cpu.Seconds(), "MB/cpu-s")
		})
	}
}

// buildStore seals n appends of size bytes over 64 files from 64
// goroutines, so that commits are shared and building stays quick.
// With SEAL_BENCH_DIR set, stores are kept there and reused by later runs.
func buildStore(b *testing.B, n, size int) fixture {
	b.Helper()
	var f fixture
	if d := os.Getenv("SEAL_BENCH_DIR"); d != "" {
		d = filepath.Join(d, fmt.Sprintf("verify-%d-%d", n, size))
		f = fixture{filepath.Join(d, "store"), filepath.Join(d, "device.key"), filepath.Join(d, "auditor.key")}
		if _, err := os.Stat(filepath.Join(d, "complete")); err == nil {
			warm(f.store)
			return f
		}
		os.RemoveAll(d)
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := seal.Create(f.store, f.dev, f.aud, seal.KeyBytesFor(int64(n)+1024, 0), seal.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		defer os.WriteFile(filepath.Join(d, "complete"), nil, 0o644)
	} else {
		f = newFixture(b, seal.KeyBytesFor(int64(n)+1024, 0))
	}
	s, err := seal.Open(f.store, f.dev, seal.Options{GroupCommit: 5 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(' ' + i%90)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ref := seal.FileRef{ID: uint64(1000 + w), Path: fmt.Sprintf("d%d/w%d.log", w%8, w)}
			for next.Add(1) <= int64(n) {
				if err := s.Append(ref, s.Watermark(ref.ID), data); err != nil {
					b.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	warm(f.store)
	return f
}

// warm reads the store into the page cache: the benchmark measures
// verification, not the disk.
func warm(dir string) {
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			os.ReadFile(p)
		}
		return nil
	})
}

// BenchmarkSHA256 is the ceiling for verification: plain SHA-256 over 4 KiB
// buffers on one core (hardware SHA extensions when the CPU has them).
func BenchmarkSHA256(b *testing.B) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	buf := make([]byte, 4<<10)
	h := sha256.New()
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		h.Reset()
		h.Write(buf)
		h.Sum(nil)
	}
}

// cpuTime is the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
