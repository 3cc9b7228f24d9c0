package audit

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// Errors of the image reader. A file the image no longer shows is reported
// with ErrGone; an image whose metadata cannot be trusted to say anything
// with ErrCorrupt. Both come wrapped with the reason.
var (
	// ErrGone: the inode no longer holds the protected file (freed, its link
	// count 0, or turned into something that is not a regular file).
	ErrGone = errors.New("audit: the image no longer holds the file")
	// ErrCorrupt: the image's metadata does not parse or contradicts itself.
	ErrCorrupt = errors.New("audit: corrupt image metadata")
)

// maxJournalScan bounds the journal positions walked: jbd2.Scan is also
// bounded by one lap of the log, so this only matters for absurd s_maxlen
// values.
const maxJournalScan = 1 << 22

// Image is an ext4 image as the kernel would see it once mounted: the home
// blocks with the committed transactions of a dirty journal replayed over
// them, exactly as jbd2 recovery writes them at mount. Nothing is written:
// the replay is an overlay applied on read.
type Image struct {
	raw    io.ReaderAt // bounded to the image size
	size   int64
	bs     int64
	fs     *layout.Image // opened through the overlay
	copies map[uint64]jbd2.LoggedBlock
	jmap   []layout.Mapping // journal inode map, for copies' device blocks
	jtree  []uint64         // journal inode's extent tree blocks (part of the zone)
	zone   layout.Zone      // blocks no file may map (the filesystem's own)

	// Replayed is the number of home blocks the journal overrides.
	Replayed int
	// Notes are things an auditor should know that did not stop the read
	// (a journal that could not be replayed, a checksum that fails).
	Notes []string
}

// OpenImage reads the ext4 image img of size bytes. Everything in it is
// hostile: no read goes past size, every count is bounded, and malformed
// metadata gives an error wrapping ErrCorrupt, never a panic.
func OpenImage(img io.ReaderAt, size int64) (*Image, error) {
	raw := io.NewSectionReader(img, 0, size)
	home, err := openLayout(raw, size)
	if err != nil {
		return nil, err
	}
	im := &Image{raw: raw, size: size, bs: int64(home.BlockSize()), fs: home}
	if err := im.replayJournal(home); errors.Is(err, ErrCorrupt) {
		// A journal the kernel refuses to load or to recover: the
		// filesystem does not mount, so the host sees none of it.
		return nil, err
	} else if err != nil {
		im.Notes = append(im.Notes, fmt.Sprintf("journal not replayed, home blocks shown as they are: %v", err))
		im.copies = nil
		return im.withZone(), nil
	}
	if len(im.copies) == 0 {
		return im.withZone(), nil
	}
	im.fs, err = openLayout(&overlay{im}, size)
	if err != nil {
		return nil, fmt.Errorf("after replaying the journal: %w", err)
	}
	if why := geometryChange(home.SB, im.fs.SB); why != "" {
		// The kernel computed its geometry from the home superblock before
		// the replay and keeps it; the journal of an honest host never
		// changes these (online resizing changes the block count only).
		return nil, fmt.Errorf("%w: the journal replays a superblock whose %s differs from the home superblock's", ErrCorrupt, why)
	}
	return im.withZone(), nil
}

// withZone sets the system zone of the filesystem as the host mounts it
// (the journal's blocks included) and returns im.
func (im *Image) withZone() *Image {
	var j []layout.Span
	for _, m := range im.jmap {
		j = append(j, layout.Span{Start: m.Physical, End: m.Physical + m.Len})
	}
	for _, b := range im.jtree {
		j = append(j, layout.Span{Start: b, End: b + 1})
	}
	im.zone = layout.SystemZone(im.fs.SB, im.fs.Groups, j)
	return im
}

// geometryChange names the first field of the filesystem's geometry that
// differs between superblocks a and b, or returns "".
func geometryChange(a, b *layout.SuperBlock) string {
	switch {
	case a.BlockSize() != b.BlockSize():
		return "block size"
	case a.FirstDataBlock != b.FirstDataBlock:
		return "first data block"
	case a.BlocksPerGroup != b.BlocksPerGroup:
		return "blocks per group"
	case a.InodesPerGroup != b.InodesPerGroup:
		return "inodes per group"
	case a.InodeSizeBytes() != b.InodeSizeBytes():
		return "inode size"
	case a.DescSizeBytes() != b.DescSizeBytes():
		return "group descriptor size"
	case a.FeatureIncompat&layout.Incompat64Bit != b.FeatureIncompat&layout.Incompat64Bit:
		return "64bit feature"
	}
	return ""
}

