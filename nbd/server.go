// Package nbd is a Network Block Device server (fixed newstyle handshake,
// simple and structured replies) that exports blockdev.Devices over TCP or
// Unix sockets to any NBD client: the Linux kernel through nbd-client,
// libnbd tools (nbdinfo, nbdcopy, nbdfuse), qemu, fio's nbd engine.
//
// The protocol is NetworkBlockDevice/nbd doc/proto.md. What this server
// chooses where the spec leaves a choice:
//
//   - Options longer than maxOptionLen, WRITE payloads longer than
//     HardMaxPayload (32 MiB, the largest request the kernel sends) and a
//     request with a bad magic end the connection (a hard disconnect, which
//     the spec allows on a MUST violation): skipping them would mean reading
//     up to 4 GiB from a peer that already broke the protocol.
//   - Requests outside the export, misaligned to the advertised minimum block
//     size, longer than the advertised maximum payload (READ, WRITE), with a
//     flag the command does not take, or of an unknown type, get EINVAL
//     (ENOSPC for writes past the end) and the connection goes on; a WRITE's
//     payload is read and discarded first so the stream stays in sync.
//   - Zero-length requests succeed without touching the device.
//   - FLUSH calls Device.Flush, which must make every completed write
//     durable whichever connection made it; that is what makes
//     CAN_MULTI_CONN honest, so the server advertises it.
//   - WRITE_ZEROES with FAST_ZERO fails with ENOTSUP unless the device
//     implements FastZeroer and says it can zero that range fast.
//   - STARTTLS is refused with ERR_POLICY; metadata contexts (BLOCK_STATUS)
//     and extended headers are not implemented and get ERR_UNSUP.
//
// Each connection has one reader goroutine that parses requests and reads
// WRITE payloads, worker goroutines that call the device (so a slow TRIM,
// WRITE_ZEROES, FLUSH or FUA write never stalls the reader), and one reply
// writer that batches small replies into one write and sends large READ
// data with writev. While the device answers small READs and WRITEs within
// microseconds (the page cache), the reader serves those itself: waking a
// worker would cost more than the request. At most Config.MaxInFlight
// requests and Config.MaxBufferBytes of payload are outstanding per
// connection, and Config.MaxTotalBufferBytes of payload over all of them;
// buffers come from pools so steady traffic does not allocate. A client may
// idle between requests for ever, but a request that has begun must arrive
// in bounded time (requestStallBase), and a client that stops reading its
// replies is dropped after replyWriteTimeout.
//
// What it does not bound: a client can hold all MaxConns connection slots
// (idle, or each in its handshake for HandshakeTimeout), keeping others
// out. The NBD port is the host's disk and must be reachable by the host
// alone; the limits here keep the device alive under a hostile host, not
// available to several.
package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
)

// HardMaxPayload is the largest READ or WRITE this server buffers: 32 MiB,
// the kernel NBD client's largest request (max_hw_sectors 65536 × 512) and
// the size the spec says no peer should treat as a denial of service.
const HardMaxPayload = 32 << 20

// maxOptionLen bounds the data of one handshake option. The largest option a
// real client sends is GO/INFO with a name (at most 4096 bytes by the spec's
// string rule) and a handful of 2-byte info requests, or a SET_META_CONTEXT
// with a few such strings; 64 KiB leaves ample room and keeps a hostile
// length from costing more than one small read.
const maxOptionLen = 64 << 10

// maxNameLen is the spec's upper bound for any string (export names).
const maxNameLen = 4096

