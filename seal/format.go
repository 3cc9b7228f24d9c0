package seal

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Names and sizes below are part of the SealFS v2 on-disk format
// (sealfstypes.h in DMARCE-PROJECT/sealfs); docs/FORMAT.md describes them
// byte by byte. All integers are little-endian, as SealFS writes them on x86.
const (
	// LogName is the entry file inside a store directory (SealFS DEFAULTLNAME).
	LogName = ".SEALFS.LOG"
	// LogHeaderSize is the size of sealfs_logfile_header: one u64 magic.
	LogHeaderSize = 8
	// KeyHeaderSize is the size of sealfs_keyfile_header: u64 magic, u64 burnt.
	KeyHeaderSize = 16
	// KeySize is the size of one key in the keystream and of every HMAC
	// (SealFS FPR_SIZE = SHA256_DIGEST_SIZE).
	KeySize = 32
	// EntrySize is the size of sealfs_logfile_entry: five u64 and a digest.
	EntrySize = 5*8 + KeySize
	// FakeInode marks the filler entries that close a ratchet block
	// (SealFS FAKEINODE); they seal no data.
	FakeInode = ^uint64(0)
	// DefaultNRatchet is SealFS's default NRATCHET, (1<<5)-1: each key read
	// from the keystream seals this many entries through the ratchet.
	DefaultNRatchet = 31
	// MaxNRatchet is the largest nratchet SealFS's verify tool tries when
	// it detects nratchet from the first entry.
	MaxNRatchet = 512
)

// Sentinel errors; wrapped errors carry details, test with errors.Is.
var (
	ErrBadMagic       = errors.New("seal: magic numbers do not match")
	ErrShort          = errors.New("seal: short read")
	ErrKeysExhausted  = errors.New("seal: keystream exhausted; no append can be sealed (create a new store with a larger --size)")
	ErrOffset         = errors.New("seal: append offset is not the file's sealed watermark")
	ErrCorrupt        = errors.New("seal: store is damaged beyond crash repair")
	ErrClosed         = errors.New("seal: store is closed")
	ErrInUse          = errors.New("seal: store is open in another process (a running device?)")
	ErrBadPath        = errors.New("seal: invalid real-log path")
	ErrFileConflict   = errors.New("seal: file ID or path already bound differently")
	ErrTooLarge       = errors.New("seal: record too large")
	ErrUnsupportedVer = errors.New("seal: unsupported record version")
)

// FormatError reports malformed bytes at an offset of a store file.
type FormatError struct {
	File   string // store-relative name, e.g. ".SEALFS.LOG"
	Off    int64  // byte offset of the structure
	Struct string // what was being decoded
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("seal: %s at %s offset %d: %s", e.Struct, e.File, e.Off, e.Msg)
}

// KeyHeader mirrors struct sealfs_keyfile_header.
type KeyHeader struct {
	Magic uint64
	Burnt uint64 // absolute offset of the first unburnt key; starts at KeyHeaderSize
}

// MarshalBinary encodes h in its 16 on-disk bytes.
func (h KeyHeader) MarshalBinary() ([]byte, error) {
	b := make([]byte, KeyHeaderSize)
	binary.LittleEndian.PutUint64(b[0:], h.Magic)
	binary.LittleEndian.PutUint64(b[8:], h.Burnt)
	return b, nil
}

// ParseKeyHeader decodes a keystream header. size is the keystream file size,
// used to bound Burnt; pass -1 when unknown.
func ParseKeyHeader(b []byte, size int64) (KeyHeader, error) {
	if len(b) < KeyHeaderSize {
		return KeyHeader{}, &FormatError{File: "keystream", Struct: "key header", Msg: fmt.Sprintf("%d bytes, need %d", len(b), KeyHeaderSize)}
	}
	h := KeyHeader{Magic: binary.LittleEndian.Uint64(b[0:]), Burnt: binary.LittleEndian.Uint64(b[8:])}
	if h.Burnt < KeyHeaderSize || (h.Burnt-KeyHeaderSize)%KeySize != 0 {
		return h, &FormatError{File: "keystream", Off: 8, Struct: "key header", Msg: fmt.Sprintf("burnt offset %d is not %d plus a multiple of %d", h.Burnt, KeyHeaderSize, KeySize)}
	}
	if size >= 0 && h.Burnt > uint64(size) {
		return h, &FormatError{File: "keystream", Off: 8, Struct: "key header", Msg: fmt.Sprintf("burnt offset %d beyond the keystream's %d bytes", h.Burnt, size)}
	}
	return h, nil
}

