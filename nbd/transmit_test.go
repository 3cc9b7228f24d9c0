package nbd_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"github.com/indelible-worm/indelible/internal/testenv"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/nbd"
	"github.com/indelible-worm/indelible/nbd/nbdtest"
)

const (
	fua      = nbd.CmdFlagFUA
	noHole   = nbd.CmdFlagNoHole
	df       = nbd.CmdFlagDF
	fastZero = nbd.CmdFlagFastZero
)

// TestMalformedRequests sends each bad request on a live connection and
// checks the protocol's answer, then that the same connection still works
// (the stream stayed in sync: a WRITE's payload was consumed).
func TestMalformedRequests(t *testing.T) {
	checkGoroutines(t)
	const size = 1 << 20
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: newFile(t, size), MaxPayload: 64 << 10}}})
	type tc struct {
		name    string
		flags   nbd.CmdFlags
		typ     nbd.Cmd
		off     uint64
		length  uint32
		payload int // bytes of WRITE payload actually sent
		want    nbd.Errno
	}
	cases := []tc{
		{"read past end", 0, nbd.CmdRead, size - 512, 1024, 0, nbd.EINVAL},
		{"read offset past end", 0, nbd.CmdRead, 1 << 62, 512, 0, nbd.EINVAL},
		{"read offset+len overflows", 0, nbd.CmdRead, ^uint64(0) - 511, 512, 0, nbd.EINVAL},
		{"write past end", 0, nbd.CmdWrite, size, 512, 512, nbd.ENOSPC},
		{"trim past end", 0, nbd.CmdTrim, size - 512, 4096, 0, nbd.EINVAL},
		{"write zeroes past end", 0, nbd.CmdWriteZeroes, size, 4096, 0, nbd.ENOSPC},
		{"cache past end", 0, nbd.CmdCache, size, 512, 0, nbd.EINVAL},
		{"misaligned read offset", 0, nbd.CmdRead, 1, 512, 0, nbd.EINVAL},
		{"misaligned read length", 0, nbd.CmdRead, 0, 100, 0, nbd.EINVAL},
		{"misaligned write", 0, nbd.CmdWrite, 0, 100, 100, nbd.EINVAL},
		{"misaligned trim", 0, nbd.CmdTrim, 3, 512, 0, nbd.EINVAL},
		{"read over max payload", 0, nbd.CmdRead, 0, 128 << 10, 0, nbd.EINVAL},
		{"write over max payload", 0, nbd.CmdWrite, 0, 128 << 10, 128 << 10, nbd.EINVAL},
		{"unknown command", 0, 99, 0, 512, 0, nbd.EINVAL},
		{"block status not negotiated", 0, nbd.CmdBlockStatus, 0, 512, 0, nbd.EINVAL},
		{"unknown flag", 1 << 9, nbd.CmdRead, 0, 512, 0, nbd.EINVAL},
		{"NO_HOLE on read", noHole, nbd.CmdRead, 0, 512, 0, nbd.EINVAL},
		{"DF without structured replies", df, nbd.CmdRead, 0, 512, 0, nbd.EINVAL},
		{"FAST_ZERO on write", fastZero, nbd.CmdWrite, 0, 512, 512, nbd.EINVAL},
		{"flush with offset", 0, nbd.CmdFlush, 512, 0, 0, nbd.EINVAL},
		{"flush with length", 0, nbd.CmdFlush, 0, 512, 0, nbd.EINVAL},
		{"zero-length read", 0, nbd.CmdRead, 0, 0, 0, 0},
		{"zero-length write", 0, nbd.CmdWrite, 512, 0, 0, 0},
		{"zero-length trim", 0, nbd.CmdTrim, 512, 0, 0, 0},
		{"zero-length write at end", 0, nbd.CmdWrite, size, 0, 0, 0},
		{"fast zero without holes, zero-range not yet seen", fastZero | noHole, nbd.CmdWriteZeroes, 0, 4096, 0, nbd.ENOTSUP},
		{"FUA on read is accepted", fua, nbd.CmdRead, 0, 512, 0, 0},
		{"FUA write", fua, nbd.CmdWrite, 0, 512, 512, 0},
		{"write zeroes NO_HOLE FUA", noHole | fua, nbd.CmdWriteZeroes, 0, 8192, 0, 0},
		{"cache", 0, nbd.CmdCache, 0, size, 0, 0},
		{"flush", 0, nbd.CmdFlush, 0, 0, 0, 0},
	}
	c := dialRaw(t, srv.Socket)
	c.start(false)
	for i, tc := range cases {
		cookie := uint64(1000 + i)
		c.request(tc.flags, tc.typ, cookie, tc.off, tc.length, make([]byte, tc.payload))
		dataLen := 0
		if tc.typ == nbd.CmdRead {
			dataLen = int(tc.length)
		}
		r := c.readReply(dataLen)
		if r.errno != tc.want || r.cookie != cookie {
			t.Errorf("%s: errno %v cookie %d, want %v cookie %d", tc.name, r.errno, r.cookie, tc.want, cookie)
		}
		// In sync: a plain read right after gets its own reply.
		c.request(0, nbd.CmdRead, 1, 0, 512, nil)
		if r := c.readReply(512); r.errno != 0 || r.cookie != 1 {
			t.Fatalf("%s: following read got %+v; stream out of sync", tc.name, r)
		}
	}
}

