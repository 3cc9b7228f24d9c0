package nbd_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/nbd"
)

// gatedIO holds every read (with writes set, every write instead) until
// released, and counts how many are in the device at once and how many
// bytes they asked for.
type gatedIO struct {
	blockdev.Device
	writes  bool
	release chan struct{}
	inside  atomic.Int32
	most    atomic.Int32
	bytes   atomic.Int64
}

func (d *gatedIO) hold(n int) {
	in := d.inside.Add(1)
	for m := d.most.Load(); in > m && !d.most.CompareAndSwap(m, in); m = d.most.Load() {
	}
	d.bytes.Add(int64(n))
	<-d.release
	d.inside.Add(-1)
}

func (d *gatedIO) ReadAt(p []byte, off int64) (int, error) {
	if !d.writes {
		d.hold(len(p))
	}
	return d.Device.ReadAt(p, off)
}

func (d *gatedIO) WriteAt(p []byte, off int64) (int, error) {
	if d.writes {
		d.hold(len(p))
	}
	return d.Device.WriteAt(p, off)
}

// CACHE reads through a buffer of its own: it is counted against the
// connection's byte budget like a READ, so a client sending many CACHEs to a
// slow device cannot make the server hold more than MaxBufferBytes; and one
// CACHE reads at most 32 MiB however long its range.
func TestCacheCountsAgainstBudget(t *testing.T) {
	checkGoroutines(t)
	dev := &gatedIO{Device: newFile(t, 8<<30), release: make(chan struct{})}
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(dev.release) }) }
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: dev, MaxPayload: 1 << 20}}, MaxBufferBytes: 2 << 20})
	t.Cleanup(releaseAll) // runs before the server's shutdown, which waits for the reads
	c := dialRaw(t, srv.Socket)
	c.start(false)
	const n = 8
	for i := range n {
		c.request(0, nbd.CmdCache, uint64(i), uint64(i)<<30, 1<<30, nil)
	}
	testenv.WaitFor(t, 10*time.Second, "two CACHEs in the device", func() bool { return dev.inside.Load() == 2 })
	time.Sleep(100 * time.Millisecond) // room for a third, if the budget let one in
	if m := dev.most.Load(); m != 2 {
		t.Fatalf("%d CACHE reads in the device at once with a 2 MiB budget and 1 MiB chunks, want 2", m)
	}
	releaseAll()
	for range n {
		if r := c.readReply(0); r.errno != 0 {
			t.Fatalf("CACHE: %v", r.errno)
		}
	}
	if got, most := dev.bytes.Load(), int64(n*nbd.HardMaxPayload); got > most {
		t.Fatalf("%d CACHEs of 1 GiB read %d bytes, want at most %d", n, got, most)
	}
}

// A client that stops reading its replies is disconnected once a reply
// write has waited replyWriteTimeout, and its connection slot, workers and
// buffers are freed: with MaxConns 1 another client then gets in.
func TestClientThatStopsReading(t *testing.T) {
	checkGoroutines(t)
	defer nbd.SetReplyWriteTimeout(300 * time.Millisecond)()
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: newFile(t, 256<<20)}}, MaxConns: 1})
	stuck := dialRaw(t, srv.Socket)
	stuck.start(false)
	for i := range 8 { // 256 MiB of replies: far more than the socket buffers hold
		stuck.request(0, nbd.CmdRead, uint64(i), uint64(i)*(32<<20), 32<<20, nil)
	}
	testenv.WaitFor(t, 30*time.Second, "a second client to be served", func() bool {
		c, ok := tryDial(t, srv.Socket)
		if !ok {
			return false
		}
		defer c.c.Close()
		c.start(false)
		c.request(0, nbd.CmdRead, 1, 0, 4096, nil)
		r := c.readReply(4096)
		return r.errno == 0
	})
}

// Shutdown that runs out of time closes the connections but returns only
// once the device calls in progress have returned: the caller closes the
// device next, and must not do so under a running write.
func TestShutdownWaitsForDeviceCalls(t *testing.T) {
	checkGoroutines(t)
	f := &blockdev.Faulty{Device: newFile(t, 1<<20)}
	dev := &gatedDevice{Faulty: f, entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: dev}}})
	c := dialRaw(t, srv.Socket)
	c.start(false)
	c.request(fua, nbd.CmdWrite, 1, 0, 4096, make([]byte, 4096))
	<-dev.entered
	var mu sync.Mutex
	returned := false
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := srv.Shutdown(ctx)
		mu.Lock()
		returned = true
		mu.Unlock()
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	early := returned
	mu.Unlock()
	if early {
		t.Fatal("Shutdown returned while a device write was still running")
	}
	close(dev.release)
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the deadline's error", err)
	}
}

