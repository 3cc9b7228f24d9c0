// Package nbdtest starts in-process NBD servers for tests: a blockdev.Device
// served on a Unix socket in a temporary directory, shut down at test
// cleanup, reachable by any NBD client through its URI.
package nbdtest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/nbd"
)

// Server is a running test server.
type Server struct {
	*nbd.Server
	// Socket is the Unix socket path; URI is "nbd+unix:///?socket=PATH",
	// which names the default export. Both are empty for StartTCP.
	Socket string
	URI    string
	// Port is the loopback TCP port (StartTCP only).
	Port int
	stop func()
}

// Start serves the exports on a fresh Unix socket until the test ends. The
// devices are not closed at cleanup; they belong to the caller.
func Start(t testing.TB, cfg nbd.Config) *Server {
	t.Helper()
	// Unix socket paths are limited to 108 bytes, and t.TempDir() under a
	// long test name can exceed that, so use a short directory of our own.
	dir, err := os.MkdirTemp("", "nbdtest")
	if err != nil {
		t.Fatalf("nbdtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after serve's cleanup
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("nbdtest: %v", err)
	}
	s := serve(t, cfg, ln)
	s.Socket, s.URI = sock, "nbd+unix:///?socket="+sock
	return s
}

// StartTCP serves the exports on a loopback TCP port (Server.Port) until
// Stop or the test's end: for clients that cannot use a Unix socket, such
// as a virtual machine's kernel through qemu's user-mode network.
func StartTCP(t testing.TB, cfg nbd.Config) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("nbdtest: %v", err)
	}
	s := serve(t, cfg, ln)
	s.Port = ln.Addr().(*net.TCPAddr).Port
	return s
}

// serve runs a server for cfg on ln, stopped at the test's end.
func serve(t testing.TB, cfg nbd.Config, ln net.Listener) *Server {
	t.Helper()
	srv, err := nbd.NewServer(cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("nbdtest: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	var once sync.Once
	s := &Server{Server: srv}
	s.stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("nbdtest: shutdown: %v", err)
			}
			if err := <-done; !errors.Is(err, nbd.ErrServerClosed) {
				t.Errorf("nbdtest: serve: %v", err)
			}
		})
	}
	t.Cleanup(s.stop)
	return s
}

// Stop shuts the server down now (its exports' devices stay open), so that
// a test can close them and look at what they left; the test's cleanup
// then has nothing more to do.
func (s *Server) Stop() { s.stop() }

// StartDevice serves dev as the default export (writable, default block
// sizes) and returns its URI.
func StartDevice(t testing.TB, dev blockdev.Device) string {
	t.Helper()
	return Start(t, nbd.Config{Exports: []nbd.Export{{Device: dev}}}).URI
}