func TestStructuredErrors(t *testing.T) {
	checkGoroutines(t)
	const size = 1 << 20
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: newFile(t, size)}}})
	c := dialRaw(t, srv.Socket)
	c.start(true)
	// Errors for READ must be structured ERROR chunks with a message.
	c.request(0, nbd.CmdRead, 1, size, 512, nil)
	r := c.readReply(0)
	if !r.structured || r.typ != nbd.ReplyTypeError || r.flags&nbd.ReplyFlagDone == 0 || r.errno != nbd.EINVAL || len(r.data) < 6 {
		t.Fatalf("READ past end: %+v", r)
	}
	// DF is valid once structured replies are on; a read is one chunk.
	c.request(df, nbd.CmdRead, 2, 0, 64<<10, nil)
	r = c.readReply(0)
	if r.typ != nbd.ReplyTypeOffsetData || r.flags != nbd.ReplyFlagDone || len(r.data) != 8+64<<10 {
		t.Fatalf("DF read: type %d flags %d len %d", r.typ, r.flags, len(r.data))
	}
	// Zero-length read: a lone NONE chunk.
	c.request(0, nbd.CmdRead, 3, 0, 0, nil)
	if r = c.readReply(0); r.typ != nbd.ReplyTypeNone || r.flags != nbd.ReplyFlagDone || len(r.data) != 0 {
		t.Fatalf("zero-length structured read: %+v", r)
	}
	c.request(0, nbd.CmdWrite, 4, size, 512, make([]byte, 512))
	if r = c.readReply(0); r.errno != nbd.ENOSPC {
		t.Fatalf("write past end: %+v", r)
	}
}

func TestTransmissionDisconnects(t *testing.T) {
	checkGoroutines(t)
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: newFile(t, 1<<20)}}})
	cases := map[string]func(c *rawClient){
		"bad magic": func(c *rawClient) {
			b := nbd.AppendRequest(nil, nbd.Request{Magic: 0x12345678, Type: nbd.CmdRead, Length: 512})
			c.write(b)
		},
		"write over the hard limit": func(c *rawClient) {
			c.request(0, nbd.CmdWrite, 1, 0, nbd.HardMaxPayload+512, nil)
		},
		"truncated header": func(c *rawClient) {
			b := nbd.AppendRequest(nil, nbd.Request{Magic: nbd.MagicRequest, Type: nbd.CmdRead, Length: 512})
			c.write(b[:20])
			c.c.(interface{ CloseWrite() error }).CloseWrite()
		},
		"truncated write payload": func(c *rawClient) {
			c.request(0, nbd.CmdWrite, 1, 0, 4096, make([]byte, 100))
			c.c.(interface{ CloseWrite() error }).CloseWrite()
		},
		"disc": func(c *rawClient) { c.request(0, nbd.CmdDisc, 1, 0, 0, nil) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			c := dialRaw(t, srv.Socket)
			c.t = t
			c.start(false)
			f(c)
			c.expectClosed()
			o := dialRaw(t, srv.Socket)
			o.start(false)
			o.request(0, nbd.CmdRead, 9, 0, 512, nil)
			if r := o.readReply(512); r.errno != 0 {
				t.Fatalf("other connection: %+v", r)
			}
		})
	}
}

