package seal

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"path"
	"strings"
	"time"
)

// Side records are indelible's additions to a SealFS store. They live in
// RecordsName, never in .SEALFS.LOG, so SealFS tools see a pure SealFS log.
// Each record is bound to one entry of .SEALFS.LOG and sealed with a key
// derived from that entry's key (see docs/FORMAT.md, "Side records"). Since
// version 2 that entry is the record's own anchor: a filler entry whose
// offset and count locate the record in RecordsName, so that a record cut,
// deleted, duplicated or moved leaves an anchor that no record answers.
const (
	// MetaDir holds indelible's own files inside a store. SealFS's verify
	// ignores dot names, so nothing here disturbs it.
	MetaDir = ".indelible"
	// SealMetaDir is reserved for this package; real logs may not live here.
	SealMetaDir = ".indelible/seal"
	// RecordsName is the side-record file, relative to the store.
	RecordsName = ".indelible/seal/records"
	// ParamsName holds the store's nratchet as a decimal line. It is a hint
	// (a wrong value only makes verification fail); the verifier can
	// detect nratchet from the first entry as SealFS does.
	ParamsName = ".indelible/seal/params"

	recordHeaderSize = 24
	// recordVersion is what the store writes: 2, anchored records.
	// Version 1 records (bound to an append's entry, with no anchor of
	// their own) are still read, from stores written before 2026-12-01.
	recordVersion = 2
	// minRecordSize is a record with no payload (a time record).
	minRecordSize = recordHeaderSize + KeySize
	// MaxRecordSize bounds one record: a map record holds a path of at most
	// MaxPathLen bytes, a repair record at most maxRepairFiles files.
	MaxRecordSize = 64 << 10
	// MaxPathLen is PATH_MAX on Linux.
	MaxPathLen = 4096
	// maxRepairFiles keeps a repair record under MaxRecordSize.
	maxRepairFiles = (MaxRecordSize - recordHeaderSize - KeySize - 32) / 24
)

// RecordType says what a side record holds.
type RecordType uint8

const (
	RecordMap    RecordType = 1 // binds a file ID to its real-log path
	RecordRepair RecordType = 2 // what crash recovery changed
	RecordTime   RecordType = 3 // device clock when its entry was sealed
)

func (t RecordType) String() string {
	switch t {
	case RecordMap:
		return "map"
	case RecordRepair:
		return "repair"
	case RecordTime:
		return "time"
	}
	return fmt.Sprintf("record(%d)", uint8(t))
}

// Record is one decoded side record.
type Record struct {
	Type    RecordType
	Version uint8     // 2: anchored by entry Entry; 1: bound to an append's entry
	Entry   int64     // index of the entry whose key seals this record
	Time    time.Time // when the device wrote it (device clock)
	// RecordMap
	ID   uint64
	Path string
	// RecordRepair
	Repair *Repair
	MAC    [KeySize]byte
	// Off and Raw locate the record in RecordsName; Raw excludes the MAC.
	Off int64
	Raw []byte
}

// Repair describes what Open changed after a crash.
type Repair struct {
	Committed      int64 // entries kept as acknowledged (a commit Open finished included)
	Found          int64 // whole entries present in .SEALFS.LOG
	DroppedEntries int64 // unacknowledged entries removed
	BurnCompleted  int64 // keystream keys whose burn Open finished
	Files          []FileRepair
}

// FileRepair is one real log cut back to its sealed watermark (NewSize 0:
// one that only unacknowledged appends created, removed).
type FileRepair struct {
	ID      uint64
	OldSize int64
	NewSize int64
}

// validPath accepts relative, clean, slash-separated paths outside the
// package's reserved directory.
func validPath(p string) error {
	switch {
	case p == "" || len(p) > MaxPathLen:
		return fmt.Errorf("%w: %q: empty or longer than %d bytes", ErrBadPath, p, MaxPathLen)
	case strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../"):
		return fmt.Errorf("%w: %q: must be relative, clean and inside the store", ErrBadPath, p)
	case strings.ContainsRune(p, 0) || strings.ContainsRune(p, '\\'):
		return fmt.Errorf("%w: %q: NUL or backslash", ErrBadPath, p)
	case p == LogName || p == MetaDir || p == SealMetaDir || strings.HasPrefix(p, SealMetaDir+"/"):
		return fmt.Errorf("%w: %q is reserved for the store itself", ErrBadPath, p)
	}
	return nil
}

