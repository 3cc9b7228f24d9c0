package nbd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
)

const (
	stateHandshake int32 = iota
	stateTransmission
)

// readBufSize is the socket read buffer: a burst of small requests (4 KiB
// writes at queue depth 8) arrives in one read system call. It is kept small
// because whatever part of a large WRITE payload lands in it costs a copy;
// the rest of the payload is read straight into its own buffer (see
// readPayload).
const readBufSize = 32 << 10

// directReadMin is the payload remainder from which readPayload reads from
// the socket into the payload buffer instead of through readBufSize.
const directReadMin = 8 << 10

// conn is one client connection.
type conn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader
	log *slog.Logger

	state     atomic.Int32
	closeOnce sync.Once

	// Fixed once the handshake ends.
	exp        *export
	structured bool

	w replyWriter

	// inflight counts requests read but not yet answered; Shutdown waits for
	// it to reach zero, woken through idle.
	inflight atomic.Int64
	idle     chan struct{}

	// free holds the MaxInFlight request slots: taking one is how the reader
	// waits when too many requests are outstanding.
	free chan *request
	// work carries requests to the worker goroutines; credits counts idle
	// workers the reader may hand a request to without starting a new one.
	work    chan *request
	credits atomic.Int32
	workers sync.WaitGroup
	budget  budget
	// latency is a moving average of the device time of requests the
	// reader served itself, which decides whether it goes on doing so
	// (inlineOK); probe counts requests since the last probe. Both belong
	// to the reader goroutine.
	latency time.Duration
	probe   int

	lastWarn, suppressed atomic.Int64 // rate limit of device error logs

	// stallArmed says the socket has a read deadline for the request being
	// read (armStall); it belongs to the reader goroutine.
	stallArmed bool
}

// request is one transmission request while it is being served.
type request struct {
	Request
	buf    *buffer // WRITE payload or READ data
	budget int64   // bytes reserved from conn.budget
	inline bool    // served by the reader itself (see inlineOK)
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv:  s,
		nc:   nc,
		br:   bufio.NewReaderSize(nc, readBufSize),
		log:  s.log.With("remote", remoteName(nc)),
		idle: make(chan struct{}, 1),
	}
	c.w.nc = nc
	c.w.onErr = c.close
	return c
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return "unix"
}

func (c *conn) close() { c.closeOnce.Do(func() { c.nc.Close() }) }

func (c *conn) serve() {
	defer c.close()
	n, err := c.handshake()
	if err != nil {
		if errors.Is(err, errHardDisconnect) {
			c.log.Warn("nbd: handshake", "err", err)
		} else if !errors.Is(err, io.EOF) {
			c.log.Debug("nbd: handshake ended", "err", err)
		}
		return
	}
	c.exp, c.structured = n.exp, n.structured
	c.state.Store(stateTransmission)
	c.log.Debug("nbd: transmission", "export", c.exp.Name, "structured", c.structured)
	c.transmit()
}

// drainAndClose is Shutdown's part for one connection: wait for its
// in-flight requests (new ones are answered ESHUTDOWN), then disconnect.
// When ctx ends first the connection is closed whatever the drain waits
// for: the last replies may be stuck in a write to a client that does not
// read them, which holds the reply writer (and the final flush below) for
// up to replyWriteTimeout, far past the caller's deadline.
func (c *conn) drainAndClose(ctx context.Context) {
	stop := context.AfterFunc(ctx, c.close)
	defer stop()
	if c.state.Load() == stateTransmission {
		for c.inflight.Load() != 0 {
			select {
			case <-c.idle:
			case <-ctx.Done():
				c.close()
				return
			}
		}
		c.w.flushAll() // a reply held back must not be lost
	}
	c.close()
}

