package layout

// Extent tree constants (fs/ext4/ext4_extents.h).
const (
	ExtentMagic     = 0xF30A
	ExtentEntrySize = 12 // header, index and leaf entries are all 12 bytes
	// ExtentMaxDepth bounds the tree: the kernel refuses deeper trees
	// (EXT4_MAX_EXTENT_DEPTH), which also bounds every walk.
	ExtentMaxDepth = 5
	// ExtentInitMaxLen is the longest initialised extent; longer ee_len
	// values mark unwritten extents of length ee_len-ExtentInitMaxLen.
	ExtentInitMaxLen = 32768
	ExtentTailSize   = 4
)

// ExtentHeader mirrors struct ext4_extent_header.
type ExtentHeader struct {
	Magic      uint16
	Entries    uint16
	Max        uint16
	Depth      uint16
	Generation uint32
}

// ExtentIdx mirrors struct ext4_extent_idx: an interior node entry.
type ExtentIdx struct {
	Block  uint32 // first logical block covered
	LeafLo uint32
	LeafHi uint16
	_      uint16
}

// Leaf joins ei_leaf_lo/hi: the physical block of the child node.
func (x ExtentIdx) Leaf() uint64 { return uint64(x.LeafHi)<<32 | uint64(x.LeafLo) }

// Extent mirrors struct ext4_extent: a leaf entry.
type Extent struct {
	Block   uint32 // first logical block
	Len     uint16 // > ExtentInitMaxLen means unwritten
	StartHi uint16
	StartLo uint32
}

// Start joins ee_start_hi/lo: the first physical block.
func (x Extent) Start() uint64 { return uint64(x.StartHi)<<32 | uint64(x.StartLo) }

// Unwritten reports an unwritten (preallocated, reads as zero) extent.
func (x Extent) Unwritten() bool { return x.Len > ExtentInitMaxLen }

// Length is the number of blocks the extent maps.
func (x Extent) Length() uint32 {
	if x.Len > ExtentInitMaxLen {
		return uint32(x.Len) - ExtentInitMaxLen
	}
	return uint32(x.Len)
}

// ExtentNode is one decoded node: the root in i_block or a tree block.
type ExtentNode struct {
	Header  ExtentHeader
	Index   []ExtentIdx // when Header.Depth > 0
	Extents []Extent    // when Header.Depth == 0
}

// ParseExtentNode decodes a node from b (60-byte i_block or a whole tree
// block) and checks it the way the kernel's __ext4_ext_check does: magic,
// entries <= max, max fits the buffer, depth <= ExtentMaxDepth, entries in
// increasing logical order without overlap, lengths non-zero.
func ParseExtentNode(b []byte) (*ExtentNode, error) { return parseExtentNode(b, false) }

// ParseExtentNodeOverlapping is ParseExtentNode that lets a leaf's extents
// overlap (each may start at or after the previous one's start): a copy
// of a node the kernel was editing when it was written, without a journal,
// can show one (ErrOverlap). The caller judges the overlaps.
func ParseExtentNodeOverlapping(b []byte) (*ExtentNode, error) { return parseExtentNode(b, true) }

func parseExtentNode(b []byte, overlapOK bool) (*ExtentNode, error) {
	n := new(ExtentNode)
	if len(b) < ExtentEntrySize {
		return nil, formatErr(0, "extent header", ErrShort, "need %d bytes, have %d", ExtentEntrySize, len(b))
	}
	// Fields are decoded by hand, not with encoding/binary: every journal
	// commit that touches a file's extents parses its nodes again.
	n.Header = ExtentHeader{
		Magic:      le.Uint16(b[0:]),
		Entries:    le.Uint16(b[2:]),
		Max:        le.Uint16(b[4:]),
		Depth:      le.Uint16(b[6:]),
		Generation: le.Uint32(b[8:]),
	}
	h := n.Header
	if h.Magic != ExtentMagic {
		return nil, formatErr(0, "extent header", ErrBadMagic, "magic %#04x, want %#04x", h.Magic, ExtentMagic)
	}
	if h.Depth > ExtentMaxDepth {
		return nil, formatErr(6, "extent header", ErrCorrupt, "depth %d over %d", h.Depth, ExtentMaxDepth)
	}
	capacity := (len(b) - ExtentEntrySize) / ExtentEntrySize
	if int(h.Max) > capacity || h.Max == 0 {
		return nil, formatErr(4, "extent header", ErrCorrupt, "eh_max %d (room for %d)", h.Max, capacity)
	}
	if h.Entries > h.Max {
		return nil, formatErr(2, "extent header", ErrCorrupt, "eh_entries %d over eh_max %d", h.Entries, h.Max)
	}
	if h.Depth > 0 {
		n.Index = make([]ExtentIdx, 0, h.Entries)
	} else {
		n.Extents = make([]Extent, 0, h.Entries)
	}
	var next uint64 // first logical block the next entry may start at
	for i := 0; i < int(h.Entries); i++ {
		off := ExtentEntrySize * (i + 1)
		e := b[off : off+ExtentEntrySize]
		if h.Depth > 0 {
			x := ExtentIdx{Block: le.Uint32(e[0:]), LeafLo: le.Uint32(e[4:]), LeafHi: le.Uint16(e[8:])}
			if i > 0 && uint64(x.Block) < next {
				return nil, formatErr(int64(off), "extent index", ErrCorrupt, "logical block %d out of order", x.Block)
			}
			next = uint64(x.Block) + 1
			n.Index = append(n.Index, x)
			continue
		}
		x := Extent{Block: le.Uint32(e[0:]), Len: le.Uint16(e[4:]), StartHi: le.Uint16(e[6:]), StartLo: le.Uint32(e[8:])}
		if x.Length() == 0 {
			return nil, formatErr(int64(off), "extent", ErrCorrupt, "zero length")
		}
		if i > 0 && uint64(x.Block) < next {
			if !overlapOK || uint64(x.Block) < uint64(n.Extents[i-1].Block) {
				return nil, formatErr(int64(off), "extent", ErrOverlap, "logical block %d overlaps the previous extent", x.Block)
			}
		}
		next = max(next, uint64(x.Block)+uint64(x.Length()))
		if next > 1<<32 {
			return nil, formatErr(int64(off), "extent", ErrCorrupt, "extent ends past logical block 2^32")
		}
		n.Extents = append(n.Extents, x)
	}
	return n, nil
}

// ExtentTailOffset is where the checksum tail of a tree block with eh_max
// entries begins (right after the last possible entry).
func ExtentTailOffset(max uint16) int { return ExtentEntrySize * (1 + int(max)) }

// VerifyExtentTail checks the crc32c tail of an extent tree block (not the
// root in i_block, which the inode checksum covers).
func VerifyExtentTail(inodeSeed uint32, block []byte, h ExtentHeader) bool {
	off := ExtentTailOffset(h.Max)
	if off+ExtentTailSize > len(block) {
		return false
	}
	return TailChecksum(inodeSeed, block, off) == le.Uint32(block[off:])
}
