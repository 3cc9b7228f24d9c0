package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// errHardDisconnect ends the connection without a reply: the peer broke a
// MUST of the protocol, or the spec leaves no way to report the failure.
var errHardDisconnect = errors.New("nbd: hard disconnect")

// negotiated is the outcome of a successful handshake.
type negotiated struct {
	exp        *export
	structured bool
}

// transmissionFlags are the flags this connection advertises for e.
func transmissionFlags(e *export, structured bool) TransmissionFlags {
	f := FlagHasFlags | FlagSendFlush | FlagCanMultiConn | FlagSendCache
	if e.ReadOnly {
		f |= FlagReadOnly
	} else {
		f |= FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero
	}
	if structured {
		f |= FlagSendDF
	}
	return f
}

// handshake runs the fixed newstyle handshake and option haggling. It
// returns the export to serve, or an error when the connection must end
// (ABORT, a protocol violation, EOF, shutdown during EXPORT_NAME).
func (c *conn) handshake() (negotiated, error) {
	var n negotiated
	c.nc.SetDeadline(time.Now().Add(c.srv.cfg.HandshakeTimeout))
	defer c.nc.SetDeadline(time.Time{})

	hello := make([]byte, 0, 18)
	hello = binary.BigEndian.AppendUint64(hello, MagicNBD)
	hello = binary.BigEndian.AppendUint64(hello, MagicIHaveOpt)
	hello = binary.BigEndian.AppendUint16(hello, uint16(FlagFixedNewstyle|FlagNoZeroes))
	if _, err := c.nc.Write(hello); err != nil {
		return n, err
	}
	var b4 [4]byte
	if _, err := io.ReadFull(c.br, b4[:]); err != nil {
		return n, err
	}
	cflags := ClientFlags(binary.BigEndian.Uint32(b4[:]))
	if cflags&^(FlagCFixedNewstyle|FlagCNoZeroes) != 0 {
		return n, fmt.Errorf("%w: unknown client flags %#x", errHardDisconnect, uint32(cflags))
	}
	noZeroes := cflags&FlagCNoZeroes != 0

	var hdr [optHeaderLen]byte
	data := make([]byte, 0, 512)
	out := make([]byte, 0, 512)
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return n, err
		}
		if m := binary.BigEndian.Uint64(hdr[0:8]); m != MagicIHaveOpt {
			return n, fmt.Errorf("%w: bad option magic %#x", errHardDisconnect, m)
		}
		opt := Option(binary.BigEndian.Uint32(hdr[8:12]))
		length := binary.BigEndian.Uint32(hdr[12:16])
		if length > maxOptionLen {
			return n, fmt.Errorf("%w: option %v with %d bytes of data (limit %d)", errHardDisconnect, opt, length, maxOptionLen)
		}
		if cap(data) < int(length) {
			data = make([]byte, length)
		}
		data = data[:length]
		if _, err := io.ReadFull(c.br, data); err != nil {
			return n, err
		}
		c.log.Debug("nbd: option", "opt", opt.String(), "len", length)

		out = out[:0]
		if c.srv.shutting.Load() && opt != OptAbort {
			if opt == OptExportName {
				return n, fmt.Errorf("%w: EXPORT_NAME during shutdown", errHardDisconnect)
			}
			out = appendOptError(out, opt, RepErrShutdown, "server is shutting down")
			if _, err := c.nc.Write(out); err != nil {
				return n, err
			}
			continue
		}
		switch opt {
		case OptExportName:
			e := c.srv.lookup(string(data))
			if e == nil {
				// EXPORT_NAME has no error reply: the spec says to end the session.
				return n, fmt.Errorf("%w: EXPORT_NAME for unknown export %s", errHardDisconnect, quote(data))
			}
			n.exp = e
			out = binary.BigEndian.AppendUint64(out, uint64(e.size))
			out = binary.BigEndian.AppendUint16(out, uint16(transmissionFlags(e, n.structured)))
			if !noZeroes {
				out = append(out, make([]byte, exportNameZeroPadLen)...)
			}
			_, err := c.nc.Write(out)
			return n, err

		case OptAbort:
			out = appendOptReply(out, opt, RepAck, 0)
			c.nc.Write(out) // the client may already be gone; that is fine
			return n, io.EOF

		case OptList:
			if length != 0 {
				out = appendOptError(out, opt, RepErrInvalid, "LIST takes no data")
				break
			}
			for _, e := range c.srv.exports {
				l := 4 + len(e.Name) + len(e.Description)
				out = appendOptReply(out, opt, RepServer, uint32(l))
				out = binary.BigEndian.AppendUint32(out, uint32(len(e.Name)))
				out = append(out, e.Name...)
				out = append(out, e.Description...)
			}
			out = appendOptReply(out, opt, RepAck, 0)

		case OptStartTLS:
			out = appendOptError(out, opt, RepErrPolicy, "TLS is not supported by this server; use a Unix socket or an SSH tunnel")

		case OptInfo, OptGo:
			var e *export
			out, e = c.info(out, opt, data, n.structured)
			if e != nil && opt == OptGo {
				_, err := c.nc.Write(out)
				n.exp = e
				return n, err
			}

		case OptStructuredReply:
			if length != 0 {
				out = appendOptError(out, opt, RepErrInvalid, "STRUCTURED_REPLY takes no data")
				break
			}
			n.structured = true
			out = appendOptReply(out, opt, RepAck, 0)

		default:
			// Unknown, withdrawn or unimplemented (metadata contexts, extended
			// headers): the data was read above, so the stream stays in sync.
			out = appendOptError(out, opt, RepErrUnsup, "option "+opt.String()+" is not supported")
		}
		if _, err := c.nc.Write(out); err != nil {
			return n, err
		}
	}
}