// transmit is the reader: it parses requests, checks them, reads WRITE
// payloads and hands valid requests to workers. Errors found here are
// answered at once. It returns when the client disconnects, sends DISC or
// breaks the protocol, after every outstanding request has been answered.
func (c *conn) transmit() {
	maxInFlight := c.srv.cfg.MaxInFlight
	c.free = make(chan *request, maxInFlight)
	for range maxInFlight {
		c.free <- new(request)
	}
	c.work = make(chan *request, maxInFlight)
	c.budget.init(c.srv.cfg.MaxBufferBytes)
	c.w.structured = c.structured
	// Start with workers; serve inline only once a probe proved the device fast.
	c.latency = inlineMaxLatency
	defer func() {
		close(c.work)
		c.workers.Wait()
		c.w.flushAll() // replies held back (DISC after requests)
	}()

	var hdr [requestLen]byte
	bigWrites := false // the last request was a WRITE with a large payload
	for {
		c.disarmStall() // between requests a connection may idle for ever
		if c.br.Buffered() < requestLen {
			c.w.flushPending() // about to wait for the client: send what is queued
		}
		var src io.Reader = c.br
		if bigWrites && c.br.Buffered() == 0 {
			// Large WRITEs are streaming in: read just the header, so that
			// no part of the next payload passes through the read buffer.
			src = c.nc
		}
		err := c.readHeader(src, hdr[:])
		if err != nil {
			c.logReadError("nbd: read request", err)
			return
		}
		req := DecodeRequest(hdr[:])
		bigWrites = req.Type == CmdWrite && req.Length >= directReadMin
		if req.Magic != MagicRequest {
			c.log.Warn("nbd: bad request magic; disconnecting", "magic", req.Magic)
			return
		}
		if req.Type == CmdDisc {
			c.log.Debug("nbd: client disconnect")
			return
		}
		if req.Type == CmdWrite && req.Length > HardMaxPayload {
			c.log.Warn("nbd: WRITE payload over the hard limit; disconnecting", "len", req.Length, "limit", HardMaxPayload)
			return
		}

		var r *request
		select {
		case r = <-c.free:
		default:
			c.w.flushPending()
			r = <-c.free
		}
		r.Request = req
		c.inflight.Add(1)
		errno, msg := c.check(&req)
		if c.srv.shutting.Load() {
			errno, msg = ESHUTDOWN, "server is shutting down"
		}
		if req.Type == CmdWrite && req.Length > 0 {
			if errno != 0 {
				c.w.flushPending()
				c.armStall(int64(req.Length))
				if _, err := io.CopyN(io.Discard, c.br, int64(req.Length)); err != nil {
					c.logReadError("nbd: read refused WRITE payload", err)
					c.done(r)
					return
				}
			} else {
				r.budget = int64(req.Length)
				c.acquire(r.budget)
				r.buf = getBuffer(int(req.Length))
				if err := c.readPayload(r.buf.b); err != nil {
					c.logReadError("nbd: read WRITE payload", err)
					c.done(r)
					return
				}
			}
		}
		switch {
		case errno != 0:
			c.log.Debug("nbd: request refused", "cmd", req.Type.String(), "flags", req.Flags.String(), "off", req.Offset, "len", req.Length, "errno", errno.String())
			c.w.errorReply(req.Cookie, errno, msg)
			c.done(r)
		case req.Length == 0 && req.Type != CmdFlush:
			// Unspecified by the spec; answering success without touching
			// the device is the harmless choice.
			if req.Type == CmdRead && c.structured {
				c.w.noneChunk(req.Cookie)
			} else {
				c.w.simple(req.Cookie, 0)
			}
			c.done(r)
		case c.inlineOK(&req):
			r.inline = true
			c.handle(r)
		default:
			switch req.Type {
			case CmdRead:
				r.budget = int64(req.Length)
				c.acquire(r.budget)
			case CmdCache:
				// prefetch reads through one buffer of up to
				// cacheChunk: counted like a READ's, or many
				// CACHEs on a slow device would each hold one
				// outside MaxBufferBytes.
				r.budget = min(int64(req.Length), cacheChunk)
				c.acquire(r.budget)
			}
			c.dispatch(r)
		}
	}
}

