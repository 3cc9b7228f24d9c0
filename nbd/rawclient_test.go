package nbd_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/nbd"
	"github.com/indelible-worm/indelible/nbd/nbdtest"
)

// rawClient speaks the protocol byte by byte, so tests can send exactly what
// a broken or hostile client would.
type rawClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, sock string) *rawClient {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// hello reads the server greeting and returns the handshake flags.
func (c *rawClient) hello() nbd.HandshakeFlags {
	c.t.Helper()
	b := c.read(18)
	if binary.BigEndian.Uint64(b) != nbd.MagicNBD || binary.BigEndian.Uint64(b[8:]) != nbd.MagicIHaveOpt {
		c.t.Fatalf("bad greeting % x", b)
	}
	return nbd.HandshakeFlags(binary.BigEndian.Uint16(b[16:]))
}

func (c *rawClient) clientFlags(f nbd.ClientFlags) {
	c.write(binary.BigEndian.AppendUint32(nil, uint32(f)))
}

func (c *rawClient) opt(o nbd.Option, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, nbd.MagicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, uint32(o))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

type optReply struct {
	opt  nbd.Option
	typ  nbd.ReplyType
	data []byte
}

func (c *rawClient) optReply() optReply {
	c.t.Helper()
	h := c.read(20)
	if m := binary.BigEndian.Uint64(h); m != nbd.MagicOptReply {
		c.t.Fatalf("bad option reply magic %#x", m)
	}
	r := optReply{opt: nbd.Option(binary.BigEndian.Uint32(h[8:])), typ: nbd.ReplyType(binary.BigEndian.Uint32(h[12:]))}
	r.data = c.read(int(binary.BigEndian.Uint32(h[16:])))
	return r
}

// expectOptError sends o and checks the single reply is the error typ.
func (c *rawClient) expectOptError(o nbd.Option, data []byte, typ nbd.ReplyType) {
	c.t.Helper()
	c.opt(o, data)
	r := c.optReply()
	if r.opt != o || r.typ != typ {
		c.t.Fatalf("option %v: reply %v type %#x, want %#x", o, r.opt, uint32(r.typ), uint32(typ))
	}
}

func infoData(name string, infos ...nbd.InfoType) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, uint16(i))
	}
	return b
}

// exportInfo is what INFO/GO told about an export.
type exportInfo struct {
	size                  uint64
	flags                 nbd.TransmissionFlags
	name, desc            string
	min, pref, maxPayload uint32
	gotBlockSize          bool
}

// info sends INFO or GO and collects replies up to the ACK.
func (c *rawClient) info(o nbd.Option, name string, infos ...nbd.InfoType) exportInfo {
	c.t.Helper()
	c.opt(o, infoData(name, infos...))
	var e exportInfo
	gotExport := false
	for {
		r := c.optReply()
		switch r.typ {
		case nbd.RepAck:
			if !gotExport {
				c.t.Fatalf("%v: ACK without NBD_INFO_EXPORT", o)
			}
			return e
		case nbd.RepInfo:
			switch nbd.InfoType(binary.BigEndian.Uint16(r.data)) {
			case nbd.InfoExport:
				if len(r.data) != 12 {
					c.t.Fatalf("INFO_EXPORT length %d", len(r.data))
				}
				e.size = binary.BigEndian.Uint64(r.data[2:])
				e.flags = nbd.TransmissionFlags(binary.BigEndian.Uint16(r.data[10:]))
				gotExport = true
			case nbd.InfoName:
				e.name = string(r.data[2:])
			case nbd.InfoDescription:
				e.desc = string(r.data[2:])
			case nbd.InfoBlockSize:
				if len(r.data) != 14 {
					c.t.Fatalf("INFO_BLOCK_SIZE length %d", len(r.data))
				}
				e.min = binary.BigEndian.Uint32(r.data[2:])
				e.pref = binary.BigEndian.Uint32(r.data[6:])
				e.maxPayload = binary.BigEndian.Uint32(r.data[10:])
				e.gotBlockSize = true
			}
		default:
			c.t.Fatalf("%v: unexpected reply type %#x %q", o, uint32(r.typ), r.data)
		}
	}
}

// start runs the greeting and GO for the default export.
func (c *rawClient) start(structured bool) exportInfo {
	c.t.Helper()
	c.hello()
	c.clientFlags(nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes)
	if structured {
		c.opt(nbd.OptStructuredReply, nil)
		if r := c.optReply(); r.typ != nbd.RepAck {
			c.t.Fatalf("STRUCTURED_REPLY: %#x", uint32(r.typ))
		}
	}
	return c.info(nbd.OptGo, "", nbd.InfoBlockSize)
}

func (c *rawClient) request(flags nbd.CmdFlags, typ nbd.Cmd, cookie, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	b := nbd.AppendRequest(nil, nbd.Request{Magic: nbd.MagicRequest, Flags: flags, Type: typ, Cookie: cookie, Offset: off, Length: length})
	c.write(append(b, payload...))
}

// reply is a decoded simple reply or one structured chunk.
type reply struct {
	structured bool
	errno      nbd.Errno
	cookie     uint64
	flags      uint16
	typ        uint16
	data       []byte // READ data (simple: caller reads it) or chunk payload
}

// readReply reads one simple reply (with dataLen bytes of data when the
// error is zero) or one structured chunk.
func (c *rawClient) readReply(dataLen int) reply {
	c.t.Helper()
	m := binary.BigEndian.Uint32(c.read(4))
	switch m {
	case nbd.MagicSimpleReply:
		h := c.read(12)
		r := reply{errno: nbd.Errno(binary.BigEndian.Uint32(h)), cookie: binary.BigEndian.Uint64(h[4:])}
		if r.errno == 0 && dataLen > 0 {
			r.data = c.read(dataLen)
		}
		return r
	case nbd.MagicStructuredReply:
		h := c.read(16)
		r := reply{structured: true, flags: binary.BigEndian.Uint16(h), typ: binary.BigEndian.Uint16(h[2:]),
			cookie: binary.BigEndian.Uint64(h[4:])}
		r.data = c.read(int(binary.BigEndian.Uint32(h[12:])))
		if r.typ&(1<<15) != 0 {
			r.errno = nbd.Errno(binary.BigEndian.Uint32(r.data))
		}
		return r
	default:
		c.t.Fatalf("bad reply magic %#x", m)
		return reply{}
	}
}

// expectClosed checks the server hard-disconnects (EOF, not a timeout).
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("server kept the connection open; want a hard disconnect")
	}
}

func newFile(t testing.TB, size int64) *blockdev.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	d, err := blockdev.OpenFile(p, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// checkGoroutines fails the test if goroutines started during it are still
// running once everything is cleaned up. Register it first so its cleanup
// runs last.
func checkGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		testenv.WaitFor(t, 10*time.Second, "goroutines to return to the baseline", func() bool {
			return runtime.NumGoroutine() <= base
		})
	})
}

func start(t *testing.T, cfg nbd.Config) *nbdtest.Server {
	return nbdtest.Start(t, cfg)
}