// info answers INFO or GO. It returns the replies to send, and the export
// when the answer is a success.
func (c *conn) info(out []byte, opt Option, data []byte, structured bool) ([]byte, *export) {
	if len(data) < 6 {
		return appendOptError(out, opt, RepErrInvalid, "option data shorter than 6 bytes"), nil
	}
	nameLen := binary.BigEndian.Uint32(data[0:4])
	if uint64(nameLen) > uint64(len(data)-6) {
		return appendOptError(out, opt, RepErrInvalid, "name length runs past the option data"), nil
	}
	name := data[4 : 4+nameLen]
	rest := data[4+nameLen:]
	nreq := int(binary.BigEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if len(rest) != 2*nreq {
		return appendOptError(out, opt, RepErrInvalid, "information request count does not match the option length"), nil
	}
	var wantName, wantDesc bool
	for i := 0; i < nreq; i++ {
		switch InfoType(binary.BigEndian.Uint16(rest[2*i:])) {
		case InfoName:
			wantName = true
		case InfoDescription:
			wantDesc = true
		}
		// BLOCK_SIZE is always sent; unknown requests are ignored as the spec says.
	}
	e := c.srv.lookup(string(name))
	if e == nil {
		return appendOptError(out, opt, RepErrUnknown, "no export named "+quote(name)), nil
	}
	out = appendOptReply(out, opt, RepInfo, 12)
	out = binary.BigEndian.AppendUint16(out, uint16(InfoExport))
	out = binary.BigEndian.AppendUint64(out, uint64(e.size))
	out = binary.BigEndian.AppendUint16(out, uint16(transmissionFlags(e, structured)))
	if wantName {
		out = appendOptReply(out, opt, RepInfo, uint32(2+len(e.Name)))
		out = binary.BigEndian.AppendUint16(out, uint16(InfoName))
		out = append(out, e.Name...)
	}
	if wantDesc && e.Description != "" {
		out = appendOptReply(out, opt, RepInfo, uint32(2+len(e.Description)))
		out = binary.BigEndian.AppendUint16(out, uint16(InfoDescription))
		out = append(out, e.Description...)
	}
	out = appendOptReply(out, opt, RepInfo, 14)
	out = binary.BigEndian.AppendUint16(out, uint16(InfoBlockSize))
	out = binary.BigEndian.AppendUint32(out, e.MinBlock)
	out = binary.BigEndian.AppendUint32(out, e.PrefBlock)
	out = binary.BigEndian.AppendUint32(out, e.MaxPayload)
	out = appendOptReply(out, opt, RepAck, 0)
	return out, e
}

func appendOptError(out []byte, opt Option, typ ReplyType, msg string) []byte {
	out = appendOptReply(out, opt, typ, uint32(len(msg)))
	return append(out, msg...)
}

// quote shows a client-supplied name in a message, bounded and escaped.
func quote(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("%q...", b[:64])
	}
	return fmt.Sprintf("%q", b)
}