// readPayload fills p with the next bytes of the stream: first what the read
// buffer already holds, then, for a large remainder, straight from the
// socket, saving a copy of most of a large WRITE payload.
func (c *conn) readPayload(p []byte) error {
	if n := c.br.Buffered(); n > 0 {
		k, _ := c.br.Read(p[:min(n, len(p))]) // served from the buffer: no system call, no error
		p = p[k:]
	}
	if len(p) == 0 {
		return nil
	}
	c.w.flushPending() // the rest may take a while to arrive
	c.armStall(int64(len(p)))
	var err error
	if len(p) >= directReadMin {
		_, err = io.ReadFull(c.nc, p) // the buffer is empty, so the stream stays in order
	} else {
		_, err = io.ReadFull(c.br, p)
	}
	return err
}

// A request must arrive whole once its first byte has: a client may idle
// between requests for as long as it likes (kernel clients do), but one that
// starts a request and stops sending holds a request slot, and with a WRITE
// its payload's budget, for as long as it stays connected. So the rest of a
// request gets requestStallBase plus its payload at minPayloadRate (a
// 32 MiB payload: 158 s) before the connection is dropped. A client must
// then send a whole request again to hold anything; what all clients can
// hold at once is bounded by Config.MaxTotalBufferBytes. Variables so that
// tests can shorten them.
var (
	requestStallBase       = 30 * time.Second
	minPayloadRate   int64 = 256 << 10 // bytes per second
)

// readHeader reads a request header from src: the first bytes with no
// deadline (the client may be idle), the rest under armStall.
func (c *conn) readHeader(src io.Reader, hdr []byte) error {
	n := 0
	for n == 0 {
		k, err := src.Read(hdr)
		if err != nil {
			return err
		}
		n = k
	}
	if n < len(hdr) {
		c.armStall(0)
		_, err := io.ReadFull(src, hdr[n:])
		return err
	}
	return nil
}

// armStall gives the rest of the request being read, with n payload bytes
// still to come, its deadline (see requestStallBase).
func (c *conn) armStall(n int64) {
	d := requestStallBase + time.Duration(n)*time.Second/time.Duration(minPayloadRate)
	c.nc.SetReadDeadline(time.Now().Add(d))
	c.stallArmed = true
}

// disarmStall clears armStall's deadline before the reader waits for the
// next request.
func (c *conn) disarmStall() {
	if c.stallArmed {
		c.nc.SetReadDeadline(time.Time{})
		c.stallArmed = false
	}
}

// logReadError logs why reading from the client ended: a stalled request
// (the deadline of armStall) as a warning, a disconnect not at all.
func (c *conn) logReadError(what string, err error) {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Warn("nbd: a request stopped arriving midway; disconnecting", "during", what)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
	default:
		c.log.Debug(what, "err", err)
	}
}

// check validates a request against the export and the negotiated options.
func (c *conn) check(r *Request) (Errno, string) {
	e := c.exp
	// FUA is valid on every command once negotiated; a read-only export does
	// not advertise it, but ignoring it there is harmless.
	allowed := CmdFlagFUA
	switch r.Type {
	case CmdRead:
		if c.structured {
			allowed |= CmdFlagDF
		}
	case CmdWrite, CmdFlush, CmdTrim, CmdCache:
	case CmdWriteZeroes:
		allowed |= CmdFlagNoHole | CmdFlagFastZero
	default:
		return EINVAL, "unknown command"
	}
	if r.Flags&^allowed != 0 {
		return EINVAL, "flag not valid for this command"
	}
	if r.Type == CmdFlush {
		if r.Offset != 0 || r.Length != 0 {
			return EINVAL, "FLUSH with nonzero offset or length"
		}
		return 0, ""
	}
	write := r.Type == CmdWrite || r.Type == CmdWriteZeroes
	if e.ReadOnly && (write || r.Type == CmdTrim) {
		return EPERM, "export is read-only"
	}
	size := uint64(e.size)
	if r.Offset > size || uint64(r.Length) > size-r.Offset {
		if write {
			return ENOSPC, "request past the end of the export"
		}
		return EINVAL, "request past the end of the export"
	}
	if (r.Offset|uint64(r.Length))&uint64(e.MinBlock-1) != 0 {
		return EINVAL, "request not aligned to the minimum block size"
	}
	if (r.Type == CmdRead || r.Type == CmdWrite) && r.Length > e.MaxPayload {
		return EINVAL, "request longer than the maximum payload"
	}
	return 0, ""
}