// TestDiscMidStream: DISC after pipelined writes; every write is answered
// and lands before the server closes.
func TestDiscMidStream(t *testing.T) {
	checkGoroutines(t)
	dev := newFile(t, 1<<20)
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: dev}}})
	c := dialRaw(t, srv.Socket)
	c.start(false)
	for range 50 { // a fast device: later small writes are served by the reader
		c.request(0, nbd.CmdRead, 0, 0, 4096, nil)
		c.readReply(4096)
	}
	// Small writes and the DISC in one burst, so the reader finds them all
	// buffered and holds replies back until it has nothing left to read.
	data := make([]byte, 4096)
	rand.Read(data)
	var burst []byte
	for i := range 8 {
		burst = nbd.AppendRequest(burst, nbd.Request{Magic: nbd.MagicRequest, Type: nbd.CmdWrite, Cookie: uint64(i), Offset: uint64(i * len(data)), Length: uint32(len(data))})
		burst = append(burst, data...)
	}
	burst = nbd.AppendRequest(burst, nbd.Request{Magic: nbd.MagicRequest, Type: nbd.CmdDisc, Cookie: 99})
	c.write(burst)
	seen := map[uint64]bool{}
	for range 8 {
		r := c.readReply(0)
		if r.errno != 0 || seen[r.cookie] {
			t.Fatalf("reply %+v", r)
		}
		seen[r.cookie] = true
	}
	c.expectClosed()
	got := make([]byte, len(data))
	for i := range 8 {
		dev.ReadAt(got, int64(i*len(data)))
		if !bytes.Equal(got, data) {
			t.Fatalf("block %d not written", i)
		}
	}
}

func TestReadOnlyExport(t *testing.T) {
	checkGoroutines(t)
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: newFile(t, 1<<20), ReadOnly: true}}})
	c := dialRaw(t, srv.Socket)
	e := c.start(false)
	if e.flags&nbd.FlagReadOnly == 0 {
		t.Fatalf("flags %v", e.flags)
	}
	for i, typ := range []nbd.Cmd{nbd.CmdWrite, nbd.CmdTrim, nbd.CmdWriteZeroes} {
		var payload []byte
		if typ == nbd.CmdWrite {
			payload = make([]byte, 512)
		}
		c.request(0, typ, uint64(i), 0, 512, payload)
		if r := c.readReply(0); r.errno != nbd.EPERM {
			t.Errorf("%v on read-only export: %v, want EPERM", typ, r.errno)
		}
	}
	c.request(0, nbd.CmdRead, 9, 0, 512, nil)
	if r := c.readReply(512); r.errno != 0 {
		t.Fatalf("read: %v", r.errno)
	}
}

