package layout

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxExtents caps the extents collected from one tree, whatever the block
// size (a 64 KiB leaf holds 5460): two million runs, 64 MiB. A variable
// for tests.
var maxExtents = 1 << 21

// Limits on what a walk over a hostile image may cost.
const (
	// MaxGroups caps the number of block groups: 2^20 groups is 128 TiB
	// with 4 KiB blocks, far beyond a log device.
	MaxGroups = 1 << 20
	// MaxDescTableBytes caps the group descriptor table read into memory:
	// 2^20 groups of 64-byte descriptors (s_desc_size may say up to 1024).
	MaxDescTableBytes = 64 << 20
	// MaxExtentTreeBlocks caps the blocks visited in one extent tree. A
	// 4 KiB leaf maps 340 extents of up to 32768 blocks, so 1<<16 tree
	// blocks describe any file ext4 can hold many times over.
	MaxExtentTreeBlocks = 1 << 16
	// MaxDirBytes caps the directory blocks read from one directory: 64 Ki
	// blocks of 4 KiB. A hostile extent tree can map a few blocks over and
	// over; the cap bounds the time such a directory costs, and Lookup,
	// which reads a block at a time, keeps its memory to one block.
	MaxDirBytes = 256 << 20
	// MaxDirEntries caps the entries ReadDir returns (about 64 MiB of them).
	MaxDirEntries = 1 << 20
	// MaxPathDepth caps the components LookupPath follows.
	MaxPathDepth = 256
)

// Image reads ext4 structures from an image through an io.ReaderAt.
type Image struct {
	r      io.ReaderAt
	SB     *SuperBlock
	RawSB  []byte
	Groups []*GroupDesc
}

// OpenImage reads and checks the superblock and the group descriptor
// table. It does not refuse unsupported features; call SB.Supported.
func OpenImage(r io.ReaderAt) (*Image, error) {
	raw := make([]byte, SuperBlockSize)
	if _, err := r.ReadAt(raw, SuperBlockOffset); err != nil {
		return nil, fmt.Errorf("layout: read superblock: %w", err)
	}
	sb, err := ParseSuperBlock(raw)
	if err != nil {
		return nil, err
	}
	im := &Image{r: r, SB: sb, RawSB: raw}
	n := sb.GroupCount()
	if n > MaxGroups {
		return nil, formatErr(SuperBlockOffset+4, "superblock", ErrCorrupt, "%d block groups (limit %d)", n, MaxGroups)
	}
	ds := sb.DescSizeBytes()
	bs := sb.BlockSize()
	if n*uint64(ds) > MaxDescTableBytes {
		return nil, formatErr(SuperBlockOffset+0xFE, "superblock", ErrCorrupt, "group descriptor table of %d bytes (%d groups of %d; limit %d)", n*uint64(ds), n, ds, MaxDescTableBytes)
	}
	table := make([]byte, int(sb.GroupDescBlocks())*bs)
	if _, err := r.ReadAt(table, int64(sb.GroupDescBlock())*int64(bs)); err != nil {
		return nil, fmt.Errorf("layout: read group descriptors: %w", err)
	}
	im.Groups = make([]*GroupDesc, n)
	for g := range im.Groups {
		gd, err := ParseGroupDesc(table[g*ds:], ds)
		if err != nil {
			return nil, err
		}
		im.Groups[g] = gd
	}
	return im, nil
}

// BlockSize is the filesystem block size.
func (im *Image) BlockSize() int { return im.SB.BlockSize() }

// ReadBlock reads filesystem block n.
func (im *Image) ReadBlock(n uint64) ([]byte, error) {
	if n >= im.SB.BlocksCount() {
		return nil, formatErr(0, "block", ErrCorrupt, "block %d outside the filesystem (%d blocks)", n, im.SB.BlocksCount())
	}
	b := make([]byte, im.BlockSize())
	if _, err := im.r.ReadAt(b, int64(n)*int64(len(b))); err != nil {
		return nil, fmt.Errorf("layout: read block %d: %w", n, err)
	}
	return b, nil
}

// InodeAddr gives the block holding inode ino and the record's offset in it.
func (im *Image) InodeAddr(ino uint64) (block uint64, off int, err error) {
	return InodeAddr(im.SB, im.Groups, ino)
}