// Defaults for Export and Config fields left zero.
const (
	DefaultMinBlock            = 512
	DefaultPrefBlock           = 4096
	DefaultMaxPayload          = HardMaxPayload
	DefaultMaxConns            = 64
	DefaultMaxInFlight         = 128
	DefaultMaxBufferBytes      = 64 << 20
	DefaultMaxTotalBufferBytes = 256 << 20
	DefaultHandshakeTimeout    = 30 * time.Second
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// Export is one named device the server offers.
type Export struct {
	// Name is what clients ask for; "" is the default export. A client asking
	// for "" gets the export named "" or, when there is none, the first one.
	Name        string
	Description string
	Device      blockdev.Device
	ReadOnly    bool
	// Block size constraints advertised with NBD_INFO_BLOCK_SIZE and
	// enforced on every request (EINVAL when broken). MinBlock must be a power
	// of two ≤ 64 KiB dividing the device size (default 512); PrefBlock a power
	// of two ≥ max(MinBlock, 512) (default 4096); MaxPayload a multiple of
	// MinBlock ≤ HardMaxPayload (default 32 MiB), the largest READ or WRITE.
	MinBlock, PrefBlock, MaxPayload uint32
}

// FastZeroer is an optional Device capability used for WRITE_ZEROES with
// the FAST_ZERO flag: CanZeroFast reports whether WriteZeroes on that range
// would finish much faster than writing zero buffers (for a file: the
// filesystem can punch or zero the range with fallocate). Devices that do not
// implement it answer every FAST_ZERO request with ENOTSUP, as the spec
// requires of a server that cannot tell.
type FastZeroer interface {
	CanZeroFast(off, length int64, mayPunch bool) bool
}

// Config configures a Server.
type Config struct {
	Exports []Export
	// Logger receives connection events and device errors; nil discards.
	Logger *slog.Logger
	// MaxConns bounds simultaneous connections (default 64); more are closed
	// at accept.
	MaxConns int
	// MaxInFlight bounds outstanding requests per connection (default 128).
	// The reader stops reading the socket while the bound is reached.
	MaxInFlight int
	// MaxBufferBytes bounds READ and WRITE payload bytes held per connection
	// (default 64 MiB, at least the largest MaxPayload).
	MaxBufferBytes int64
	// MaxTotalBufferBytes bounds the payload bytes held by all connections
	// together (default 256 MiB, at least MaxBufferBytes). Without it a
	// client opening MaxConns connections could make the server hold
	// MaxConns × MaxBufferBytes (4 GiB by default): enough to have a small
	// board's kernel kill the device. A connection whose request would pass
	// it stops reading its socket until other requests are answered.
	MaxTotalBufferBytes int64
	// HandshakeTimeout bounds the whole option haggling (default 30 s).
	HandshakeTimeout time.Duration
}

type export struct {
	Export
	size int64
}

// Server serves NBD exports. Create it with NewServer.
type Server struct {
	exports []*export
	log     *slog.Logger
	cfg     Config

	shutting atomic.Bool
	// total is the payload budget shared by every connection
	// (Config.MaxTotalBufferBytes).
	total budget

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	connWG    sync.WaitGroup
}

// NewServer checks cfg and returns a server ready to Serve.
func NewServer(cfg Config) (*Server, error) {
	if len(cfg.Exports) == 0 {
		return nil, errors.New("nbd: no exports")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxBufferBytes <= 0 {
		cfg.MaxBufferBytes = DefaultMaxBufferBytes
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: log, listeners: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}
	seen := map[string]bool{}
	for _, e := range cfg.Exports {
		x, err := checkExport(e)
		if err != nil {
			return nil, err
		}
		if seen[x.Name] {
			return nil, fmt.Errorf("nbd: two exports named %q", x.Name)
		}
		seen[x.Name] = true
		if int64(x.MaxPayload) > cfg.MaxBufferBytes {
			cfg.MaxBufferBytes = int64(x.MaxPayload)
		}
		s.exports = append(s.exports, x)
	}
	if cfg.MaxTotalBufferBytes <= 0 {
		cfg.MaxTotalBufferBytes = max(DefaultMaxTotalBufferBytes, cfg.MaxBufferBytes)
	}
	if cfg.MaxTotalBufferBytes < cfg.MaxBufferBytes {
		return nil, fmt.Errorf("nbd: MaxTotalBufferBytes %d is below one connection's MaxBufferBytes %d (a request of that size could never be served)", cfg.MaxTotalBufferBytes, cfg.MaxBufferBytes)
	}
	s.total.init(cfg.MaxTotalBufferBytes)
	s.cfg = cfg
	return s, nil
}

func isPow2(v uint32) bool { return v != 0 && v&(v-1) == 0 }

func checkExport(e Export) (*export, error) {
	if e.Device == nil {
		return nil, fmt.Errorf("nbd: export %q has no device", e.Name)
	}
	if len(e.Name) > maxNameLen || len(e.Description) > maxNameLen {
		return nil, fmt.Errorf("nbd: export %q: name or description longer than %d bytes", e.Name, maxNameLen)
	}
	if e.MinBlock == 0 {
		e.MinBlock = DefaultMinBlock
	}
	if e.PrefBlock == 0 {
		e.PrefBlock = max(DefaultPrefBlock, e.MinBlock)
	}
	if e.MaxPayload == 0 {
		e.MaxPayload = DefaultMaxPayload
	}
	size := e.Device.Size()
	switch {
	case !isPow2(e.MinBlock) || e.MinBlock > 64<<10:
		return nil, fmt.Errorf("nbd: export %q: minimum block %d is not a power of two ≤ 64 KiB", e.Name, e.MinBlock)
	case !isPow2(e.PrefBlock) || e.PrefBlock < max(e.MinBlock, 512):
		return nil, fmt.Errorf("nbd: export %q: preferred block %d is not a power of two ≥ max(minimum block, 512)", e.Name, e.PrefBlock)
	case e.MaxPayload%e.MinBlock != 0 || e.MaxPayload > HardMaxPayload || e.MaxPayload < e.PrefBlock:
		return nil, fmt.Errorf("nbd: export %q: maximum payload %d must be a multiple of the minimum block, ≥ the preferred block and ≤ %d", e.Name, e.MaxPayload, HardMaxPayload)
	case size < 0 || size%int64(e.MinBlock) != 0:
		return nil, fmt.Errorf("nbd: export %q: size %d is not a multiple of the minimum block %d", e.Name, size, e.MinBlock)
	}
	return &export{Export: e, size: size}, nil
}

// lookup resolves a client's export name; "" is the default export.
func (s *Server) lookup(name string) *export {
	for _, e := range s.exports {
		if e.Name == name {
			return e
		}
	}
	if name == "" {
		return s.exports[0]
	}
	return nil
}

// Serve accepts connections on ln until Shutdown, serving each in its own
// goroutines. It returns ErrServerClosed after Shutdown, or the accept error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return ErrServerClosed
			}
			// Out of descriptors and similar transient errors: wait and retry
			// instead of spinning or giving up (as net/http does).
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd: accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.shutting.Load() || len(s.conns) >= s.cfg.MaxConns {
			s.mu.Unlock()
			s.log.Warn("nbd: refusing connection", "remote", nc.RemoteAddr().String(), "reason", "too many connections or shutting down")
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.connWG.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// ServeConn serves one already-accepted connection and returns when it ends.
// It is for callers that make their own connections (socketpairs, tests).
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	defer s.connWG.Done()
	c.serve()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting connections, answers ESHUTDOWN to new requests
// (and ERR_SHUTDOWN to new options), lets in-flight requests finish, closes
// every connection, and flushes every export's device. When ctx ends first,
// connections are closed at once and ctx's error is returned, but only once
// the device calls already running have returned: the caller closes the
// devices next, and must not do so under a write in progress (a device
// call that never returns, a hung disk, keeps Shutdown waiting; the WORM
// device recovers from a kill). The devices are flushed but not closed:
// they belong to the caller.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutting.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.drainAndClose(ctx)
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		// Every connection is closed (drainAndClose), so no request
		// starts; wait for the device calls in progress.
		s.log.Warn("nbd: shutdown deadline passed; connections closed, waiting for device calls in progress")
		<-done
	}
	for _, e := range s.exports {
		if e.ReadOnly {
			continue
		}
		if ferr := e.Device.Flush(); ferr != nil {
			err = errors.Join(err, fmt.Errorf("nbd: flush export %q: %w", e.Name, ferr))
		}
	}
	return err
}
