package nbd

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// Every integer on the wire is big-endian.
const (
	// Handshake magics.
	MagicNBD      uint64 = 0x4e42444d41474943 // "NBDMAGIC", the first 8 bytes a server sends
	MagicIHaveOpt uint64 = 0x49484156454f5054 // "IHAVEOPT", newstyle marker and option request prefix
	MagicOptReply uint64 = 0x0003e889045565a9 // prefix of every fixed-newstyle option reply

	// Transmission magics.
	MagicRequest         uint32 = 0x25609513
	MagicSimpleReply     uint32 = 0x67446698
	MagicStructuredReply uint32 = 0x668e33ef
)

// HandshakeFlags are the 16 bits the server sends after IHAVEOPT.
type HandshakeFlags uint16

const (
	FlagFixedNewstyle HandshakeFlags = 1 << 0
	FlagNoZeroes      HandshakeFlags = 1 << 1
)

// ClientFlags are the 32 bits the client answers with.
type ClientFlags uint32

const (
	FlagCFixedNewstyle ClientFlags = 1 << 0
	FlagCNoZeroes      ClientFlags = 1 << 1
)

// TransmissionFlags describe an export (NBD_FLAG_*).
type TransmissionFlags uint16

const (
	FlagHasFlags        TransmissionFlags = 1 << 0
	FlagReadOnly        TransmissionFlags = 1 << 1
	FlagSendFlush       TransmissionFlags = 1 << 2
	FlagSendFUA         TransmissionFlags = 1 << 3
	FlagRotational      TransmissionFlags = 1 << 4
	FlagSendTrim        TransmissionFlags = 1 << 5
	FlagSendWriteZeroes TransmissionFlags = 1 << 6
	FlagSendDF          TransmissionFlags = 1 << 7
	FlagCanMultiConn    TransmissionFlags = 1 << 8
	FlagSendResize      TransmissionFlags = 1 << 9
	FlagSendCache       TransmissionFlags = 1 << 10
	FlagSendFastZero    TransmissionFlags = 1 << 11
)

var transmissionFlagNames = []string{
	"HAS_FLAGS", "READ_ONLY", "SEND_FLUSH", "SEND_FUA", "ROTATIONAL", "SEND_TRIM",
	"SEND_WRITE_ZEROES", "SEND_DF", "CAN_MULTI_CONN", "SEND_RESIZE", "SEND_CACHE", "SEND_FAST_ZERO",
}

func (f TransmissionFlags) String() string { return bitNames(uint64(f), transmissionFlagNames) }

// Option is an option code sent during the handshake (NBD_OPT_*).
type Option uint32

const (
	OptExportName      Option = 1
	OptAbort           Option = 2
	OptList            Option = 3
	OptPeekExport      Option = 4 // withdrawn
	OptStartTLS        Option = 5
	OptInfo            Option = 6
	OptGo              Option = 7
	OptStructuredReply Option = 8
	OptListMetaContext Option = 9
	OptSetMetaContext  Option = 10
	OptExtendedHeaders Option = 11
)

var optionNames = map[Option]string{
	OptExportName: "EXPORT_NAME", OptAbort: "ABORT", OptList: "LIST", OptPeekExport: "PEEK_EXPORT",
	OptStartTLS: "STARTTLS", OptInfo: "INFO", OptGo: "GO", OptStructuredReply: "STRUCTURED_REPLY",
	OptListMetaContext: "LIST_META_CONTEXT", OptSetMetaContext: "SET_META_CONTEXT",
	OptExtendedHeaders: "EXTENDED_HEADERS",
}

func (o Option) String() string {
	if n, ok := optionNames[o]; ok {
		return n
	}
	return fmt.Sprintf("OPT_%d", uint32(o))
}

// ReplyType is the type of an option reply (NBD_REP_*).
type ReplyType uint32

const (
	RepAck         ReplyType = 1
	RepServer      ReplyType = 2
	RepInfo        ReplyType = 3
	RepMetaContext ReplyType = 4

	repErr              ReplyType = 1 << 31
	RepErrUnsup         ReplyType = repErr + 1
	RepErrPolicy        ReplyType = repErr + 2
	RepErrInvalid       ReplyType = repErr + 3
	RepErrPlatform      ReplyType = repErr + 4
	RepErrTLSReqd       ReplyType = repErr + 5
	RepErrUnknown       ReplyType = repErr + 6
	RepErrShutdown      ReplyType = repErr + 7
	RepErrBlockSizeReqd ReplyType = repErr + 8
	RepErrTooBig        ReplyType = repErr + 9
	RepErrExtHeaderReqd ReplyType = repErr + 10
)

// IsError reports whether the reply type is an error (bit 31 set).
func (r ReplyType) IsError() bool { return r&repErr != 0 }

// InfoType is the type of an NBD_REP_INFO payload (NBD_INFO_*).
type InfoType uint16

const (
	InfoExport      InfoType = 0
	InfoName        InfoType = 1
	InfoDescription InfoType = 2
	InfoBlockSize   InfoType = 3
)

// Cmd is a transmission request type (NBD_CMD_*).
type Cmd uint16

const (
	CmdRead        Cmd = 0
	CmdWrite       Cmd = 1
	CmdDisc        Cmd = 2
	CmdFlush       Cmd = 3
	CmdTrim        Cmd = 4
	CmdCache       Cmd = 5
	CmdWriteZeroes Cmd = 6
	CmdBlockStatus Cmd = 7
	CmdResize      Cmd = 8
)