// TestDeviceErrorMapping checks blockdev errors reach the client as the
// protocol's errors.
func TestDeviceErrorMapping(t *testing.T) {
	checkGoroutines(t)
	var mu sync.Mutex
	var failWith error
	dev := &blockdev.Faulty{Device: newFile(t, 1<<20), Fail: func(op blockdev.Op, off, length int64) error {
		mu.Lock()
		defer mu.Unlock()
		return failWith
	}}
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: dev}}})
	for _, structured := range []bool{false, true} {
		c := dialRaw(t, srv.Socket)
		c.start(structured)
		for _, tc := range []struct {
			err   error
			typ   nbd.Cmd
			errno nbd.Errno
		}{
			{blockdev.ErrRefused, nbd.CmdWrite, nbd.EPERM},
			{blockdev.ErrReadOnly, nbd.CmdTrim, nbd.EPERM},
			{blockdev.ErrNoSpace, nbd.CmdWrite, nbd.ENOSPC},
			{blockdev.ErrOutOfRange, nbd.CmdWrite, nbd.ENOSPC},
			{blockdev.ErrOutOfRange, nbd.CmdRead, nbd.EINVAL},
			{blockdev.ErrInjected, nbd.CmdRead, nbd.EIO},
			{blockdev.ErrInjected, nbd.CmdFlush, nbd.EIO},
			{blockdev.ErrInjected, nbd.CmdWriteZeroes, nbd.EIO},
		} {
			mu.Lock()
			failWith = tc.err
			mu.Unlock()
			var payload []byte
			length := uint32(512)
			if tc.typ == nbd.CmdWrite {
				payload = make([]byte, 512)
			}
			if tc.typ == nbd.CmdFlush {
				length = 0
			}
			c.request(0, tc.typ, 5, 0, length, payload)
			r := c.readReply(0)
			if r.errno != tc.errno {
				t.Errorf("structured=%v %v failing with %v: %v, want %v", structured, tc.typ, tc.err, r.errno, tc.errno)
			}
			if structured && (r.typ != nbd.ReplyTypeError || r.flags&nbd.ReplyFlagDone == 0) {
				t.Errorf("structured error reply %+v", r)
			}
		}
		mu.Lock()
		failWith = nil
		mu.Unlock()
	}
}

// blockingDevice holds trims (and optionally writes) until released, to
// test what happens while a request is stuck in the device.
type blockingDevice struct {
	blockdev.Device
	entered chan struct{}
	release chan struct{}
}

func (d *blockingDevice) Trim(off, length int64) error {
	d.entered <- struct{}{}
	<-d.release
	return d.Device.Trim(off, length)
}

// TestSlowTrimDoesNotStallReads: a TRIM stuck in the device must not hold
// up reads behind it on the same connection.
func TestSlowTrimDoesNotStallReads(t *testing.T) {
	checkGoroutines(t)
	dev := &blockingDevice{Device: newFile(t, 1<<20), entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: dev}}})
	c := dialRaw(t, srv.Socket)
	c.start(false)
	c.request(0, nbd.CmdTrim, 1, 0, 4096, nil)
	<-dev.entered
	for i := range 20 {
		c.request(0, nbd.CmdRead, uint64(100+i), 0, 4096, nil)
		if r := c.readReply(4096); r.cookie != uint64(100+i) || r.errno != 0 {
			t.Fatalf("read behind a stuck trim: %+v", r)
		}
	}
	close(dev.release)
	if r := c.readReply(0); r.cookie != 1 || r.errno != 0 {
		t.Fatalf("trim reply %+v", r)
	}
}

// TestPipelining sends many requests before reading any reply; each must be
// answered exactly once, and reads see the writes that were acknowledged
// before them.
func TestPipelining(t *testing.T) {
	checkGoroutines(t)
	const n = 300 // more than MaxInFlight, so the reader's bound is exercised
	dev := newFile(t, n*4096)
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: dev}}, MaxInFlight: 16, MaxBufferBytes: 32 << 20})
	c := dialRaw(t, srv.Socket)
	c.start(false)
	want := make([]byte, n*4096)
	var w bytes.Buffer
	for i := range n {
		b := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 2048)
		copy(want[i*4096:], b)
		w.Write(nbd.AppendRequest(nil, nbd.Request{Magic: nbd.MagicRequest, Type: nbd.CmdWrite, Cookie: uint64(i), Offset: uint64(i * 4096), Length: 4096}))
		w.Write(b)
	}
	go c.c.Write(w.Bytes()) // the server may stop reading until we read replies
	seen := make([]bool, n)
	for range n {
		r := c.readReply(0)
		if r.errno != 0 || r.cookie >= n || seen[r.cookie] {
			t.Fatalf("bad or duplicate reply %+v", r)
		}
		seen[r.cookie] = true
	}
	c.request(0, nbd.CmdFlush, 1<<40, 0, 0, nil)
	if r := c.readReply(0); r.errno != 0 {
		t.Fatal(r.errno)
	}
	got := make([]byte, n*4096)
	dev.ReadAt(got, 0)
	if !bytes.Equal(got, want) {
		t.Fatal("device contents differ from the pipelined writes")
	}
}

