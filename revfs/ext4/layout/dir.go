package layout

// Directory constants (fs/ext4/ext4.h, fs/ext4/namei.c).
const (
	DirEntryHeaderSize = 8   // inode, rec_len, name_len, file_type
	DirNameMax         = 255 // EXT4_NAME_LEN
	DirTailSize        = 12  // struct ext4_dir_entry_tail
	DirTailFileType    = 0xDE
	DxRootInfoOff      = 0x18
	DxRootLimitOff     = 0x20
	DxNodeLimitOff     = 0x08
	DxEntrySize        = 8
)

// Directory entry file types (EXT4_FT_*).
const (
	FileTypeUnknown = 0
	FileTypeRegular = 1
	FileTypeDir     = 2
	FileTypeChar    = 3
	FileTypeBlock   = 4
	FileTypeFIFO    = 5
	FileTypeSocket  = 6
	FileTypeSymlink = 7
)

// DirEntry2Header mirrors the fixed part of struct ext4_dir_entry_2; the
// name (name_len bytes) follows it.
type DirEntry2Header struct {
	Inode    uint32
	RecLen   uint16
	NameLen  uint8
	FileType uint8
}

// DirEntryTail mirrors struct ext4_dir_entry_tail, the checksum record at
// the end of a leaf directory block when metadata_csum is on.
type DirEntryTail struct {
	ReservedZero1 uint32
	RecLen        uint16
	ReservedZero2 uint8
	ReservedFt    uint8
	Checksum      uint32
}

// DxRootInfo mirrors struct dx_root_info, at byte 0x18 of an htree root.
type DxRootInfo struct {
	ReservedZero   uint32
	HashVersion    uint8
	InfoLength     uint8
	IndirectLevels uint8
	UnusedFlags    uint8
}

// DxCountLimit mirrors struct dx_countlimit (which overlays the first
// dx_entry's hash field).
type DxCountLimit struct {
	Limit uint16
	Count uint16
}

// DxEntry mirrors struct dx_entry.
type DxEntry struct {
	Hash  uint32
	Block uint32 // logical block of the directory
}

// DirEntry is a decoded directory entry.
type DirEntry struct {
	Off      int // byte offset in the block
	Inode    uint32
	RecLen   int
	FileType uint8
	Name     string
}

// RecLen decodes rec_len for the block size (ext4_rec_len_from_disk: 64 KiB
// blocks store 65536 as 0 or 65535).
func RecLen(v uint16, blockSize int) int {
	if blockSize >= 65536 && (v == 0 || v == 65535) {
		return 65536
	}
	return int(v)
}

// dirCursor walks a block one record at a time, like archive/zip's readBuf.
type dirCursor struct {
	b   []byte
	off int
}

func (c *dirCursor) next(blockSize int) (DirEntry, error) {
	rest := len(c.b) - c.off
	if rest < DirEntryHeaderSize {
		return DirEntry{}, formatErr(int64(c.off), "dirent", ErrShort, "%d bytes left, need %d", rest, DirEntryHeaderSize)
	}
	var h DirEntry2Header
	if err := decode(c.b[c.off:], &h, int64(c.off), "dirent"); err != nil {
		return DirEntry{}, err
	}
	rl := RecLen(h.RecLen, blockSize)
	switch {
	case rl < DirEntryHeaderSize+int(h.NameLen) && rl != rest:
		fallthrough
	case rl < DirEntryHeaderSize, rl%4 != 0, rl > rest:
		return DirEntry{}, formatErr(int64(c.off), "dirent", ErrCorrupt, "rec_len %d (name_len %d, %d bytes left)", rl, h.NameLen, rest)
	}
	if DirEntryHeaderSize+int(h.NameLen) > rl {
		// Only a record that fills the rest of the block may get here; it
		// is still not allowed to claim a name it has no room for.
		return DirEntry{}, formatErr(int64(c.off), "dirent", ErrCorrupt, "name_len %d in rec_len %d", h.NameLen, rl)
	}
	e := DirEntry{Off: c.off, Inode: h.Inode, RecLen: rl, FileType: h.FileType,
		Name: string(c.b[c.off+DirEntryHeaderSize : c.off+DirEntryHeaderSize+int(h.NameLen)])}
	c.off += rl
	return e, nil
}

