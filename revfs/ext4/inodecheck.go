package ext4

import (
	"bytes"
	"fmt"

	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// hostFlags are the inode flags an honest host may set or clear on a
// protected regular file: what chattr reaches through FS_IOC_SETFLAGS
// (EXT4_FL_USER_MODIFIABLE in fs/ext4/ext4.h, applied by
// ext4_ioctl_setflags in fs/ext4/ioctl.c: secrm, unrm, compr, sync,
// immutable, append, nodump, noatime, journal_data, notail, dirsync,
// topdir, the retired eofblocks bit, dax, projinherit; nocompr, which
// new inodes inherit (EXT4_FL_INHERITED)), and huge_file, which the kernel
// itself sets and clears as i_blocks grows and shrinks
// (ext4_inode_blocks_set). None of them changes the bytes the kernel
// shows of the file: compr, nocompr and notail have no effect on ext4,
// journal_data only changes how data reaches the disk, and dax how pages
// are mapped. Extents and inline_data are judged by checkFile itself;
// casefold is user-modifiable only on empty directories.
//
// Every other bit makes the kernel refuse the file or read it otherwise:
// encrypt (open fails with ENODATA without the key), verity (EOPNOTSUPP
// without the feature, else a Merkle tree decides what reads return),
// ea_inode (ext4_iget: EFSCORRUPTED for a regular file reached by name),
// casefold on a regular file (ext4_iget: EFSCORRUPTED), index, imagic,
// the compression bits, and every bit the kernel does not define.
const hostFlags = layout.InodeFlagSecRm | layout.InodeFlagUnRm | layout.InodeFlagCompr |
	layout.InodeFlagSync | layout.InodeFlagImmutable | layout.InodeFlagAppend |
	layout.InodeFlagNoDump | layout.InodeFlagNoAtime | layout.InodeFlagNoCompr |
	layout.InodeFlagJournalData | layout.InodeFlagNoTail | layout.InodeFlagDirSync |
	layout.InodeFlagTopDir | layout.InodeFlagHugeFile | layout.InodeFlagEOFBlocks |
	layout.InodeFlagDAX | layout.InodeFlagProjInherit

// foreignFlags returns the flags that changed between two versions of a
// protected file's inode and that an honest host never changes.
func foreignFlags(old, nw layout.InodeFlags) layout.InodeFlags {
	return (old ^ nw) &^ hostFlags
}

// badXattrBlock says ("is outside ...", "lies in ...") why the kernel refuses an inode whose i_file_acl is n,
// or returns "" when it accepts it. __ext4_iget fails with EFSCORRUPTED
// unless ext4_inode_block_valid(inode, i_file_acl, 1) holds (fs/ext4/inode.c,
// fs/ext4/block_validity.c): the block must lie after s_first_data_block and
// before the end of the filesystem, and outside the system zone: each
// group's superblock copy and group descriptors (reserved ones included),
// its bitmaps and inode table, and the journal's blocks. The engine checks
// the whole zone in every group, a superset of what a kernel without
// block_validity checks: the kernel never allocates an xattr block there,
// since those blocks are in use from mkfs on.
func (e *Engine) badXattrBlock(n uint64) string {
	if n == 0 {
		return ""
	}
	if n <= uint64(e.sb.FirstDataBlock) || n >= e.blocks {
		return fmt.Sprintf("is outside the filesystem's data blocks (%d, %d)", e.sb.FirstDataBlock, e.blocks)
	}
	if what := e.systemBlock(n); what != "" {
		return "lies in " + what
	}
	return ""
}

// systemBlock names the filesystem metadata that block b belongs to, or
// returns "" when it belongs to none. Whether it belongs is the system
// zone's answer (e.zone); the walk over the groups only names the part.
func (e *Engine) systemBlock(b uint64) string {
	if _, in := e.zone.Overlap(b, 1); !in {
		return ""
	}
	bpg := uint64(e.sb.BlocksPerGroup)
	ipb := uint64(e.bs) / uint64(e.sb.InodeSizeBytes())
	itb := (uint64(e.sb.InodesPerGroup) + ipb - 1) / ipb
	for g, gd := range e.groups {
		if start := uint64(e.sb.FirstDataBlock) + uint64(g)*bpg; e.sb.HasSuperBackup(uint64(g)) &&
			b >= start && b < start+1+e.gdtCount+uint64(e.sb.ReservedGDTBlocks) {
			return fmt.Sprintf("the superblock or group descriptors of group %d", g)
		}
		switch it := gd.InodeTable(); {
		case b == gd.BlockBitmap():
			return fmt.Sprintf("the block bitmap of group %d", g)
		case b == gd.InodeBitmap():
			return fmt.Sprintf("the inode bitmap of group %d", g)
		case b >= it && b < it+itb:
			return fmt.Sprintf("the inode table of group %d", g)
		}
	}
	return "the journal" // the zone's other blocks: the log and its inode's tree
}

// verifiesNew reports whether new versions of watched metadata must carry
// valid checksums: with metadata_csum, the kernel refuses to read an inode,
// extent block or directory block whose checksum fails (ext4_iget:
// EFSBADCRC; __ext4_ext_check, __ext4_read_dirblock: EFSBADCRC), so a
// version that fails hides a protected file from the host. Only with a
// journal: jbd2 writes every metadata block, to the log and home, as a
// consistent snapshot (a handle changing a buffer being written waits for
// it, or gets a frozen copy), and the kernel sets each record's checksum
// under the same lock that changes it. Without one, ext4 may change a block
// while it is being written (an inode table block holds 16 records that
// are updated independently), so a home write can carry a torn checksum
// that the next write of the block repairs. Not at Open: the image as found
// is the baseline.
func (e *Engine) verifiesNew() bool {
	return e.sb.HasMetadataCsum() && e.jnl != nil && !e.opening
}

// checksNew reports whether new versions of t's inode record and extent
// tree blocks must carry valid checksums (verifiesNew): only for the
// protected files and the directories watched for them, not for the
// journal inode, whose map journalmap.go judges on its own.
func (e *Engine) checksNew(t *tracked) bool {
	return e.verifiesNew() && e.byIno[t.ino] == t
}

// isNew reports whether d, a version of block b the engine trusts (one a
// host write or a commit carries, or the one it holds), differs from the
// version it holds: only such a version is checked, once. A version found
// in the image but never written (trusted false) keeps the tolerant path.
func (e *Engine) isNew(b uint64, d []byte) bool {
	old, ok := e.meta[b]
	return !ok || !bytes.Equal(old, d)
}

// inodeCsumError checks the checksum of t's record raw in a new version of
// its inode-table block blk: only the tracked inode's own record counts,
// not the other records sharing the block.
func (e *Engine) inodeCsumError(t *tracked, raw []byte) error {
	if !e.checksNew(t) || t.ino > 1<<32-1 {
		return nil
	}
	n := len(raw)
	if old, ok := e.meta[t.inoBlock]; ok && len(old) >= t.inoOff+n && bytes.Equal(old[t.inoOff:t.inoOff+n], raw) {
		return nil
	}
	if layout.VerifyInodeChecksum(e.fsSeed, uint32(t.ino), raw) {
		return nil
	}
	return fmt.Errorf("%w: inode %d fails its checksum (the kernel refuses to read it)", layout.ErrCorrupt, t.ino)
}

// dirBlockCsumError checks a new version d of logical block lb of a
// directory whose inode is in, as __ext4_read_dirblock (fs/ext4/namei.c)
// does: a leaf must end in a dirent tail (ext4_dir_entry_tail) whose
// crc32c matches. In an indexed directory (dir_index and the index flag)
// block 0, and any block whose first record spans the whole block, is an
// htree index block: it carries a dx_tail the engine does not check (the
// kernel only checks it when it reads the block as an index, and an empty
// leaf can look the same).
func (e *Engine) dirBlockCsumError(in *layout.Inode, seed uint32, lb uint64, d []byte) error {
	if in != nil && in.Flags&layout.InodeFlagIndex != 0 && e.sb.FeatureCompat&layout.CompatDirIndex != 0 {
		if lb == 0 || (len(d) >= layout.DirEntryHeaderSize && layout.RecLen(uint16(d[4])|uint16(d[5])<<8, len(d)) == len(d)) {
			return nil
		}
	}
	if !layout.HasDirTail(d) {
		return fmt.Errorf("%w: directory leaf without a checksum tail", layout.ErrCorrupt)
	}
	if !layout.VerifyDirTail(seed, d) {
		return fmt.Errorf("%w: directory tail checksum", layout.ErrCorrupt)
	}
	return nil
}