var cmdNames = [...]string{"READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES", "BLOCK_STATUS", "RESIZE"}

func (c Cmd) String() string {
	if int(c) < len(cmdNames) {
		return cmdNames[c]
	}
	return fmt.Sprintf("CMD_%d", uint16(c))
}

// CmdFlags are the per-request flags (NBD_CMD_FLAG_*).
type CmdFlags uint16

const (
	CmdFlagFUA        CmdFlags = 1 << 0
	CmdFlagNoHole     CmdFlags = 1 << 1
	CmdFlagDF         CmdFlags = 1 << 2
	CmdFlagReqOne     CmdFlags = 1 << 3
	CmdFlagFastZero   CmdFlags = 1 << 4
	CmdFlagPayloadLen CmdFlags = 1 << 5
)

var cmdFlagNames = []string{"FUA", "NO_HOLE", "DF", "REQ_ONE", "FAST_ZERO", "PAYLOAD_LEN"}

func (f CmdFlags) String() string { return bitNames(uint64(f), cmdFlagNames) }

// Structured reply chunk flags and types (NBD_REPLY_FLAG_*, NBD_REPLY_TYPE_*).
const (
	ReplyFlagDone uint16 = 1 << 0

	ReplyTypeNone        uint16 = 0
	ReplyTypeOffsetData  uint16 = 1
	ReplyTypeOffsetHole  uint16 = 2
	ReplyTypeBlockStatus uint16 = 5
	ReplyTypeError       uint16 = 1<<15 + 1
	ReplyTypeErrorOffset uint16 = 1<<15 + 2
)

// Errno is an error value in a transmission reply. The protocol fixes these
// numbers; they are not the host's errno values.
type Errno uint32

const (
	EPERM     Errno = 1
	EIO       Errno = 5
	ENOMEM    Errno = 12
	EINVAL    Errno = 22
	ENOSPC    Errno = 28
	EOVERFLOW Errno = 75
	ENOTSUP   Errno = 95
	ESHUTDOWN Errno = 108
)

var errnoNames = map[Errno]string{
	EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL", ENOSPC: "ENOSPC",
	EOVERFLOW: "EOVERFLOW", ENOTSUP: "ENOTSUP", ESHUTDOWN: "ESHUTDOWN",
}

func (e Errno) String() string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", uint32(e))
}

// Sizes of the fixed wire structures.
const (
	optHeaderLen         = 16 // IHAVEOPT u64, option u32, length u32
	optReplyHeaderLen    = 20 // magic u64, option u32, type u32, length u32
	requestLen           = 28 // struct nbd_request
	simpleReplyLen       = 16 // struct nbd_simple_reply
	structuredHeaderLen  = 20 // struct nbd_structured_reply
	exportNameZeroPadLen = 124
)

// Request is the fixed 28-byte transmission request (struct nbd_request,
// nbd.h). Flags and Type are two separate big-endian u16 fields; reading them
// as one u32 breaks as soon as a client sets a flag.
type Request struct {
	Magic  uint32
	Flags  CmdFlags
	Type   Cmd
	Cookie uint64
	Offset uint64
	Length uint32
}

// DecodeRequest parses a request header from b, which must hold at least
// requestLen bytes. It does not check the magic.
func DecodeRequest(b []byte) Request {
	_ = b[requestLen-1]
	return Request{
		Magic:  binary.BigEndian.Uint32(b[0:4]),
		Flags:  CmdFlags(binary.BigEndian.Uint16(b[4:6])),
		Type:   Cmd(binary.BigEndian.Uint16(b[6:8])),
		Cookie: binary.BigEndian.Uint64(b[8:16]),
		Offset: binary.BigEndian.Uint64(b[16:24]),
		Length: binary.BigEndian.Uint32(b[24:28]),
	}
}

// AppendRequest appends the wire form of r to b (used by tests and clients).
func AppendRequest(b []byte, r Request) []byte {
	b = binary.BigEndian.AppendUint32(b, r.Magic)
	b = binary.BigEndian.AppendUint16(b, uint16(r.Flags))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Type))
	b = binary.BigEndian.AppendUint64(b, r.Cookie)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	return binary.BigEndian.AppendUint32(b, r.Length)
}

func appendSimpleReply(b []byte, errno Errno, cookie uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, MagicSimpleReply)
	b = binary.BigEndian.AppendUint32(b, uint32(errno))
	return binary.BigEndian.AppendUint64(b, cookie)
}

func appendChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, MagicStructuredReply)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	return binary.BigEndian.AppendUint32(b, length)
}

func appendOptReply(b []byte, opt Option, typ ReplyType, length uint32) []byte {
	b = binary.BigEndian.AppendUint64(b, MagicOptReply)
	b = binary.BigEndian.AppendUint32(b, uint32(opt))
	b = binary.BigEndian.AppendUint32(b, uint32(typ))
	return binary.BigEndian.AppendUint32(b, length)
}

func bitNames(v uint64, names []string) string {
	if v == 0 {
		return "0"
	}
	var parts []string
	for i, n := range names {
		if v&(1<<i) != 0 {
			parts = append(parts, n)
			v &^= 1 << i
		}
	}
	if v != 0 {
		parts = append(parts, fmt.Sprintf("%#x", v))
	}
	return strings.Join(parts, "|")
}
