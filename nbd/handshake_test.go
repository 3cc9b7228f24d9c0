package nbd_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/indelible-worm/indelible/nbd"
)

func twoExports(t *testing.T) nbd.Config {
	return nbd.Config{Exports: []nbd.Export{
		{Name: "", Description: "default disk", Device: newFile(t, 1<<20)},
		{Name: "ro", Description: "read-only disk", Device: newFile(t, 2<<20), ReadOnly: true, MinBlock: 4096},
	}}
}

func TestHandshakeOptions(t *testing.T) {
	checkGoroutines(t)
	srv := start(t, twoExports(t))
	c := dialRaw(t, srv.Socket)
	if f := c.hello(); f != nbd.FlagFixedNewstyle|nbd.FlagNoZeroes {
		t.Fatalf("handshake flags %#x", f)
	}
	c.clientFlags(nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes)

	// LIST: one SERVER reply per export, then ACK.
	c.opt(nbd.OptList, nil)
	var names []string
	for {
		r := c.optReply()
		if r.typ == nbd.RepAck {
			break
		}
		if r.typ != nbd.RepServer {
			t.Fatalf("LIST reply type %#x", uint32(r.typ))
		}
		n := binary.BigEndian.Uint32(r.data)
		names = append(names, string(r.data[4:4+n])+"|"+string(r.data[4+n:]))
	}
	if want := []string{"|default disk", "ro|read-only disk"}; len(names) != 2 || names[0] != want[0] || names[1] != want[1] {
		t.Fatalf("LIST = %q, want %q", names, want)
	}
	c.expectOptError(nbd.OptList, []byte{0}, nbd.RepErrInvalid)

	// Unknown options are refused and their data skipped: the next option
	// must still parse.
	c.expectOptError(0xdead, bytes.Repeat([]byte{0xff}, 1000), nbd.RepErrUnsup)
	c.expectOptError(nbd.OptStartTLS, nil, nbd.RepErrPolicy)
	c.expectOptError(nbd.OptListMetaContext, infoData(""), nbd.RepErrUnsup)
	c.expectOptError(nbd.OptStructuredReply, []byte{1}, nbd.RepErrInvalid)

	// INFO on each export, with and without optional items.
	e := c.info(nbd.OptInfo, "ro", nbd.InfoName, nbd.InfoDescription, nbd.InfoBlockSize, 0x7777)
	if e.size != 2<<20 || e.name != "ro" || e.desc != "read-only disk" || e.min != 4096 || e.pref != 4096 || e.maxPayload != nbd.HardMaxPayload {
		t.Fatalf("INFO ro = %+v", e)
	}
	if e.flags&nbd.FlagReadOnly == 0 || e.flags&nbd.FlagSendTrim != 0 || e.flags&nbd.FlagHasFlags == 0 {
		t.Fatalf("INFO ro flags %v", e.flags)
	}
	e = c.info(nbd.OptInfo, "")
	if e.size != 1<<20 || e.flags&nbd.FlagReadOnly != 0 || e.min != 512 {
		t.Fatalf("INFO default = %+v", e)
	}
	want := nbd.FlagHasFlags | nbd.FlagSendFlush | nbd.FlagSendFUA | nbd.FlagSendTrim | nbd.FlagSendWriteZeroes |
		nbd.FlagCanMultiConn | nbd.FlagSendCache | nbd.FlagSendFastZero
	if e.flags != want {
		t.Fatalf("flags before STRUCTURED_REPLY = %v, want %v", e.flags, want)
	}
	c.expectOptError(nbd.OptInfo, infoData("nope"), nbd.RepErrUnknown)
	// Malformed INFO: name length past the data, count not matching.
	bad := infoData("ro")
	binary.BigEndian.PutUint32(bad, 100)
	c.expectOptError(nbd.OptInfo, bad, nbd.RepErrInvalid)
	c.expectOptError(nbd.OptGo, append(infoData("ro"), 0), nbd.RepErrInvalid)
	c.expectOptError(nbd.OptGo, []byte{0, 0}, nbd.RepErrInvalid)

	// STRUCTURED_REPLY adds SEND_DF; then GO enters transmission.
	c.opt(nbd.OptStructuredReply, nil)
	if r := c.optReply(); r.typ != nbd.RepAck {
		t.Fatalf("STRUCTURED_REPLY: %#x", uint32(r.typ))
	}
	e = c.info(nbd.OptGo, "", nbd.InfoBlockSize)
	if e.flags != want|nbd.FlagSendDF {
		t.Fatalf("flags after STRUCTURED_REPLY = %v", e.flags)
	}
	c.request(0, nbd.CmdRead, 7, 0, 512, nil)
	r := c.readReply(0)
	if !r.structured || r.typ != nbd.ReplyTypeOffsetData || r.flags != nbd.ReplyFlagDone || len(r.data) != 8+512 || r.cookie != 7 {
		t.Fatalf("structured READ reply %+v", r)
	}
}