// ParseDirBlock decodes every record of a directory block, used or not
// (inode 0), including the checksum tail when present. Htree root and node
// blocks parse too: their index lives inside records the kernel made look
// empty, so they yield only ".", ".." or a single unused record.
func ParseDirBlock(b []byte) ([]DirEntry, error) {
	bs := len(b)
	if bs < DirEntryHeaderSize*2 || bs%4 != 0 || bs > 65536 {
		return nil, formatErr(0, "directory block", ErrCorrupt, "block size %d", bs)
	}
	c := dirCursor{b: b}
	// A block of bs bytes holds at most bs/12 records (the minimum rec_len
	// for a 1..4-byte name); the loop advances at least 8 bytes per record.
	var out []DirEntry
	for c.off < bs {
		e, err := c.next(bs)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// LiveEntries returns the entries that name an inode (inode != 0), without
// the checksum tail.
func LiveEntries(entries []DirEntry) []DirEntry {
	var out []DirEntry
	for _, e := range entries {
		if e.Inode != 0 && !(e.FileType == DirTailFileType && e.RecLen == DirTailSize && e.Name == "") {
			out = append(out, e)
		}
	}
	return out
}

// HasDirTail reports whether the block ends in a checksum tail.
func HasDirTail(b []byte) bool {
	if len(b) < DirTailSize {
		return false
	}
	var t DirEntryTail
	if decode(b[len(b)-DirTailSize:], &t, 0, "dirent tail") != nil {
		return false
	}
	return t.ReservedZero1 == 0 && t.RecLen == DirTailSize && t.ReservedZero2 == 0 && t.ReservedFt == DirTailFileType
}

// VerifyDirTail checks the crc32c of a leaf block with a tail.
func VerifyDirTail(inodeSeed uint32, b []byte) bool {
	if !HasDirTail(b) {
		return false
	}
	n := len(b) - DirTailSize
	return TailChecksum(inodeSeed, b, n) == le.Uint32(b[n+8:])
}

// DxRoot is a decoded htree root block (logical block 0 of an indexed dir).
type DxRoot struct {
	Info    DxRootInfo
	Limit   DxCountLimit
	Block0  uint32 // the block for hashes below Entries[0].Hash
	Entries []DxEntry
}

// ParseDxRoot decodes an htree root block.
func ParseDxRoot(b []byte) (*DxRoot, error) {
	if len(b) < DxRootLimitOff+8 {
		return nil, formatErr(0, "dx_root", ErrShort, "block of %d bytes", len(b))
	}
	r := new(DxRoot)
	if err := decode(b[DxRootInfoOff:], &r.Info, DxRootInfoOff, "dx_root_info"); err != nil {
		return nil, err
	}
	if r.Info.InfoLength != 8 {
		return nil, formatErr(DxRootInfoOff+5, "dx_root_info", ErrCorrupt, "info_length %d", r.Info.InfoLength)
	}
	// The kernel allows 2 levels, 3 with large_dir.
	if r.Info.IndirectLevels > 2 {
		return nil, formatErr(DxRootInfoOff+6, "dx_root_info", ErrCorrupt, "indirect_levels %d", r.Info.IndirectLevels)
	}
	var err error
	r.Limit, r.Block0, r.Entries, err = parseDxEntries(b, DxRootLimitOff)
	return r, err
}

// ParseDxNode decodes an interior htree node block.
func ParseDxNode(b []byte) (DxCountLimit, uint32, []DxEntry, error) {
	return parseDxEntries(b, DxNodeLimitOff)
}

func parseDxEntries(b []byte, off int) (DxCountLimit, uint32, []DxEntry, error) {
	var cl DxCountLimit
	if len(b) < off+8 {
		return cl, 0, nil, formatErr(int64(off), "dx_countlimit", ErrShort, "block of %d bytes", len(b))
	}
	if err := decode(b[off:], &cl, int64(off), "dx_countlimit"); err != nil {
		return cl, 0, nil, err
	}
	room := (len(b) - off) / DxEntrySize
	if cl.Limit == 0 || int(cl.Limit) > room || cl.Count == 0 || cl.Count > cl.Limit {
		return cl, 0, nil, formatErr(int64(off), "dx_countlimit", ErrCorrupt, "count %d limit %d (room %d)", cl.Count, cl.Limit, room)
	}
	block0 := le.Uint32(b[off+4:])
	entries := make([]DxEntry, 0, cl.Count-1)
	for i := 1; i < int(cl.Count); i++ {
		p := off + i*DxEntrySize
		entries = append(entries, DxEntry{Hash: le.Uint32(b[p:]), Block: le.Uint32(b[p+4:])})
	}
	return cl, block0, entries, nil
}
