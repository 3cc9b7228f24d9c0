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
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/nbd"
)

// Server is a running test server.
type Server struct {
	*nbd.Server
	// Socket is the Unix socket path; URI is "nbd+unix:///?socket=PATH",
	// which names the default export.
	Socket string
	URI    string
}

// Start serves the exports on a fresh Unix socket until the test ends. The
// devices are not closed at cleanup; they belong to the caller.
func Start(t testing.TB, cfg nbd.Config) *Server {
	t.Helper()
	srv, err := nbd.NewServer(cfg)
	if err != nil {
		t.Fatalf("nbdtest: %v", err)
	}
	// Unix socket paths are limited to 108 bytes, and t.TempDir() under a
	// long test name can exceed that, so use a short directory of our own.
	dir, err := os.MkdirTemp("", "nbdtest")
	if err != nil {
		t.Fatalf("nbdtest: %v", err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("nbdtest: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("nbdtest: shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, nbd.ErrServerClosed) {
			t.Errorf("nbdtest: serve: %v", err)
		}
		os.RemoveAll(dir)
	})
	return &Server{Server: srv, Socket: sock, URI: "nbd+unix:///?socket=" + sock}
}

// StartDevice serves dev as the default export (writable, default block
// sizes) and returns its URI.
func StartDevice(t testing.TB, dev blockdev.Device) string {
	t.Helper()
	return Start(t, nbd.Config{Exports: []nbd.Export{{Device: dev}}}).URI
}