func TestExportName(t *testing.T) {
	checkGoroutines(t)
	srv := start(t, twoExports(t))
	for _, noZeroes := range []bool{false, true} {
		c := dialRaw(t, srv.Socket)
		c.hello()
		f := nbd.FlagCFixedNewstyle
		if noZeroes {
			f |= nbd.FlagCNoZeroes
		}
		c.clientFlags(f)
		c.opt(nbd.OptExportName, []byte("ro"))
		b := c.read(10)
		if binary.BigEndian.Uint64(b) != 2<<20 || nbd.TransmissionFlags(binary.BigEndian.Uint16(b[8:]))&nbd.FlagReadOnly == 0 {
			t.Fatalf("EXPORT_NAME reply % x", b)
		}
		if !noZeroes {
			if z := c.read(124); !bytes.Equal(z, make([]byte, 124)) {
				t.Fatal("padding not zero")
			}
		}
		// The first bytes after the reply must be a reply to our request,
		// proving the padding was exactly right.
		c.request(0, nbd.CmdRead, 1, 0, 4096, nil)
		if r := c.readReply(4096); r.errno != 0 || r.cookie != 1 {
			t.Fatalf("read after EXPORT_NAME: %+v", r)
		}
	}
	// EXPORT_NAME has no error reply: an unknown name ends the session.
	c := dialRaw(t, srv.Socket)
	c.hello()
	c.clientFlags(nbd.FlagCFixedNewstyle)
	c.opt(nbd.OptExportName, []byte("missing"))
	c.expectClosed()
}

func TestHandshakeViolationsDisconnect(t *testing.T) {
	checkGoroutines(t)
	srv := start(t, twoExports(t))
	cases := map[string]func(c *rawClient){
		"unknown client flag": func(c *rawClient) { c.clientFlags(1 << 5) },
		"bad option magic": func(c *rawClient) {
			c.clientFlags(nbd.FlagCFixedNewstyle)
			c.write(make([]byte, 16))
		},
		"huge option length": func(c *rawClient) {
			c.clientFlags(nbd.FlagCFixedNewstyle)
			b := binary.BigEndian.AppendUint64(nil, nbd.MagicIHaveOpt)
			b = binary.BigEndian.AppendUint32(b, uint32(nbd.OptGo))
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			c.write(b)
		},
		"truncated option": func(c *rawClient) {
			c.clientFlags(nbd.FlagCFixedNewstyle)
			c.write(binary.BigEndian.AppendUint64(nil, nbd.MagicIHaveOpt)[:5])
			c.c.(interface{ CloseWrite() error }).CloseWrite()
		},
		"abort": func(c *rawClient) {
			c.clientFlags(nbd.FlagCFixedNewstyle)
			c.opt(nbd.OptAbort, nil)
			if r := c.optReply(); r.typ != nbd.RepAck {
				c.t.Fatalf("ABORT reply %#x", uint32(r.typ))
			}
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			c := dialRaw(t, srv.Socket)
			c.t = t
			c.hello()
			f(c)
			c.expectClosed()
			// The server still serves others.
			o := dialRaw(t, srv.Socket)
			o.start(false)
		})
	}
}