// InodeAddr gives the block holding inode ino and the record's offset in
// it, under superblock sb and group descriptors groups (an engine following
// the image keeps its own, newer copies). An inode table placed so that the
// record's block would lie outside the filesystem, or past 2^64, is
// corrupt.
func InodeAddr(sb *SuperBlock, groups []*GroupDesc, ino uint64) (block uint64, off int, err error) {
	g, off64, ok := sb.InodeLocation(ino)
	if !ok || g >= uint64(len(groups)) {
		return 0, 0, fmt.Errorf("%w: inode %d out of range", ErrCorrupt, ino)
	}
	bs := uint64(sb.BlockSize())
	table, blocks := groups[g].InodeTable(), sb.BlocksCount()
	if table >= blocks || off64/bs >= blocks-table {
		return 0, 0, fmt.Errorf("%w: inode %d: inode table of group %d at block %d is outside the filesystem", ErrCorrupt, ino, g, table)
	}
	return table + off64/bs, int(off64 % bs), nil
}

// ReadInode reads inode ino, returning the decoded inode and its raw record.
func (im *Image) ReadInode(ino uint64) (*Inode, []byte, error) {
	blk, off, err := im.InodeAddr(ino)
	if err != nil {
		return nil, nil, err
	}
	b, err := im.ReadBlock(blk)
	if err != nil {
		return nil, nil, err
	}
	raw := b[off : off+im.SB.InodeSizeBytes()]
	in, err := ParseInode(raw)
	return in, raw, err
}

// Mapping is one run of a file's block map, flattened from the extent tree.
type Mapping struct {
	Logical   uint64
	Physical  uint64
	Len       uint64
	Unwritten bool
}