// TestMultipleConnections writes from several connections at once and reads
// everything back through another.
func TestMultipleConnections(t *testing.T) {
	checkGoroutines(t)
	const conns, per = 4, 256 << 10
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: newFile(t, conns*per)}}})
	want := make([]byte, conns*per)
	rand.Read(want)
	var wg sync.WaitGroup
	for i := range conns {
		c := dialRaw(t, srv.Socket)
		c.start(i%2 == 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := 0; off < per; off += 16 << 10 {
				o := i*per + off
				c.request(0, nbd.CmdWrite, uint64(o), uint64(o), 16<<10, want[o:o+16<<10])
			}
			for off := 0; off < per; off += 16 << 10 {
				if r := c.readReply(0); r.errno != 0 {
					t.Errorf("conn %d: %v", i, r.errno)
				}
			}
		}()
	}
	wg.Wait()
	c := dialRaw(t, srv.Socket)
	c.start(false)
	c.request(0, nbd.CmdFlush, 0, 0, 0, nil)
	c.readReply(0)
	c.request(0, nbd.CmdRead, 1, 0, conns*per, nil)
	if r := c.readReply(conns * per); r.errno != 0 || !bytes.Equal(r.data, want) {
		t.Fatalf("read back: errno %v, equal %v", r.errno, bytes.Equal(r.data, want))
	}
}

// gatedDevice holds writes until released.
type gatedDevice struct {
	*blockdev.Faulty
	entered chan struct{}
	release chan struct{}
}

func (d *gatedDevice) WriteAt(p []byte, off int64) (int, error) {
	d.entered <- struct{}{}
	<-d.release
	return d.Faulty.WriteAt(p, off)
}

// TestShutdown: in-flight requests finish, new ones get ESHUTDOWN, the
// device is flushed, connections close, Serve returns ErrServerClosed.
func TestShutdown(t *testing.T) {
	checkGoroutines(t)
	f := &blockdev.Faulty{Device: newFile(t, 1<<20)}
	dev := &gatedDevice{Faulty: f, entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := nbdtest.Start(t, nbd.Config{Exports: []nbd.Export{{Device: dev}}})
	c := dialRaw(t, srv.Socket)
	c.start(false)
	idle := dialRaw(t, srv.Socket) // a connection with nothing in flight
	idle.start(true)
	hs := dialRaw(t, srv.Socket) // one still haggling
	hs.hello()

	data := bytes.Repeat([]byte{0xab}, 4096)
	// FUA: a write that always goes to a worker, so it is in flight while
	// the reader answers the requests below (a plain small write may be
	// served by the reader itself once the device has proved fast).
	c.request(fua, nbd.CmdWrite, 1, 0, 4096, data)
	<-dev.entered
	flushesBefore := f.Count(blockdev.OpFlush)
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(context.Background()) }()

	idle.expectClosed()
	hs.expectClosed()
	// A request sent after shutdown began is refused with ESHUTDOWN; poll,
	// since the shutdown flag is set asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for cookie := uint64(2); ; cookie++ {
		c.request(0, nbd.CmdRead, cookie, 0, 512, nil)
		r := c.readReply(512)
		if r.errno == nbd.ESHUTDOWN {
			break
		}
		if r.errno != 0 || time.Now().After(deadline) {
			t.Fatalf("read during shutdown: %+v", r)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a write in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(dev.release)
	if r := c.readReply(0); r.cookie != 1 || r.errno != 0 {
		t.Fatalf("in-flight write: %+v", r)
	}
	c.expectClosed()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if f.Count(blockdev.OpFlush) <= flushesBefore {
		t.Fatal("Shutdown did not flush the device")
	}
	got := make([]byte, 4096)
	f.ReadAt(got, 0)
	if !bytes.Equal(got, data) {
		t.Fatal("in-flight write lost")
	}
	// Shutdown again (the nbdtest cleanup) must be harmless.
	if err := srv.Shutdown(context.Background()); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// fastFile claims fast zeroing, as a file on a filesystem with fallocate
// would.
type fastFile struct{ *blockdev.File }

func (fastFile) CanZeroFast(off, length int64, mayPunch bool) bool { return true }

func TestFastZero(t *testing.T) {
	checkGoroutines(t)
	f := newFile(t, 1<<20)
	f.WriteAt(bytes.Repeat([]byte{1}, 1<<20), 0)
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: fastFile{f}}}})
	c := dialRaw(t, srv.Socket)
	c.start(true)
	c.request(fastZero|noHole, nbd.CmdWriteZeroes, 1, 4096, 8192, nil)
	if r := c.readReply(0); r.errno != 0 {
		t.Fatalf("fast zero: %+v", r)
	}
	got := make([]byte, 3*4096)
	f.ReadAt(got, 0)
	if !bytes.Equal(got[4096:], make([]byte, 8192)) || got[0] != 1 {
		t.Fatal("fast zero did not zero exactly the range")
	}
}

