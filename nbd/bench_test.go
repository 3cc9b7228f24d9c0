package nbd_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/nbd"
	"github.com/indelible-worm/indelible/nbd/nbdtest"
)

// pipelinedLoad runs n requests of one kind through conn with up to depth
// in flight, the way fio does, and returns when all are answered.
func pipelinedLoad(tb testing.TB, c net.Conn, br *bufio.Reader, typ nbd.Cmd, size uint32, depth, n int, span uint64) {
	window := make(chan struct{}, depth)
	errc := make(chan error, 1)
	go func() {
		payload := make([]byte, size)
		hdr := make([]byte, 0, 28)
		bw := bufio.NewWriterSize(c, 256<<10)
		for i := range n {
			window <- struct{}{}
			off := (uint64(i) * uint64(size)) % span
			hdr = nbd.AppendRequest(hdr[:0], nbd.Request{Magic: nbd.MagicRequest, Type: typ, Cookie: uint64(i), Offset: off, Length: size})
			bw.Write(hdr)
			if typ == nbd.CmdWrite {
				bw.Write(payload)
			}
			if len(window) == depth || i == n-1 {
				if err := bw.Flush(); err != nil {
					errc <- err
					return
				}
			}
		}
		errc <- nil
	}()
	var h [16]byte
	data := make([]byte, size)
	for range n {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			tb.Fatal(err)
		}
		if binary.BigEndian.Uint32(h[4:]) != 0 {
			tb.Fatalf("errno %d", binary.BigEndian.Uint32(h[4:]))
		}
		if typ == nbd.CmdRead {
			if _, err := io.ReadFull(br, data); err != nil {
				tb.Fatal(err)
			}
		}
		<-window
	}
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
}

func loadConn(tb testing.TB, sock string) (net.Conn, *bufio.Reader) {
	rc := dialRaw(tb, sock)
	rc.c.SetDeadline(timeZero)
	rc.start(false)
	return rc.c, rc.br
}

func benchServer(b *testing.B, typ nbd.Cmd, size uint32, depth int) {
	const span = 64 << 20
	srv := nbdtest.Start(b, nbd.Config{Exports: []nbd.Export{{Device: &memDevice{data: make([]byte, span)}}}})
	c, br := loadConn(b, srv.Socket)
	pipelinedLoad(b, c, br, typ, size, depth, 1000, span) // warm the pools
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	pipelinedLoad(b, c, br, typ, size, depth, b.N, span)
}

func BenchmarkRead4KQD16(b *testing.B)  { benchServer(b, nbd.CmdRead, 4096, 16) }
func BenchmarkWrite4KQD16(b *testing.B) { benchServer(b, nbd.CmdWrite, 4096, 16) }
func BenchmarkRead64KQD4(b *testing.B)  { benchServer(b, nbd.CmdRead, 64<<10, 4) }
func BenchmarkWrite64KQD4(b *testing.B) { benchServer(b, nbd.CmdWrite, 64<<10, 4) }
func BenchmarkWrite64KQD1(b *testing.B) { benchServer(b, nbd.CmdWrite, 64<<10, 1) }
func BenchmarkRead4KQD1(b *testing.B)   { benchServer(b, nbd.CmdRead, 4096, 1) }
func BenchmarkWrite1MQD16(b *testing.B) { benchServer(b, nbd.CmdWrite, 1<<20, 16) }

// TestSteadyStateAllocations checks that serving requests does not allocate
// per request once the buffer pools are warm (a few allocations from the
// runtime and test client are tolerated, not one per request).
func TestSteadyStateAllocations(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	const span = 16 << 20
	srv := nbdtest.Start(t, nbd.Config{Exports: []nbd.Export{{Device: &memDevice{data: make([]byte, span)}}}})
	c, br := loadConn(t, srv.Socket)
	for _, tc := range []struct {
		typ  nbd.Cmd
		size uint32
	}{{nbd.CmdRead, 4096}, {nbd.CmdWrite, 4096}, {nbd.CmdRead, 64 << 10}, {nbd.CmdWrite, 64 << 10}} {
		pipelinedLoad(t, c, br, tc.typ, tc.size, 16, 2000, span)
		const n = 5000
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		pipelinedLoad(t, c, br, tc.typ, tc.size, 16, n, span)
		runtime.ReadMemStats(&after)
		// The load generator itself allocates a few objects per run.
		if per := float64(after.Mallocs-before.Mallocs) / n; per > 0.05 {
			t.Errorf("%v %d: %.2f allocations per request", tc.typ, tc.size, per)
		}
	}
}

var timeZero time.Time