// Entry mirrors struct sealfs_logfile_entry: one sealed append.
type Entry struct {
	RatchetOffset uint64 // position inside the ratchet block: index % nratchet
	Inode         uint64 // file identifier (FakeInode for filler entries)
	Offset        uint64 // byte offset of the append in its real log
	Count         uint64 // length of the append
	KeyOffset     uint64 // keystream offset of the block's key
	MAC           [KeySize]byte
}

// AppendBinary appends the 72 on-disk bytes of e to b.
func (e *Entry) AppendBinary(b []byte) []byte {
	return append(e.appendHead(b), e.MAC[:]...)
}

// entryHeadSize is the size of the five fields before the MAC, which the
// MAC covers before the appended bytes.
const entryHeadSize = EntrySize - KeySize

// appendHead appends the five fields before the MAC to b.
func (e *Entry) appendHead(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, e.RatchetOffset)
	b = binary.LittleEndian.AppendUint64(b, e.Inode)
	b = binary.LittleEndian.AppendUint64(b, e.Offset)
	b = binary.LittleEndian.AppendUint64(b, e.Count)
	return binary.LittleEndian.AppendUint64(b, e.KeyOffset)
}

// entryHead encodes the five fields before the MAC into b, without
// allocating.
func entryHead(b *[entryHeadSize]byte, e *Entry) []byte {
	return e.appendHead(b[:0])
}

// ParseEntry decodes one entry. Every bit pattern is a well-formed entry;
// whether it is a valid one is for the verifier to say.
func ParseEntry(b []byte) (Entry, error) {
	if len(b) < EntrySize {
		return Entry{}, fmt.Errorf("%w: entry has %d bytes, need %d", ErrShort, len(b), EntrySize)
	}
	var e Entry
	e.RatchetOffset = binary.LittleEndian.Uint64(b[0:])
	e.Inode = binary.LittleEndian.Uint64(b[8:])
	e.Offset = binary.LittleEndian.Uint64(b[16:])
	e.Count = binary.LittleEndian.Uint64(b[24:])
	e.KeyOffset = binary.LittleEndian.Uint64(b[32:])
	copy(e.MAC[:], b[40:EntrySize])
	return e, nil
}

func (e *Entry) String() string {
	ino := fmt.Sprint(e.Inode)
	if e.Inode == FakeInode {
		ino = "SEAL"
	}
	return fmt.Sprintf("[roff %d inode %s offset %d count %d koffset %d]", e.RatchetOffset, ino, e.Offset, e.Count, e.KeyOffset)
}

// keyOff is the keystream offset of key slot i (slot 0 follows the header).
func keyOff(i int64) int64 { return KeyHeaderSize + i*KeySize }

// keySlot is the number of whole key slots before keystream offset off: the
// slot that starts at off, or the slots in a keystream of off bytes.
func keySlot(off int64) int64 { return (off - KeyHeaderSize) / KeySize }

// entryPos is where entry number i lives in .SEALFS.LOG. SealFS writes each
// entry at a position fixed by its key: header + (keyIndex*nratchet+roff)*72,
// which is simply the entry's sequence number.
func entryPos(i int64) int64 { return LogHeaderSize + i*EntrySize }

// expectedPlace is the (ratchet offset, key offset) entry i must carry.
func expectedPlace(i int64, nratchet int) (roff, koff uint64) {
	n := int64(nratchet)
	return uint64(i % n), uint64(keyOff(i / n))
}

// burntKeyLabel makes burnt keystream slots recognisable (docs/FORMAT.md
// §2): SealFS only needs a burnt key to differ from the auditor's copy, and
// a value the device can recognise lets Open tell, after a power loss, a
// key that was burnt from one still live (random bytes could be either).
const burntKeyLabel = "indelible burnt key v1"

// burntKey is what the device writes over keystream key number slot of
// the keystream with this magic. It is public and says nothing about the
// key it replaced; a live random key equals it with probability 2^-256.
func burntKey(magic uint64, slot int64) [KeySize]byte {
	var b [len(burntKeyLabel) + 16]byte
	copy(b[:], burntKeyLabel)
	binary.LittleEndian.PutUint64(b[len(burntKeyLabel):], magic)
	binary.LittleEndian.PutUint64(b[len(burntKeyLabel)+8:], uint64(slot))
	return sha256.Sum256(b[:])
}
