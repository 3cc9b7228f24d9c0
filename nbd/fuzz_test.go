package nbd_test

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/nbd"
)

// memDevice is an in-memory Device, so fuzzing does no disk I/O.
type memDevice struct {
	mu   sync.Mutex
	data []byte
}

func (m *memDevice) Size() int64 { return int64(len(m.data)) }
func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, blockdev.ErrOutOfRange
	}
	return copy(p, m.data[off:]), nil
}
func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, blockdev.ErrOutOfRange
	}
	return copy(m.data[off:], p), nil
}
func (m *memDevice) Flush() error                 { return nil }
func (m *memDevice) Trim(off, length int64) error { return m.WriteZeroes(off, length, true) }
func (m *memDevice) WriteZeroes(off, length int64, _ bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+length > int64(len(m.data)) {
		return blockdev.ErrOutOfRange
	}
	clear(m.data[off : off+length])
	return nil
}
func (m *memDevice) Close() error { return nil }

// CanZeroFast makes the FAST_ZERO success path reachable.
func (m *memDevice) CanZeroFast(off, length int64, mayPunch bool) bool { return mayPunch }

var _ nbd.FastZeroer = (*memDevice)(nil)

// runServerOn feeds input to one server connection as the client's bytes and
// discards what the server sends. It fails if the server does not finish.
func runServerOn(t *testing.T, input []byte) {
	srv, err := nbd.NewServer(nbd.Config{
		Exports: []nbd.Export{
			{Name: "", Device: &memDevice{data: make([]byte, 64<<10)}, MaxPayload: 16 << 10},
			{Name: "ro", Device: &memDevice{data: make([]byte, 8<<10)}, ReadOnly: true, MinBlock: 1, PrefBlock: 512, MaxPayload: 4096},
		},
		HandshakeTimeout: 5 * time.Second,
		MaxInFlight:      8,
	})
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		srv.ServeConn(server)
		close(done)
	}()
	go io.Copy(io.Discard, client)
	go func() {
		client.Write(input)
		client.Close()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("server did not finish the connection")
	}
	client.Close()
}

func optBytes(o nbd.Option, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, nbd.MagicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, uint32(o))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func clientFlagBytes(f nbd.ClientFlags) []byte { return binary.BigEndian.AppendUint32(nil, uint32(f)) }

// goPreamble is a valid client handshake ending in GO for the default export.
func goPreamble(structured bool) []byte {
	b := clientFlagBytes(nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes)
	if structured {
		b = append(b, optBytes(nbd.OptStructuredReply, nil)...)
	}
	return append(b, optBytes(nbd.OptGo, infoData("", nbd.InfoBlockSize))...)
}

// FuzzHandshake drives option haggling with arbitrary client bytes.
func FuzzHandshake(f *testing.F) {
	f.Add(goPreamble(false))
	f.Add(goPreamble(true))
	f.Add(append(clientFlagBytes(1), optBytes(nbd.OptExportName, []byte("ro"))...))
	f.Add(append(clientFlagBytes(3), optBytes(nbd.OptList, nil)...))
	f.Add(append(append(clientFlagBytes(3), optBytes(nbd.OptInfo, infoData("ro", 0, 1, 2, 3))...), optBytes(nbd.OptAbort, nil)...))
	f.Add(append(clientFlagBytes(3), optBytes(nbd.OptStartTLS, nil)...))
	f.Add(append(clientFlagBytes(3), optBytes(nbd.OptSetMetaContext, infoData("base:allocation"))...))
	f.Add(append(clientFlagBytes(3), optBytes(99, []byte("junk"))...))
	f.Fuzz(func(t *testing.T, input []byte) {
		runServerOn(t, input)
	})
}

func reqBytes(flags nbd.CmdFlags, typ nbd.Cmd, cookie, off uint64, length uint32) []byte {
	return nbd.AppendRequest(nil, nbd.Request{Magic: nbd.MagicRequest, Flags: flags, Type: typ, Cookie: cookie, Offset: off, Length: length})
}

// FuzzRequests drives the transmission phase: a valid handshake (structured
// replies or not, by the first byte) followed by arbitrary request bytes.
func FuzzRequests(f *testing.F) {
	var seq []byte
	seq = append(seq, reqBytes(0, nbd.CmdWrite, 1, 0, 1024)...)
	seq = append(seq, make([]byte, 1024)...)
	seq = append(seq, reqBytes(nbd.CmdFlagFUA, nbd.CmdRead, 2, 512, 4096)...)
	seq = append(seq, reqBytes(0, nbd.CmdTrim, 3, 0, 8192)...)
	seq = append(seq, reqBytes(nbd.CmdFlagNoHole|nbd.CmdFlagFastZero, nbd.CmdWriteZeroes, 4, 4096, 4096)...)
	seq = append(seq, reqBytes(0, nbd.CmdFlush, 5, 0, 0)...)
	seq = append(seq, reqBytes(0, nbd.CmdCache, 6, 0, 65536)...)
	seq = append(seq, reqBytes(nbd.CmdFlagDF, nbd.CmdRead, 7, 0, 16384)...)
	seq = append(seq, reqBytes(0, nbd.CmdDisc, 8, 0, 0)...)
	f.Add(byte(0), seq)
	f.Add(byte(1), seq)
	f.Add(byte(1), reqBytes(0, nbd.CmdWrite, 1, 65536, 512))
	f.Add(byte(0), reqBytes(0, nbd.CmdRead, 1, 1, 0xffffffff))
	f.Add(byte(0), reqBytes(0, 77, 1, 0, 512))
	f.Fuzz(func(t *testing.T, mode byte, reqs []byte) {
		runServerOn(t, append(goPreamble(mode&1 == 1), reqs...))
	})
}
