package nbd

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
)

// Shutdown's drain of a connection ends with its deadline even when the
// connection's last replies are stuck in a write to a client that does not
// read them: that write holds the reply writer, and the drain's final flush
// waited for it for replyWriteTimeout (2 min) past the caller's deadline.
func TestDrainEndsAtDeadlineWhileReplyWriteBlocked(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := blockdev.OpenFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	srv, err := NewServer(Config{Exports: []Export{{Device: dev}}})
	if err != nil {
		t.Fatal(err)
	}
	server, client := net.Pipe() // a write blocks until the client reads: it never does
	defer client.Close()
	c := newConn(srv, server)
	c.state.Store(stateTransmission)
	if !c.w.lock() {
		t.Fatal("reply writer closed")
	}
	c.w.buf = append(c.w.buf, make([]byte, 4096)...) // replies waiting to go out
	c.w.mu.Unlock()
	stuck := make(chan struct{})
	go func() { defer close(stuck); c.w.flushAll() }() // as the reader's final flush after DISC
	for c.w.mu.TryLock() {                             // wait until the write holds the writer
		c.w.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	drained := make(chan struct{})
	go func() { defer close(drained); c.drainAndClose(ctx) }()
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		c.close() // let both goroutines end
		<-drained
		t.Fatal("the drain outlived its 200 ms deadline by 10 s, waiting for a reply write the client never reads")
	}
	<-stuck
}