// acquire reserves payload bytes from the connection's budget and then from
// the server's, first sending queued replies when it has to wait (the bytes
// come back only as replies go out).
func (c *conn) acquire(n int64) {
	for _, b := range [...]*budget{&c.budget, &c.srv.total} {
		if !b.tryAcquire(n) {
			c.w.flushPending()
			b.acquire(n)
		}
	}
}

// Serving a request in the reader avoids waking a worker, which costs
// more than a READ or WRITE that the page cache answers in microseconds;
// but it stops reading the connection for as long as the device takes. So
// the reader serves only READs and WRITEs without FUA of at most
// inlineMaxLen, and only while the device answers them within
// inlineMaxLatency on average; everything else (FLUSH, FUA, TRIM,
// WRITE_ZEROES, CACHE, large requests, a slow device) goes to workers, so it
// never holds up the requests behind it.
//
// Only requests the reader serves are timed: the time a worker measures
// includes waiting for a CPU behind the other workers and would keep a busy
// server away from the fast path. So while requests go to workers, every
// inlineProbeEvery-th eligible request is served by the reader as a probe.
const (
	inlineMaxLen     = 128 << 10
	inlineMaxLatency = 100 * time.Microsecond
	inlineProbeEvery = 32
)

func (c *conn) inlineOK(r *Request) bool {
	if (r.Type != CmdRead && r.Type != CmdWrite) || r.Flags&CmdFlagFUA != 0 || r.Length > inlineMaxLen {
		return false
	}
	if c.latency < inlineMaxLatency {
		return true
	}
	c.probe++
	return c.probe%inlineProbeEvery == 0
}

// noteLatency records how long the device took for a request the reader
// served. A probe's time replaces the average (one fast probe switches the
// fast path on); otherwise it is a moving average with weight 1/8, so one
// request 8× over the limit switches the fast path off at once.
func (c *conn) noteLatency(d time.Duration) {
	if c.latency >= inlineMaxLatency {
		c.latency = d
	} else {
		c.latency += (d - c.latency) / 8
	}
	if c.latency >= inlineMaxLatency {
		c.probe = 0
	}
}

// dispatch hands r to an idle worker, or starts one when none is idle.
// Workers never outnumber outstanding requests, so they are bounded by
// MaxInFlight.
func (c *conn) dispatch(r *request) {
	if n := c.credits.Load(); n > 0 && c.credits.CompareAndSwap(n, n-1) {
		c.work <- r
		return
	}
	c.workers.Add(1)
	go c.worker(r)
}

func (c *conn) worker(r *request) {
	defer c.workers.Done()
	for {
		c.handle(r)
		c.credits.Add(1)
		var ok bool
		if r, ok = <-c.work; !ok {
			return
		}
	}
}

// handle performs one valid request on the device and replies.
func (c *conn) handle(r *request) {
	defer c.done(r)
	dev := c.exp.Device
	off, n := int64(r.Offset), int64(r.Length)
	fua := r.Flags&CmdFlagFUA != 0
	var err error
	switch r.Type {
	case CmdRead:
		r.buf = getBuffer(int(n))
		var got int
		t0 := time.Now()
		got, err = dev.ReadAt(r.buf.b, off)
		if r.inline {
			c.noteLatency(time.Since(t0))
		}
		if got == len(r.buf.b) && errors.Is(err, io.EOF) {
			err = nil
		}
		if err == nil {
			c.w.readReply(r.Cookie, r.Offset, r.buf.b, c.deferReply(r))
			return
		}
	case CmdWrite:
		if fua {
			_, err = blockdev.WriteFUA(dev, r.buf.b, off)
		} else {
			t0 := time.Now()
			_, err = dev.WriteAt(r.buf.b, off)
			if r.inline {
				c.noteLatency(time.Since(t0))
			}
		}
	case CmdFlush:
		err = dev.Flush()
	case CmdTrim:
		err = dev.Trim(off, n)
		if err == nil && fua {
			err = dev.Flush()
		}
	case CmdWriteZeroes:
		mayPunch := r.Flags&CmdFlagNoHole == 0
		if r.Flags&CmdFlagFastZero != 0 {
			fz, ok := dev.(FastZeroer)
			if !ok || !fz.CanZeroFast(off, n, mayPunch) {
				c.w.errorReply(r.Cookie, ENOTSUP, "the device cannot zero this range fast")
				return
			}
		}
		err = dev.WriteZeroes(off, n, mayPunch)
		if err == nil && fua {
			err = dev.Flush()
		}
	case CmdCache:
		err = c.prefetch(off, n)
	}
	if err != nil {
		write := r.Type == CmdWrite || r.Type == CmdWriteZeroes
		errno := errnoFor(err, write)
		if errno == EIO {
			c.warnDeviceError(r, err)
		} else {
			c.log.Debug("nbd: device refused", "cmd", r.Type.String(), "off", off, "len", n, "err", err)
		}
		c.w.errorReply(r.Cookie, errno, errno.String()+" from the device")
		return
	}
	c.w.reply(r.Cookie, 0, c.deferReply(r))
}