// tryDial connects and waits for the greeting's first byte; ok is false
// when the server refuses the connection (closes it at once).
func tryDial(t *testing.T, sock string) (*rawClient, bool) {
	nc, err := net.Dial("unix", sock)
	if err != nil {
		return nil, false
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(nc)
	if _, err := br.Peek(1); err != nil {
		nc.Close()
		return nil, false
	}
	return &rawClient{t: t, c: nc, br: br}, true
}

// A client that starts a request and stops sending is disconnected once the
// rest is overdue (requestStallBase plus the payload at minPayloadRate), so
// it cannot hold a request slot and a payload buffer for as long as it stays
// connected; a client idle between requests is left alone.
func TestStalledRequestDisconnects(t *testing.T) {
	checkGoroutines(t)
	t.Cleanup(nbd.SetRequestStall(300*time.Millisecond, 1<<30)) // after the server's shutdown: its readers use them
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: newFile(t, 64<<20)}}})
	idle := dialRaw(t, srv.Socket)
	idle.start(false)
	cases := map[string]func(c *rawClient){
		"half a header": func(c *rawClient) {
			hdr := nbd.AppendRequest(nil, nbd.Request{Magic: nbd.MagicRequest, Type: nbd.CmdRead, Cookie: 1, Length: 4096})
			c.write(hdr[:10])
		},
		"half a WRITE payload": func(c *rawClient) {
			hdr := nbd.AppendRequest(nil, nbd.Request{Magic: nbd.MagicRequest, Type: nbd.CmdWrite, Cookie: 1, Length: 1 << 20})
			c.write(append(hdr, make([]byte, 512<<10)...))
		},
		"half a refused WRITE payload": func(c *rawClient) { // past the end: its payload is read and dropped
			hdr := nbd.AppendRequest(nil, nbd.Request{Magic: nbd.MagicRequest, Type: nbd.CmdWrite, Cookie: 1, Offset: 64 << 20, Length: 1 << 20})
			c.write(append(hdr, make([]byte, 512<<10)...))
		},
	}
	for name, stall := range cases {
		t.Run(name, func(t *testing.T) {
			c := dialRaw(t, srv.Socket)
			c.start(false)
			stall(c)
			start := time.Now()
			c.expectClosed()
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("disconnected after %v, want about the 0.3 s allowed", d)
			}
		})
	}
	idle.request(0, nbd.CmdRead, 2, 0, 4096, nil)
	if r := idle.readReply(4096); r.errno != 0 || r.cookie != 2 {
		t.Fatalf("the idle client's READ after the others were dropped: %+v", r)
	}
}

// The payload bytes all connections hold together are bounded by
// MaxTotalBufferBytes, not only each connection's by MaxBufferBytes: three
// clients that may each hold two 1 MiB WRITEs get three into the device
// with a 3 MiB total, and the rest once those are answered.
func TestServerWideBufferBudget(t *testing.T) {
	checkGoroutines(t)
	dev := &gatedIO{Device: newFile(t, 64<<20), writes: true, release: make(chan struct{})}
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(dev.release) }) }
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: dev, MaxPayload: 1 << 20}},
		MaxBufferBytes: 2 << 20, MaxTotalBufferBytes: 3 << 20})
	t.Cleanup(releaseAll) // runs before the server's shutdown, which waits for the writes
	var clients []*rawClient
	for i := range 3 {
		c := dialRaw(t, srv.Socket)
		c.start(false)
		clients = append(clients, c)
		for k := range 2 {
			go c.c.Write(append(nbd.AppendRequest(nil, nbd.Request{Magic: nbd.MagicRequest, Type: nbd.CmdWrite,
				Cookie: uint64(k), Offset: uint64(2*i+k) << 20, Length: 1 << 20}), make([]byte, 1<<20)...))
		}
	}
	testenv.WaitFor(t, 10*time.Second, "three WRITEs in the device", func() bool { return dev.inside.Load() >= 3 })
	time.Sleep(200 * time.Millisecond) // room for a fourth, if the budget let one in
	if m := dev.most.Load(); m != 3 {
		t.Fatalf("%d 1 MiB WRITEs in the device at once with a 3 MiB server-wide budget, want 3", m)
	}
	releaseAll()
	for _, c := range clients {
		for range 2 {
			if r := c.readReply(0); r.errno != 0 {
				t.Fatalf("WRITE: %v", r.errno)
			}
		}
	}
}

// A server-wide budget below one connection's cannot serve a request of
// that size: refused at NewServer, not found out as a hung connection.
func TestServerWideBudgetBelowConnections(t *testing.T) {
	_, err := nbd.NewServer(nbd.Config{Exports: []nbd.Export{{Device: newFile(t, 1<<20)}},
		MaxBufferBytes: 64 << 20, MaxTotalBufferBytes: 32 << 20})
	if err == nil || !strings.Contains(err.Error(), "MaxTotalBufferBytes") {
		t.Fatalf("NewServer: %v, want an error naming MaxTotalBufferBytes", err)
	}
}