// encodeRecord returns the record bytes without the trailing MAC.
func encodeRecord(r *Record) ([]byte, error) {
	v := r.Version
	if v == 0 {
		v = recordVersion // what the store writes; a decoded record keeps its own
	}
	b := make([]byte, 4, 128)
	b = append(b, byte(r.Type), v, 0, 0) // type, version, reserved
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Entry))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
	switch r.Type {
	case RecordMap:
		if err := validPath(r.Path); err != nil {
			return nil, err
		}
		b = binary.LittleEndian.AppendUint64(b, r.ID)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(r.Path)))
		b = append(b, r.Path...)
	case RecordRepair:
		p := r.Repair
		if len(p.Files) > maxRepairFiles {
			return nil, fmt.Errorf("%w: repair of %d files", ErrTooLarge, len(p.Files))
		}
		for _, v := range []int64{p.Committed, p.Found, p.DroppedEntries, p.BurnCompleted} {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Files)))
		for _, f := range p.Files {
			b = binary.LittleEndian.AppendUint64(b, f.ID)
			b = binary.LittleEndian.AppendUint64(b, uint64(f.OldSize))
			b = binary.LittleEndian.AppendUint64(b, uint64(f.NewSize))
		}
	case RecordTime:
	default:
		return nil, fmt.Errorf("seal: cannot encode %v", r.Type)
	}
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)+KeySize))
	return b, nil
}