// warnDeviceError logs a device I/O error, at most once a second per
// connection (a failing disk fails every request), with the count of the
// ones not logged since.
func (c *conn) warnDeviceError(r *request, err error) {
	now := time.Now().UnixNano()
	last := c.lastWarn.Load()
	if now-last < int64(time.Second) || !c.lastWarn.CompareAndSwap(last, now) {
		c.suppressed.Add(1)
		return
	}
	c.log.Warn("nbd: device error", "cmd", r.Type.String(), "off", r.Offset, "len", r.Length, "err", err,
		"similar_errors_not_logged", c.suppressed.Swap(0))
}

// deferReply says whether r's reply may wait in the batch buffer: only when
// the reader serves r itself and the next request is already buffered, so
// the reader comes back to send it within microseconds (it always sends
// queued replies before it waits for anything).
func (c *conn) deferReply(r *request) bool {
	return r.inline && c.br.Buffered() >= requestLen
}

// cacheChunk is the buffer CACHE reads through; cacheMax bounds what one
// CACHE reads: the request is a hint (the spec lets a server do nothing),
// and 28 bytes from the client should not start gigabytes of disk reads.
const (
	cacheChunk = 1 << 20
	cacheMax   = HardMaxPayload
)

// prefetch serves CACHE by reading the range once (its first cacheMax
// bytes), so that later reads find it in the host's page cache; the data is
// dropped.
func (c *conn) prefetch(off, n int64) error {
	n = min(n, cacheMax)
	b := getBuffer(int(min(n, cacheChunk)))
	defer putBuffer(b)
	for n > 0 {
		l := min(n, cacheChunk)
		got, err := c.exp.Device.ReadAt(b.b[:l], off)
		if err != nil && !(got == int(l) && errors.Is(err, io.EOF)) {
			return err
		}
		off += l
		n -= l
	}
	return nil
}

// done releases what r holds after its reply was sent.
func (c *conn) done(r *request) {
	if r.buf != nil {
		putBuffer(r.buf)
		r.buf = nil
	}
	if r.budget != 0 {
		c.budget.release(r.budget)
		c.srv.total.release(r.budget)
		r.budget = 0
	}
	r.inline = false
	c.free <- r
	if c.inflight.Add(-1) == 0 && c.srv.shutting.Load() {
		select {
		case c.idle <- struct{}{}:
		default:
		}
	}
}

// budget is a counting semaphore of payload bytes: a connection's, which
// only its reader acquires, or the server's, which every reader may wait on
// for a different amount (so release wakes them all).
type budget struct {
	mu    sync.Mutex
	cond  sync.Cond
	avail int64
}

func (b *budget) init(n int64) {
	b.avail = n
	b.cond.L = &b.mu
}

func (b *budget) tryAcquire(n int64) bool {
	b.mu.Lock()
	ok := b.avail >= n
	if ok {
		b.avail -= n
	}
	b.mu.Unlock()
	return ok
}

func (b *budget) acquire(n int64) {
	b.mu.Lock()
	for b.avail < n {
		b.cond.Wait()
	}
	b.avail -= n
	b.mu.Unlock()
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.avail += n
	b.mu.Unlock()
	b.cond.Broadcast()
}