// TestTCP serves over a loopback TCP listener.
func TestTCP(t *testing.T) {
	checkGoroutines(t)
	srv, err := nbd.NewServer(nbd.Config{Exports: []nbd.Export{{Device: newFile(t, 1<<20)}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &rawClient{t: t, c: nc, br: bufio.NewReader(nc)}
	c.start(false)
	data := bytes.Repeat([]byte("tcp!"), 1024)
	c.request(fua, nbd.CmdWrite, 1, 8192, 4096, data)
	c.request(0, nbd.CmdRead, 2, 8192, 4096, nil)
	for range 2 {
		r := c.readReply(0)
		if r.cookie == 2 { // the read may be answered first; then its data follows
			if r.errno != 0 {
				t.Fatal(r.errno)
			}
			c.read(4096)
		} else if r.errno != 0 {
			t.Fatal(r.errno)
		}
	}
	nc.Close()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, nbd.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
}

// slowReads holds reads while slow is set, counting how many are inside.
type slowReads struct {
	blockdev.Device
	mu      sync.Mutex
	slow    bool
	inside  int
	release chan struct{}
}

func (d *slowReads) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	slow := d.slow
	if slow {
		d.inside++
	}
	d.mu.Unlock()
	if slow {
		<-d.release
	}
	return d.Device.ReadAt(p, off)
}

func (d *slowReads) insideNow() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inside
}

// TestSlowDeviceServedConcurrently: the reader serves small reads itself
// only while the device is fast; once a read is slow, requests go to
// workers and run concurrently again.
func TestSlowDeviceServedConcurrently(t *testing.T) {
	checkGoroutines(t)
	dev := &slowReads{Device: newFile(t, 1<<20), release: make(chan struct{})}
	srv := start(t, nbd.Config{Exports: []nbd.Export{{Device: dev}}})
	c := dialRaw(t, srv.Socket)
	c.start(false)
	for i := range 100 { // fast: the reader takes over
		c.request(0, nbd.CmdRead, uint64(i), 0, 4096, nil)
		c.readReply(4096)
	}
	dev.mu.Lock()
	dev.slow = true
	dev.mu.Unlock()
	c.request(0, nbd.CmdRead, 1, 0, 4096, nil)
	testenv.WaitFor(t, 10*time.Second, "the first slow read", func() bool { return dev.insideNow() == 1 })
	time.Sleep(5 * time.Millisecond) // make it clearly slow: at least 5 ms
	dev.release <- struct{}{}
	c.readReply(4096)
	const n = 8
	for i := range n {
		c.request(0, nbd.CmdRead, uint64(10+i), uint64(i)*4096, 4096, nil)
	}
	testenv.WaitFor(t, 10*time.Second, "all reads in the device at once", func() bool { return dev.insideNow() == 1+n })
	close(dev.release)
	for range n {
		if r := c.readReply(4096); r.errno != 0 {
			t.Fatal(r.errno)
		}
	}
}