// ParseRecord decodes the record at the start of b (hostile bytes). It
// returns the record and its total length including the MAC. off is the
// record's offset in RecordsName, for error messages.
func ParseRecord(b []byte, off int64) (Record, int, error) {
	bad := func(format string, a ...any) (Record, int, error) {
		return Record{}, 0, &FormatError{File: RecordsName, Off: off, Struct: "side record", Msg: fmt.Sprintf(format, a...)}
	}
	if len(b) < 4 {
		return bad("%d bytes left, need a length", len(b))
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n < minRecordSize || n > MaxRecordSize {
		return bad("length %d outside [%d, %d]", n, minRecordSize, MaxRecordSize)
	}
	if len(b) < n {
		return bad("record of %d bytes cut at %d", n, len(b))
	}
	body := b[:n-KeySize]
	r := Record{Type: RecordType(body[4]), Version: body[5], Off: off, Raw: body}
	if r.Version != 1 && r.Version != recordVersion {
		return bad("version %d: %v", body[5], ErrUnsupportedVer)
	}
	if body[6] != 0 || body[7] != 0 {
		return bad("reserved bytes are not zero")
	}
	r.Entry = int64(binary.LittleEndian.Uint64(body[8:]))
	if r.Entry < 0 {
		return bad("entry index %d", r.Entry)
	}
	r.Time = time.Unix(0, int64(binary.LittleEndian.Uint64(body[16:])))
	copy(r.MAC[:], b[n-KeySize:n])
	p := body[recordHeaderSize:]
	switch r.Type {
	case RecordMap:
		if len(p) < 10 {
			return bad("map record payload of %d bytes", len(p))
		}
		r.ID = binary.LittleEndian.Uint64(p)
		l := int(binary.LittleEndian.Uint16(p[8:]))
		if len(p) != 10+l {
			return bad("map record path length %d in %d payload bytes", l, len(p))
		}
		r.Path = string(p[10:])
		if err := validPath(r.Path); err != nil {
			return bad("%v", err)
		}
		if r.ID == FakeInode {
			return bad("map record for the filler inode")
		}
	case RecordRepair:
		if len(p) < 36 {
			return bad("repair record payload of %d bytes", len(p))
		}
		rp := &Repair{}
		vals := []*int64{&rp.Committed, &rp.Found, &rp.DroppedEntries, &rp.BurnCompleted}
		for i, v := range vals {
			*v = int64(binary.LittleEndian.Uint64(p[8*i:]))
		}
		nf := int(binary.LittleEndian.Uint32(p[32:]))
		if nf > maxRepairFiles || len(p) != 36+24*nf {
			return bad("repair record with %d files in %d payload bytes", nf, len(p))
		}
		for i := 0; i < nf; i++ {
			q := p[36+24*i:]
			rp.Files = append(rp.Files, FileRepair{
				ID:      binary.LittleEndian.Uint64(q),
				OldSize: int64(binary.LittleEndian.Uint64(q[8:])),
				NewSize: int64(binary.LittleEndian.Uint64(q[16:])),
			})
		}
		r.Repair = rp
	case RecordTime:
		if len(p) != 0 {
			return bad("time record with %d payload bytes", len(p))
		}
	default:
		return bad("unknown record type %d", body[4])
	}
	return r, n, nil
}

// ParseRecords decodes a whole records file. It stops at the first
// malformed record and returns what came before it, the offset where the
// good prefix ends, and the error.
func ParseRecords(b []byte) ([]Record, int64, error) {
	var out []Record
	off := 0
	for off < len(b) {
		r, n, err := ParseRecord(b[off:], int64(off))
		if err != nil {
			return out, int64(off), err
		}
		out = append(out, r)
		off += n
	}
	return out, int64(off), nil
}

// RecordReader reads side records one at a time, so that neither the
// device nor the verifier holds a long-lived store's records in memory.
type RecordReader struct {
	r   *bufio.Reader
	off int64
	buf []byte
	err error
}

// NewRecordReader reads records from r, which starts at offset 0 of RecordsName.
func NewRecordReader(r io.Reader) *RecordReader {
	return newRecordReaderAt(r, 0)
}

// newRecordReaderAt reads records from r, which starts at offset off of
// RecordsName (the verifier resumes there after a damaged record).
func newRecordReaderAt(r io.Reader, off int64) *RecordReader {
	return &RecordReader{r: bufio.NewReaderSize(r, 1<<16), off: off}
}

// Anchored reports whether the record has an anchor entry of its own
// (version 2), which locates it in RecordsName.
func (r *Record) Anchored() bool { return r.Version >= recordVersion }

// IsAnchor reports whether entry e is the anchor of a side record: a filler
// entry that carries a count, the record's length, at the record's offset.
func (e *Entry) IsAnchor() bool { return e.Inode == FakeInode && e.Count != 0 }

// checkAnchor tells what is wrong with anchor entry e's claim, or "".
func (e *Entry) checkAnchor() string {
	if e.Count < minRecordSize || e.Count > MaxRecordSize || e.Offset > math.MaxInt64-e.Count {
		return fmt.Sprintf("filler entry anchors a side record of %d bytes at %d: no record has that size", e.Count, e.Offset)
	}
	return ""
}

// Next returns the next record. At the clean end of the file it returns
// io.EOF; a malformed or cut record returns a *FormatError and ends the
// stream. Offset tells where the good prefix ends.
func (rr *RecordReader) Next() (Record, error) {
	if rr.err != nil {
		return Record{}, rr.err
	}
	var lb [4]byte
	if n, err := io.ReadFull(rr.r, lb[:]); err != nil {
		if err == io.EOF {
			rr.err = io.EOF
		} else {
			rr.err = &FormatError{File: RecordsName, Off: rr.off, Struct: "side record", Msg: fmt.Sprintf("%d bytes left, need a length", n)}
		}
		return Record{}, rr.err
	}
	n := int(binary.LittleEndian.Uint32(lb[:]))
	if n < minRecordSize || n > MaxRecordSize {
		rr.err = &FormatError{File: RecordsName, Off: rr.off, Struct: "side record", Msg: fmt.Sprintf("length %d outside [%d, %d]", n, minRecordSize, MaxRecordSize)}
		return Record{}, rr.err
	}
	buf := make([]byte, n) // records are kept (Raw), so each gets its own buffer
	copy(buf, lb[:])
	if k, err := io.ReadFull(rr.r, buf[4:]); err != nil {
		rr.err = &FormatError{File: RecordsName, Off: rr.off, Struct: "side record", Msg: fmt.Sprintf("record of %d bytes cut at %d", n, 4+k)}
		return Record{}, rr.err
	}
	rec, _, err := ParseRecord(buf, rr.off)
	if err != nil {
		rr.err = err
		return Record{}, err
	}
	rr.off += int64(n)
	return rec, nil
}

// Offset is the end of the records read so far.
func (rr *RecordReader) Offset() int64 { return rr.off }