// openLayout opens the superblock and group descriptors of r after checking
// that the filesystem fits in the image, which bounds every later read and
// allocation by the image size (the kernel refuses such a filesystem too:
// "block count exceeds size of device").
func openLayout(r io.ReaderAt, size int64) (*layout.Image, error) {
	raw := make([]byte, layout.SuperBlockSize)
	if _, err := r.ReadAt(raw, layout.SuperBlockOffset); err != nil {
		return nil, fmt.Errorf("%w: reading the superblock: %v", ErrCorrupt, err)
	}
	sb, err := layout.ParseSuperBlock(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	bs := uint64(sb.BlockSize())
	if n := sb.BlocksCount(); n > uint64(size)/bs {
		return nil, fmt.Errorf("%w: the superblock claims %d blocks of %d bytes, the image holds %d bytes", ErrCorrupt, n, bs, size)
	}
	if gd := sb.GroupDescBlocks(); sb.GroupDescBlock()+gd > sb.BlocksCount() {
		return nil, fmt.Errorf("%w: %d group descriptor blocks do not fit in %d blocks", ErrCorrupt, gd, sb.BlocksCount())
	}
	im, err := layout.OpenImage(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err := im.SB.Supported(); err != nil {
		return nil, err
	}
	return im, nil
}

// replayJournal finds the committed transactions of a dirty journal and
// records, for every home block recovery would write, where its copy lies.
func (im *Image) replayJournal(home *layout.Image) error {
	sb := home.SB
	if sb.FeatureCompat&layout.CompatHasJournal == 0 {
		return nil
	}
	in, _, err := home.ReadInode(uint64(sb.JournalInum))
	if err != nil {
		return fmt.Errorf("journal inode %d: %w", sb.JournalInum, err)
	}
	maps, tree, err := home.FileMap(in)
	if err != nil {
		return fmt.Errorf("journal inode %d: %w", sb.JournalInum, err)
	}
	im.jmap, im.jtree = maps, tree
	first, err := im.journalBlock(0)
	if err != nil {
		return err
	}
	jsb, err := jbd2.ParseSuperblock(first)
	if err != nil {
		return err
	}
	if int64(jsb.BlockSize()) != im.bs {
		return fmt.Errorf("journal block size %d, filesystem block size %d", jsb.BlockSize(), im.bs)
	}
	// The kernel sizes an inode journal by the inode's i_size
	// (jbd2_journal_init_inode: i_size >> blocksize bits, passed as an int
	// and kept as an unsigned int, hence the 32-bit truncation) and,
	// loading its superblock (journal_get_superblock, or
	// journal_check_superblock in later kernels, fs/jbd2/journal.c),
	// refuses an s_maxlen larger than that: "JBD2: journal file too
	// short". It loads the superblock at every mount, clean journal or
	// not (jbd2_journal_wipe and jbd2_journal_load both go through
	// load_superblock), and ext4_load_journal then fails the mount.
	if jlen := uint32(in.Size() / uint64(im.bs)); jsb.MaxLen() > jlen {
		return fmt.Errorf("%w: the journal superblock says the journal holds %d blocks (s_maxlen), but journal inode %d is only %d blocks long (i_size %d): the kernel refuses such a journal (\"JBD2: journal file too short\") and the filesystem does not mount", ErrCorrupt, jsb.MaxLen(), sb.JournalInum, jlen, in.Size())
	}
	if jsb.Clean() {
		return nil
	}
	if sb.FeatureIncompat&layout.IncompatRecover == 0 {
		// ext4_load_journal wipes a journal that needs_recovery does not
		// ask for (jbd2_journal_wipe): nothing of it reaches the files.
		im.Notes = append(im.Notes, "the journal holds transactions but the superblock does not ask for recovery (needs_recovery is clear): the kernel discards them at mount, so the home blocks are shown")
		return nil
	}
	txs, err := im.scanJournal(jsb)
	if err != nil {
		return err
	}
	if err := failingCopy(txs); err != nil {
		return err
	}
	plan := jbd2.ReplayPlan(txs)
	im.copies = map[uint64]jbd2.LoggedBlock{}
	for home, lb := range plan {
		if home >= sb.BlocksCount() {
			im.Notes = append(im.Notes, fmt.Sprintf("journal copy for block %d outside the filesystem ignored", home))
			continue
		}
		im.copies[home] = lb
	}
	im.Replayed = len(im.copies)
	if len(txs) > 0 {
		im.Notes = append(im.Notes, fmt.Sprintf("dirty journal: %d committed transactions replayed over %d blocks", len(txs), im.Replayed))
	}
	return nil
}

// failingCopy refuses (ErrCorrupt) a log in which a committed
// transaction's copy fails its checksum and no revoke record cancels it.
// The kernel's PASS_REPLAY tests the revoke table first, then the copy's
// checksum; a failing one is skipped, the other copies are replayed, and
// the recovery then fails with -EFSBADCRC ("JBD2: Invalid checksum
// recovering data block", fs/jbd2/recovery.c), so ext4_load_journal fails
// the mount: the host sees no file at all.
func failingCopy(txs []jbd2.Transaction) error {
	rv := jbd2.Revocations(txs)
	for i, tx := range txs {
		for _, lb := range tx.Skipped {
			if rv.Cancels(lb.Home, i) {
				continue
			}
			return fmt.Errorf("%w: journal block %d, the copy of block %d in committed transaction %d, fails its checksum: the kernel's recovery fails (\"JBD2: Invalid checksum recovering data block\") and the filesystem does not mount", ErrCorrupt, lb.JBlock, lb.Home, tx.Sequence)
		}
	}
	return nil
}

// scanJournal finds the committed transactions of a dirty journal as the
// kernel's recovery (fs/jbd2/recovery.c, do_one_pass) would, and refuses
// (ErrCorrupt) a journal whose inode leaves unmapped a block recovery
// reads. Kernels disagree on such a block, and none drops it as this
// reader used to: jread maps each block through jbd2_journal_bmap; before
// ext4_journal_bmap (fs/ext4/super.c, 2023) a hole made it fail ("JBD2: bad
// block at offset"), which fails the recovery (jbd2_journal_load: "JBD2:
// recovery failed") and the mount (ext4_load_journal: "error loading
// journal"); since, ext4_journal_bmap logs "journal bmap failed: block N
// ret 0" and returns success with the block number unchanged, so the
// kernel reads filesystem block N in its place, bytes the host chooses.
// (On this project's 6.18 test kernel a hole at a committed copy failed the
// mount through the copy's checksum; a hole at the commit block mounted
// with nothing replayed.)
//
// Recovery reads such a block
//   - in PASS_SCAN: each descriptor, revoke and commit block and the block
//     after the last transaction;
//   - in PASS_REPLAY: the copy of every tag of every committed transaction,
//     replayed or not (revoked, superseded or failing its checksum: jread
//     comes first);
//   - with checksum v1, in PASS_SCAN too: the copies (calc_chksums), where
//     a failed read ends the log without error (and a read of filesystem
//     block N sums the wrong bytes).
//
// jbd2.Scan reads the copies too when a checksum covers them, so it is
// given an unmapped block as zeros (a copy then fails its checksum and the
// walk goes on, as the kernel's PASS_SCAN, which skips copies, does); a
// zero block where a descriptor or commit is expected ends the walk, so
// such a block can only be the last one read.
func (im *Image) scanJournal(jsb *jbd2.Superblock) ([]jbd2.Transaction, error) {
	var (
		reads        int    // blocks read so far
		last         uint32 // the last block read
		firstUnmap   = -1   // which read (1-based) first met an unmapped block
		firstUnmapJB uint32 // and its journal block
	)
	read := func(jb uint32) ([]byte, error) {
		reads++
		last = jb
		if _, ok := im.jphys(jb); !ok {
			if firstUnmap < 0 {
				firstUnmap, firstUnmapJB = reads, jb
			}
			return make([]byte, im.bs), nil
		}
		return im.journalBlock(jb)
	}
	txs, _, _, err := jbd2.Scan(jsb, jsb.Start(), jsb.Sequence(), read, int(min(uint64(jsb.MaxLen()), maxJournalScan)))
	if err != nil {
		// The transactions complete before the error still replay.
		im.Notes = append(im.Notes, fmt.Sprintf("journal scan stopped early: %v", err))
	}
	for _, tx := range txs {
		for _, set := range [][]jbd2.LoggedBlock{tx.Blocks, tx.Skipped} {
			for _, lb := range set {
				if _, ok := im.jphys(lb.JBlock); !ok {
					return nil, fmt.Errorf("%w: journal block %d, the copy of block %d in committed transaction %d, is not mapped by the journal inode: the kernel's recovery either fails there, and the filesystem does not mount, or reads filesystem block %d in its place (ext4_journal_bmap)", ErrCorrupt, lb.JBlock, lb.Home, tx.Sequence, lb.JBlock)
				}
			}
		}
	}
	if err != nil || firstUnmap < 0 {
		return txs, nil
	}
	if jsb.HasChecksumV1() && firstUnmap < reads {
		// A copy of the transaction after the last one, which PASS_SCAN
		// reads for its checksum v1 (calc_chksums): a kernel that fails to
		// map it ends the log there, one that reads filesystem block N in
		// its place sums that, and may find the transaction complete.
		return nil, fmt.Errorf("%w: journal block %d, a copy the kernel's recovery reads for its checksum v1, is not mapped by the journal inode: the kernel's recovery either ends the log there or reads filesystem block %d in its place (ext4_journal_bmap)", ErrCorrupt, firstUnmapJB, firstUnmapJB)
	}
	if _, ok := im.jphys(last); !ok {
		return nil, fmt.Errorf("%w: journal block %d, where the kernel's recovery reads the next descriptor or commit block, is not mapped by the journal inode: the kernel's recovery either fails there, and the filesystem does not mount, or reads filesystem block %d in its place (ext4_journal_bmap)", ErrCorrupt, last, last)
	}
	return txs, nil
}

// jphys maps a journal-relative block to its device block.
func (im *Image) jphys(jb uint32) (uint64, bool) {
	i := sort.Search(len(im.jmap), func(i int) bool { return im.jmap[i].Logical+im.jmap[i].Len > uint64(jb) })
	if i == len(im.jmap) || im.jmap[i].Logical > uint64(jb) {
		return 0, false
	}
	return im.jmap[i].Physical + uint64(jb) - im.jmap[i].Logical, true
}

func (im *Image) journalBlock(jb uint32) ([]byte, error) {
	p, ok := im.jphys(jb)
	if !ok {
		return nil, fmt.Errorf("journal block %d is not mapped", jb)
	}
	b := make([]byte, im.bs)
	if _, err := im.raw.ReadAt(b, int64(p)*im.bs); err != nil {
		return nil, fmt.Errorf("journal block %d: %w", jb, err)
	}
	return b, nil
}

// overlay reads the image with the journal's copies in place of their home
// blocks.
type overlay struct{ im *Image }

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	im := o.im
	if off < 0 {
		return 0, fmt.Errorf("audit: negative offset %d", off)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= im.size {
			return n, io.EOF
		}
		blk := uint64(pos / im.bs)
		in := pos % im.bs
		chunk := min(int64(len(p)-n), im.bs-in, im.size-pos)
		lb, ok := im.copies[blk]
		if !ok {
			m, err := im.raw.ReadAt(p[n:n+int(chunk)], pos)
			n += m
			if err != nil {
				return n, err
			}
			continue
		}
		phys, _ := im.jphys(lb.JBlock)
		b := make([]byte, im.bs)
		if _, err := im.raw.ReadAt(b, int64(phys)*im.bs); err != nil {
			return n, err
		}
		if lb.Escaped {
			jbd2.Unescape(b)
		}
		n += copy(p[n:n+int(chunk)], b[in:])
	}
	return n, nil
}

// File is what the image shows of one inode: its attributes, and its
// content through ReadAt, read from the image when asked, so that a file of
// any size costs memory for its extents only.
type File struct {
	Ino        uint64
	Generation uint32 // i_generation
	Size       int64  // i_size
	Links      int
	Flags      layout.InodeFlags
	im         *Image
	maps       []layout.Mapping // ascending, not overlapping (FileMap)
}

// OpenFile finds inode ino's content. When the inode no longer holds a
// regular file that uses extents, the error wraps ErrGone and says why.
func (im *Image) OpenFile(ino uint64) (*File, error) {
	in, raw, err := im.fs.ReadInode(ino)
	if err != nil {
		return nil, fmt.Errorf("%w: inode %d: %w", ErrCorrupt, ino, err)
	}
	f := &File{Ino: ino, Generation: in.Generation, Links: int(in.LinksCount), Flags: in.Flags, im: im}
	switch {
	case in.Mode == 0:
		return f, fmt.Errorf("%w: inode %d is free (mode 0)", ErrGone, ino)
	case in.LinksCount == 0:
		return f, fmt.Errorf("%w: inode %d has link count 0 (deleted, dtime %d)", ErrGone, ino, in.Dtime)
	case !in.IsRegular():
		return f, fmt.Errorf("%w: inode %d is no longer a regular file (mode %#o)", ErrGone, ino, in.Mode)
	case in.Flags&layout.InodeFlagExtents == 0:
		return f, fmt.Errorf("%w: inode %d no longer uses extents (flags %s)", ErrGone, ino, in.Flags)
	}
	sb := im.fs.SB
	if sb.HasMetadataCsum() && ino <= 1<<32-1 && !layout.VerifyInodeChecksum(sb.ChecksumSeed(), uint32(ino), raw) {
		// ext4_iget fails with EFSBADCRC: the host cannot open the file.
		return f, fmt.Errorf("%w: inode %d fails its checksum, so the kernel refuses to read it", ErrGone, ino)
	}
	// A size past the image's end is a sparse tail the kernel shows as
	// zeros; readers go a chunk at a time, and ReadAll refuses it.
	f.Size = int64(min(in.Size(), math.MaxInt64))
	var tree []uint64
	if f.maps, tree, err = im.fs.FileMap(in); err != nil {
		return f, fmt.Errorf("%w: inode %d: extent tree: %w", ErrCorrupt, ino, err)
	}
	if err := im.zone.CheckMaps(f.maps, tree); err != nil {
		// The kernel refuses the file (ext4_inode_block_valid): the host
		// reads an error where the "data" are the filesystem's own bytes.
		return f, fmt.Errorf("%w: inode %d: %w", ErrGone, ino, err)
	}
	return f, nil
}

// ReadAll reads the whole content, which it refuses when the file claims
// more bytes than the image holds (a forged size would decide the
// allocation).
func (f *File) ReadAll() ([]byte, error) {
	if f.Size > f.im.size {
		return nil, fmt.Errorf("%w: inode %d claims %d bytes, more than the %d-byte image", ErrCorrupt, f.Ino, f.Size, f.im.size)
	}
	b := make([]byte, f.Size)
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

// ReadAt reads the file's content at off: holes and unwritten extents read
// as zeros, as the kernel returns them; io.EOF past Size.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("audit: negative offset %d", off)
	}
	if off >= f.Size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), f.Size-off)
	q := p[:n]
	clear(q)
	bs := f.im.bs
	i := sort.Search(len(f.maps), func(i int) bool { return int64(f.maps[i].Logical+f.maps[i].Len)*bs > off })
	for ; i < len(f.maps) && int64(f.maps[i].Logical)*bs < off+n; i++ {
		m := f.maps[i]
		if m.Unwritten {
			continue
		}
		lo := int64(m.Logical) * bs
		a, b := max(lo, off), min(int64(m.Logical+m.Len)*bs, off+n)
		// ExtentTree keeps every run inside the filesystem, and openLayout
		// keeps the filesystem inside the image.
		if _, err := f.im.reader().ReadAt(q[a-off:b-off], int64(m.Physical)*bs+a-lo); err != nil {
			return int(a - off), fmt.Errorf("%w: inode %d: reading blocks [%d,+%d): %v", ErrCorrupt, f.Ino, m.Physical, m.Len, err)
		}
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// reader is the image as the kernel sees it after replay.
func (im *Image) reader() io.ReaderAt {
	if len(im.copies) == 0 {
		return im.raw
	}
	return &overlay{im}
}

// Lookup returns the inode that path names in the image's directories, to
// tell a rename or a removed entry apart from a changed file.
func (im *Image) Lookup(path string) (uint64, error) {
	return im.fs.Lookup(path)
}

// errNotFound is layout's "no such file" sentinel, for Lookup's callers.
var errNotFound = layout.ErrNotFound

// ReadImageFile is OpenImage then OpenFile for a single inode, read whole
// (at most the image's size).
func ReadImageFile(img io.ReaderAt, size int64, ino uint64) ([]byte, error) {
	im, err := OpenImage(img, size)
	if err != nil {
		return nil, err
	}
	f, err := im.OpenFile(ino)
	if err != nil {
		return nil, err
	}
	return f.ReadAll()
}
