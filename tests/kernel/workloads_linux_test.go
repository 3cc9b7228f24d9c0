package kernel

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Honest ways of appending that the other tests do not take: direct I/O,
// space reserved ahead with fallocate, and mount options that change when
// and how the kernel writes (lazytime, sync, dirsync, a one-second commit
// interval, no delayed allocation). Each must seal exactly what the host
// wrote and raise nothing.

// honestRecords returns n text records of varying length.
func honestRecords(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat(line(i), 1+i%37)
	}
	return out
}

// alignedBuffer returns n bytes aligned for O_DIRECT (page-aligned:
// anonymous memory), released when the test ends.
func alignedBuffer(t *testing.T, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

// TestDirectIOAppends: a writer that appends whole blocks with O_DIRECT
// (the kernel allocates unwritten extents, writes the data straight to
// the device and converts the extents when the write completes; with
// data=journal it falls back to the page cache), then a partial last
// block through the page cache, as programs that write aligned bodies do.
func TestDirectIOAppends(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			bs := int(k.blockSize())
			var want []byte
			for _, r := range honestRecords(400) {
				want = append(want, r...)
			}
			whole := len(want) / bs * bs
			buf := alignedBuffer(t, 16*bs)
			fd, err := unix.Open(p, unix.O_WRONLY|unix.O_APPEND|unix.O_DIRECT, 0)
			if err != nil {
				t.Fatalf("open O_DIRECT: %v", err)
			}
			for off, i := 0, 0; off < whole; i++ {
				n := min(whole-off, (1+i%16)*bs)
				copy(buf, want[off:off+n])
				if _, err := unix.Write(fd, buf[:n]); err != nil {
					unix.Close(fd)
					t.Fatalf("direct append at %d: %v%s", off, err, k.eventSummary())
				}
				off += n
				if i%3 == 0 {
					unix.Fsync(fd)
				}
			}
			unix.Close(fd)
			appendFile(t, p, want[whole:], true)
			k.waitSealed(sealTimeout)
			k.noIndicators()
			if got := k.realLog(k.logs[0]); !bytes.Equal(got, want) {
				t.Fatalf("real log: %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
		})
	}
}

// TestPreallocatedAppends: space reserved past the end of the file
// (fallocate with FALLOC_FL_KEEP_SIZE, as some loggers do) is mapped by
// unwritten extents before any byte is appended into it.
func TestPreallocatedAppends(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			var want []byte
			for i, r := range honestRecords(300) {
				if i%100 == 0 {
					f, err := os.OpenFile(p, os.O_WRONLY, 0)
					if err != nil {
						t.Fatal(err)
					}
					err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, int64(len(want)), 1<<20)
					f.Close()
					if err != nil {
						t.Fatalf("fallocate: %v", err)
					}
				}
				appendFile(t, p, r, i%7 == 0)
				want = append(want, r...)
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
			if got := k.realLog(k.logs[0]); !bytes.Equal(got, want) {
				t.Fatalf("real log: %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
		})
	}
}

// TestMountOptionAppends: mount options a host may choose for a log
// volume. Each changes when inodes, data and commits reach the device.
func TestMountOptionAppends(t *testing.T) {
	for _, opts := range []string{"lazytime", "sync", "dirsync", "commit=1", "nodelalloc", "noauto_da_alloc", "nobarrier"} {
		for _, mode := range []string{"ordered", "journal"} {
			t.Run(opts+"/"+mode, func(t *testing.T) {
				k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, mountOpts: opts})
				p := k.path(k.logs[0])
				var want []byte
				for i, r := range honestRecords(150) {
					appendFile(t, p, r, i%5 == 0)
					want = append(want, r...)
					if i%50 == 49 {
						// Other work on the volume between appends.
						other := fmt.Sprintf("%s.other%d", p, i)
						if err := os.WriteFile(other, bytes.Repeat([]byte("x"), 10000), 0o644); err != nil {
							t.Fatal(err)
						}
						os.Remove(other)
					}
				}
				k.waitSealed(sealTimeout)
				k.noIndicators()
				if got := k.realLog(k.logs[0]); !bytes.Equal(got, want) {
					t.Fatalf("real log: %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
				}
			})
		}
	}
}