// ExtentTree walks the extent tree whose root is the 60-byte i_block,
// reading interior and leaf nodes through read, and returns the flattened
// map in logical order and the tree blocks it visited. It refuses trees
// deeper than the root says, children outside [1, blocksCount), cycles
// and runs past the physical end of the filesystem, and checks each node
// against the index entry that leads to it as the kernel does
// (fs/ext4/extents.c, __ext4_ext_check and ext4_valid_extent_entries):
// an index node has entries, and the first entry of a node below the root
// starts at its index entry's ei_block.
//
// It also refuses a node holding an entry at or past the next index
// entry's ei_block (or past the range its own parent gives it). The
// kernel does not refuse that tree when it reads it, but what it shows of
// those blocks is not well defined: a lookup goes down the index
// (ext4_ext_binsearch_idx picks the last entry whose ei_block is at most
// the block), so through the index they are a hole or another leaf's
// data, while every leaf it reads has all its extents cached in the
// extent status tree (ext4_cache_extents, from __read_extent_tree_block),
// which later lookups consult first. A reader that flattened every leaf
// would show data the kernel may never show.
func ExtentTree(root []byte, blocksCount uint64, read func(uint64) ([]byte, error)) ([]Mapping, []uint64, error) {
	var (
		maps []Mapping
		tree []uint64
		seen = map[uint64]bool{}
	)
	// visit decodes the node b, held in block at (0 for the root), which
	// may map logical blocks [lo, hi) only; below the root its first
	// entry must start at lo.
	var visit func(b []byte, depth int, at, lo, hi uint64) error
	visit = func(b []byte, depth int, at, lo, hi uint64) error {
		n, err := ParseExtentNode(b)
		if err != nil {
			return fmt.Errorf("extent node at block %d: %w", at, err)
		}
		if depth >= 0 && int(n.Header.Depth) != depth {
			return fmt.Errorf("%w: extent node at block %d has depth %d, parent expects %d", ErrCorrupt, at, n.Header.Depth, depth)
		}
		if n.Header.Depth > 0 && n.Header.Entries == 0 {
			return fmt.Errorf("%w: extent index node at block %d has no entries (depth %d)", ErrCorrupt, at, n.Header.Depth)
		}
		if depth >= 0 && n.Header.Entries > 0 {
			var first uint64
			if len(n.Index) > 0 {
				first = uint64(n.Index[0].Block)
			} else {
				first = uint64(n.Extents[0].Block)
			}
			if first != lo {
				return fmt.Errorf("%w: extent node at block %d starts at logical block %d, its parent's index entry at %d", ErrCorrupt, at, first, lo)
			}
		}
		for _, x := range n.Extents {
			if end := uint64(x.Block) + uint64(x.Length()); uint64(x.Block) < lo || end > hi {
				return fmt.Errorf("%w: extent at logical %d (+%d) in node at block %d lies outside the logical range [%d,%d) its parent's index gives the node", ErrCorrupt, x.Block, x.Length(), at, lo, hi)
			}
			if x.Start() == 0 || x.Start()+uint64(x.Length()) > blocksCount {
				return fmt.Errorf("%w: extent at logical %d maps blocks [%d,+%d) outside the filesystem", ErrCorrupt, x.Block, x.Start(), x.Length())
			}
			if len(maps) >= maxExtents {
				return fmt.Errorf("%w: extent tree maps more than %d extents", ErrCorrupt, maxExtents)
			}
			maps = append(maps, Mapping{uint64(x.Block), x.Start(), uint64(x.Length()), x.Unwritten()})
		}
		for i, x := range n.Index {
			clo, chi := uint64(x.Block), hi
			if i+1 < len(n.Index) {
				chi = uint64(n.Index[i+1].Block)
			}
			if (depth >= 0 && clo < lo) || clo >= hi {
				return fmt.Errorf("%w: extent index to logical %d in node at block %d lies outside the logical range [%d,%d) its parent's index gives the node", ErrCorrupt, x.Block, at, lo, hi)
			}
			c := x.Leaf()
			if c == 0 || c >= blocksCount || seen[c] || len(tree) >= MaxExtentTreeBlocks {
				return fmt.Errorf("%w: extent index to block %d (outside, repeated or too many nodes)", ErrCorrupt, c)
			}
			seen[c] = true
			tree = append(tree, c)
			cb, err := read(c)
			if err != nil {
				return err
			}
			if err := visit(cb, int(n.Header.Depth)-1, c, clo, chi); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(root, -1, 0, 0, 1<<32); err != nil {
		return nil, nil, err
	}
	for i := 1; i < len(maps); i++ {
		if maps[i].Logical < maps[i-1].Logical+maps[i-1].Len {
			return nil, nil, fmt.Errorf("%w: extents overlap at logical block %d", ErrCorrupt, maps[i].Logical)
		}
	}
	return maps, tree, nil
}

// FileMap returns the flattened block map and tree blocks of an inode that
// uses extents.
func (im *Image) FileMap(in *Inode) ([]Mapping, []uint64, error) {
	if in.Flags&InodeFlagInlineData != 0 {
		return nil, nil, fmt.Errorf("%w: inode keeps its data inline", ErrUnsupported)
	}
	if in.Flags&InodeFlagExtents == 0 {
		return nil, nil, fmt.Errorf("%w: inode uses block maps, not extents", ErrUnsupported)
	}
	return ExtentTree(in.Block[:], im.SB.BlocksCount(), im.ReadBlock)
}

// ReadDir returns the live entries of a directory inode, block by block
// (at most MaxDirEntries of them).
func (im *Image) ReadDir(in *Inode) ([]DirEntry, error) {
	var out []DirEntry
	err := im.eachDirEntry(in, func(e DirEntry) bool {
		out = append(out, e)
		return len(out) <= MaxDirEntries
	})
	if err != nil {
		return nil, err
	}
	if len(out) > MaxDirEntries {
		return nil, fmt.Errorf("%w: directory of over %d entries", ErrCorrupt, MaxDirEntries)
	}
	return out, nil
}

// eachDirEntry calls fn with each live entry of directory in, reading one
// block at a time, until fn returns false. Like the kernel it reads only the
// blocks below i_size, and at most MaxDirBytes of them.
func (im *Image) eachDirEntry(in *Inode, fn func(DirEntry) bool) error {
	if !in.IsDir() {
		return fmt.Errorf("%w: not a directory", ErrNotFound)
	}
	maps, _, err := im.FileMap(in)
	if err != nil {
		return err
	}
	bs := uint64(im.SB.BlockSize())
	blocks := in.Size()/bs + min(in.Size()%bs, 1) // the kernel reads no block past i_size
	var read uint64
	for _, m := range maps {
		if m.Unwritten {
			continue
		}
		for i := uint64(0); i < m.Len && m.Logical+i < blocks; i++ {
			if read += bs; read > MaxDirBytes {
				return fmt.Errorf("%w: directory over %d bytes", ErrCorrupt, MaxDirBytes)
			}
			b, err := im.ReadBlock(m.Physical + i)
			if err != nil {
				return err
			}
			entries, err := ParseDirBlock(b)
			if err != nil {
				return fmt.Errorf("directory block %d: %w", m.Physical+i, err)
			}
			for _, e := range LiveEntries(entries) {
				if !fn(e) {
					return nil
				}
			}
		}
	}
	return nil
}

// LookupPath walks path (slash-separated, relative to the root; a leading
// slash is allowed) from the root directory and returns the inode number
// it names.
func LookupPath(img io.ReaderAt, path string) (uint64, error) {
	im, err := OpenImage(img)
	if err != nil {
		return 0, err
	}
	if err := im.SB.Supported(); err != nil {
		return 0, err
	}
	return im.Lookup(path)
}

// Lookup is LookupPath on an open image.
func (im *Image) Lookup(path string) (uint64, error) {
	ino := uint64(RootIno)
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) > MaxPathDepth {
		return 0, fmt.Errorf("%w: path of %d components", ErrNotFound, len(parts))
	}
	for _, name := range parts {
		if name == "" || name == "." {
			continue
		}
		in, _, err := im.ReadInode(ino)
		if err != nil {
			return 0, err
		}
		found := false
		err = im.eachDirEntry(in, func(e DirEntry) bool {
			if e.Name == name {
				ino, found = uint64(e.Inode), true
			}
			return !found
		})
		if err != nil {
			return 0, fmt.Errorf("looking up %q: %w", name, err)
		}
		if !found {
			return 0, fmt.Errorf("%w: %q in %q", ErrNotFound, name, path)
		}
		if im.dxMisses(in, name) {
			return 0, fmt.Errorf("%w: %q in %q: the directory holds it, but its htree index does not lead the kernel's lookup to it", ErrNotFound, name, path)
		}
	}
	return ino, nil
}

// dxMisses reports whether the kernel's lookup of name in directory in, an
// htree, surely misses it through the index (DxFinds).
func (im *Image) dxMisses(in *Inode, name string) bool {
	if in.Flags&InodeFlagIndex == 0 || im.SB.FeatureCompat&CompatDirIndex == 0 {
		return false
	}
	maps, _, err := im.FileMap(in)
	if err != nil {
		return false
	}
	bs := uint64(im.SB.BlockSize())
	blocks := in.Size()/bs + min(in.Size()%bs, 1)
	block := func(lb uint64) ([]byte, bool) {
		if lb >= blocks {
			return nil, false
		}
		for _, m := range maps {
			if lb >= m.Logical && lb < m.Logical+m.Len && !m.Unwritten {
				b, err := im.ReadBlock(m.Physical + lb - m.Logical)
				if err != nil {
					return nil, true
				}
				return b, true
			}
		}
		return nil, false
	}
	root, _ := block(0)
	if root == nil {
		return false
	}
	found, sure := DxFinds(im.SB, root, name, block)
	return sure && !found
}

// Info is what `indelible init` needs to know about an image.
type Info struct {
	BlockSize   int
	BlocksCount uint64
	FreeBlocks  uint64
	HasJournal  bool
	FastCommit  bool
	// JournalMode is the default data mode from the superblock
	// ("journal", "ordered", "writeback"), "" when unset (ordered) or
	// when there is no journal.
	JournalMode string
	Delalloc    bool // false when the default mount options say nodelalloc
	Features    []string
	MountOpts   string // s_default_mount_opts by name
	UUID        [16]byte
	// Unsupported is non-nil when the engine cannot follow this image,
	// with the feature and the reason.
	Unsupported error
}

// Inspect reads the superblock of an ext4 image and describes it.
func Inspect(img io.ReaderAt) (*Info, error) {
	im, err := OpenImage(img)
	if err != nil {
		return nil, err
	}
	sb := im.SB
	info := &Info{
		BlockSize:   sb.BlockSize(),
		BlocksCount: sb.BlocksCount(),
		FreeBlocks:  sb.FreeBlocksCount(),
		HasJournal:  sb.FeatureCompat&CompatHasJournal != 0,
		FastCommit:  sb.FeatureCompat&CompatFastCommit != 0,
		Delalloc:    sb.DefaultMountOpts&DefmNoDelalloc == 0,
		Features:    sb.Features(),
		MountOpts:   sb.DefaultMountOpts.String(),
		UUID:        sb.UUID,
		Unsupported: sb.Supported(),
	}
	if info.HasJournal {
		info.JournalMode = sb.JournalMode()
	}
	return info, nil
}

// IsUnsupported reports whether err is a refusal of an ext4 feature.
func IsUnsupported(err error) bool { return errors.Is(err, ErrUnsupported) }
