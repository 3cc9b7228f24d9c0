// Package ext4 is the Reverse File System engine for ext4 images: it follows
// the raw blocks a host's ext4 driver writes (home writes and jbd2
// transactions), keeps a model of the protected files — inode, extent tree,
// parent directory — and reports appends, coherence and attacks to the
// device core through revfs.Engine.
//
// # Model
//
// The engine holds the newest version of every watched metadata block: the
// primary superblock, the group descriptor table, every block bitmap, the
// inode-table blocks of the protected files and of their parent
// directories, their extent tree blocks, the parent directories' blocks,
// and the blocks that locate the journal (the journal inode's record and
// extent tree: the engine follows the log where Open found it, so any
// change to the journal's block map or size is a layout change,
// journalmap.go).
// A version becomes visible when the host writes the block home (no
// journal, or a checkpoint) or when a jbd2 transaction carrying a copy of
// it commits. A set of versions that becomes visible together (one host
// write, or the transactions one commit block completes) is parsed into new
// views of the tracked inodes and compared with the current views before
// it is applied; what touches committed data is a violation, blamed on the
// exact bytes that carry it (the inode record, the extent block, the
// descriptor, the committed data bytes, or the commit block for anything
// that arrives through the journal). The engine never writes the image
// itself; only the discard response asks the device core to write
// repaired journal blocks (below).
//
// Versions and order. Between two host flushes the order of writes carries
// no meaning, so a journalled copy only overrides a home write of the same
// block made in an earlier flush epoch; jbd2 always writes a block home
// after the commit that logged it and a flush, so this loses nothing with
// the real kernel. A commit block only counts once every block of its
// transaction has been written since that log position was last used; a
// transaction whose commit block lands first is judged at the write that
// completes it (a copy, a descriptor or a revoke block: the violations are
// blamed on that write, on the copy's bytes that carry them when it holds
// the copy), since that is when it becomes what a replay applies, and it
// is taken at the next flush (and is not applied at all if it would change
// protected data: its home writes are then judged against the old model).
//
// # Coherence
//
// A file's coherent prefix starts at its sealed watermark and extends over
// blocks that are mapped by initialised extents known from trusted
// metadata and that the host has written since they were allocated (the
// device core's persistent BlockSet; blocks whose bitmap bit goes from 1
// to 0 are removed from it, so a reused block must be written again).
// Journalled copies of a protected file's data (data=journal) count as
// written and are read from the journal until the home write lands.
// Unwritten extents and subtrees the host has not written yet stop the
// prefix.
//
// The size alone never proves the bytes below it. In every journal mode
// ext4 raises i_disksize at write() time for an append that stays inside
// an allocated block, so a jbd2 commit (or, without a journal, an
// inode-table block written home for any inode it holds) can announce
// bytes that are still only in the host's page cache; and the data of the
// tail block may equally have been written long before the size arrives,
// and never again. Write order and flush epochs cannot tell these apart,
// but the content can: ext4 writes a whole block with the bytes past the
// in-memory size zeroed, so a block written while the file ended at c
// holds zeroes from c on. The last block of the prefix therefore proves
// the bytes up to just past its last non-zero byte, or all of them once it
// has been written after the newest size increase (the in-memory size was
// at least the announced one then). Blocks before the last one need only
// have been written since allocation: delalloc maps and writes a block
// with the size it submits, which already went past it. A last block that
// proves less stops the prefix there until it is written again or the
// file grows past it; a block holding fewer bytes than the size is still
// dirty in the host's cache, so that write comes. The device core's
// quiescence window is the margin for a write reordered within one flush
// epoch, and for blocks ext4 zeroed beyond the end of file
// (unwritten-extent conversion) before the size reached them.
//
// # Discard response and the journal
//
// A violation raised by a commit block lies in journalled copies the host
// wrote before it, already in the image. Under the discard response the
// device core asks the engine (RepairDiscard) to repair the transaction
// before the commit block lands: the blamed bytes of every copy a replay
// would write are restored from the model, and the copy's escaping, its
// descriptor tag checksum and the descriptor's tail checksum (csum v2/v3)
// are recomputed, so the log stays valid and a replay shows the protected
// version; later transactions stay replayable and followed. Copies that
// the model leaves out because a home write of the same block landed in the
// same flush epoch are checked too, since a replay writes them: this is
// how an attacker's raw write under the mount, discarded at home but kept
// in the host's page cache and journalled by the kernel, is caught.
// Checksum v1 journals, and violations not carried by a copy, fall back to
// dropping the commit block. A transaction whose commit block came first
// is repaired the same way at the write that completes it (the blocks of
// the transaction that write carries land repaired; with checksum v1 only
// when its commit block carries no CRC). See discard.go.
//
// # Cost
//
// Every watched write runs through the engine under the device core's
// lock, in series with the host's journal commits, so the engine avoids
// re-reading and re-deriving what it has just seen:
//
//   - The bytes the host writes to the journal are kept (a cache of at
//     most 8 MiB, a slot per block, taken over a cache's worth of log
//     later), with each block's CRC32C where the log checksums its copies:
//     a commit's scan, its metadata copies, data=journal copies being
//     sealed or compared with their home write read memory, not the image,
//     and the scan checks copies' checksums without running CRC32C over
//     them again. The cache always equals the image (every
//     journal write goes through Wrote; a TRIM or a rewrite drops or
//     replaces the block; the discard response's repair drops what it
//     rewrites). Cached blocks are shared and never modified in place.
//   - A flush scans the log only while a commit block seen has not been
//     applied (its transaction was incomplete or not found). Meanwhile a
//     write to the log scans it from the expected position only when it
//     may complete such a transaction: every log block from that position
//     on to one of those commit blocks, past the write, has been written
//     (a walk over the write marks, no read), which holds only for the
//     last write of the transaction.
//   - CheckWrite's evaluation of a one-block commit write (scan, change,
//     new views) is applied by the Wrote of the same request when landing
//     that block cannot change the answer (a block written before, holding
//     no pending copy and no role, same bytes, no other model change in
//     between).
//   - A change carrying an inode-table block re-derives only the tracked
//     inodes whose record it changes.
//   - The roles and spans of the superblock, descriptors, bitmaps and
//     journal are built once; a model change rebuilds the tracked inodes'
//     part only. The free-block count is kept per group and updated for
//     the descriptors a change rewrites.
//   - ReadFile reads each run of contiguous blocks with one read, straight
//     into the caller's buffer.
//
// # The journal's layout
//
// Each write of the journal superblock is checked: its geometry (block
// size, first block, length, end of the circular log) must stay, its start
// must not move back to transactions the engine has applied
// (journal.startMovedBack), and its feature set (features, checksum type,
// UUID), which says how the log reads, may change freely only when no
// transaction the engine has applied is live in the log the new
// superblock points a replay at; while one is, only as the kernel changes
// it (journal.rereads: revoke set, checksum v1 or async_commit toggled),
// without reading the log. Nor may the start pass a transaction whose
// copies of blocks the protected files depend on were never written home
// (journal.uncheckpointed). The journal
// inode's record and extent tree are watched like the superblock: any
// change to the journal's block map or size is refused (journalmap.go).
//
// # Fast commits
//
// Fast commits (the fast_commit feature) are accepted but not parsed: the
// fast-commit area is part of the watched journal, and jbd2.Scan ignores
// it. The kernel sets the journal's fast-commit feature at mount and clears
// it at unmount, which moves the end of the circular log (the area takes
// its last blocks); the engine accepts that move only while no transaction
// it has applied is live (journal.logEndMayMove, TestKernelFastCommit). Every fast commit is followed by a full jbd2 commit (within the
// commit interval) or a checkpoint carrying the same inode, which is where
// the engine sees the new size. This delays the coherence of an fsync-ed
// append by at most the commit interval; it never lets a change through
// unchecked, since full commits and home writes are always checked.
//
// # Known limits
//
//   - The path is watched from the root (Engine.watchPath, checkNames): no
//     name the path takes may come to name another inode than at Open
//     (another file put at the name after a rename of the file or of a
//     directory above it, log rotation by rename and create included, or
//     two names exchanged: KindDirEntry). With a journal, a name that
//     disappears is raised too (the path leads nowhere); without one it is
//     not: the blocks of one directory change may arrive in any order. The
//     file's own entry keeps checkEntry's rules.
//   - Without a journal, a directory block without a protected file's
//     entry is not reported by itself (the blocks of one directory change,
//     a rename into another block or an htree split, arrive one by one in
//     any order, so such a block proves nothing): only once the host has
//     tried to free the inode, which an unlink does, is a later such block
//     a KindDirEntry violation. A block that dropped the entry before that
//     is remembered, and when the inode write comes, the discard response
//     puts the entry back into the block (unlink.go). Only a block with no
//     room left for it (filled since) keeps the file without its name; the
//     inode and data stay, and the engine logs it.
//   - Without metadata_csum, an extent block read from the image before
//     the host writes it is trusted if it parses (there is no checksum to
//     tell a stale block from a fresh one); with metadata_csum it must
//     carry this inode's checksum. Without a journal, a block the engine
//     holds for another inode's tree reads the same way (ownTreeSource:
//     ext4 folds one file's tree back into its inode and hands the leaf
//     to another file, whose inode can land first).
//   - Without a journal, the leaf of a tree ext4 may have folded back into
//     the inode (one leaf, at most four extents once joined: view.mayFold)
//     can hold what its next owner wrote there before the inode that
//     stopped using it landed. A version of such a leaf that does not
//     parse, or fails the file's checksum, is an unknown range, raised as
//     an unknown-tree stall when it stays (StallUnknownTree), not at once:
//     the write lands. Without metadata_csum another file's leaf there
//     parses as this file's (a change of the committed block map is
//     raised at once: a false positive, not seen with the kernel tests,
//     which use metadata_csum). Larger trees keep the strict rule.
//   - With metadata_csum, a new version of a protected file's inode record,
//     extent block or directory (inode or leaf block) whose checksum fails
//     is KindUnparseable only with a journal (inodecheck.go): without one,
//     ext4 may write a block while it changes it, and the torn checksum is
//     repaired by the next write. Htree index blocks (dx_tail) are not
//     checked.
//   - A block map change of the committed range made under an extent
//     subtree the host has not written yet is judged when that subtree
//     arrives, and blamed on it. A subtree that never arrives is reported
//     as an unknown-tree stall (asfound.go), which the device core raises
//     as KindUnparseable once it stays (worm/stalls.go): not at once,
//     since without a journal an index may land before its leaf.
//   - Without a journal, a protected file's entry gone from its directory
//     is judged only once the host tries to free the inode, or at the
//     flush that ends an epoch in which its link count fell (unlink.go;
//     raised after the fact there: discard does not put the name back,
//     and a flush between the inode write and the directory's lets it
//     through): a rename of the file into another directory, which
//     changes neither, is not raised (with a journal it is: checkNames).
//   - A watched htree is read leaf by leaf, and, with a journal, each
//     watched name is also looked up through the index as the kernel does
//     (htree.go): an index that no longer leads to the leaf holding the
//     name (hash ranges or leaf pointers forged, dx_tail recomputed) is
//     KindDirEntry. Without a journal it is not judged (a view joins index
//     and leaf blocks of different moments), nor is a run of equal hashes
//     that crosses an index node, nor an index the walk cannot follow to
//     the end. indelible diff (layout.Image.Lookup) looks names up the
//     same way.
//   - Without a journal, a protected file's overlapping extents that map
//     their shared blocks to the same place are taken as a torn copy (the
//     kernel copies a node while it merges extents, and a view joins nodes
//     of different moments): that range is unknown, an unknown-tree stall,
//     raised only if it stays so (view.unknownOverlaps). So is a node below
//     the root that does not start where its index entry says, and an index
//     node without entries (the kernel refuses both). Other malformed
//     nodes, and overlaps that disagree, are raised at once: a torn copy of
//     another kind would be a false positive (none seen yet).
//   - Without a journal, data blocks a file's view stops mapping inside its
//     size, while its i_blocks does not fall, are set aside rather than
//     forgotten as written (dropped.go), and count as written again if the
//     file maps them at the same place. A host writing raw inodes can drop
//     and remap blocks that way without lowering i_blocks: the device then
//     seals the bytes it wrote at that place before (its own bytes, where
//     it wrote them; a later write there is a data change).
//   - Without a journal, a TRIM of a protected file's extent tree block
//     (and of nothing else watched) is held: accepted and left undone,
//     since ext4 with -o discard trims a leaf it frees (a tree folded back
//     into the inode) before the inode that stops using it is written
//     (heldtrim.go). It is raised only if the inode still uses the block
//     after a FLUSH and stays so (an unknown-tree stall, at the
//     unknown-tree deadline); the block keeps its bytes meanwhile. Holds
//     live in memory: after a restart of the device a held TRIM is not
//     raised (the block still holds the leaf).
//   - Superblock backups are not watched: a new mkfs is caught by the
//     primary superblock, the descriptors and the inode tables.
//   - A file whose last byte is zero, in a last block written before the
//     size that covers it arrived, is not coherent up to that byte until
//     the block is written again or the file grows past it (binary logs
//     such as wtmp, whose records end in NUL bytes: the last record's
//     zeroes wait for the next one, or for commit.lost_after). Likewise the
//     zeroes that end a block followed by an unwritten extent or a hole
//     inside the size (fallocate'd space being filled): they may be the
//     rest of the extent, zeroed by ext4 when a write converted it.
//   - A transaction whose commit block came first is judged at the write
//     that completes it, and the response acts on that write. When the
//     response refuses it (readonly), the log position keeps what it held
//     before: with csum v2/v3 a replay skips that copy (its tag checksum
//     fails), with a checksum v1 CRC the replay stops before the
//     transaction, but without journal checksums (or with a checksum v1
//     commit block that carries no CRC) a replay writes the stale
//     block (an older journalled block, or zeroes) to the home block the
//     forged tag names.
//   - A transaction whose blocks the host does not write after the log
//     position was last used (it forges a descriptor and a commit block
//     over stale log contents, which it can read, or TRIMs a copy's
//     position) is never complete, so no write judges it; the next flush
//     does (journal.judgeIncomplete: the kernel never leaves a committed
//     transaction incomplete at a flush) and raises what a replay of it
//     would change, through FlushViolations (revfs.FlushJudge). By then
//     its blocks have landed: discard and readonly clear the forged commit
//     block (DiscardAtFlush) so that a replay ends the log before it, and
//     readonly then fails the FLUSH and trips the device; honeypot freezes
//     the files and leaves the transaction for the auditor (the real logs
//     are untouched either way).
//   - A transaction that would change protected data and is found complete
//     at a flush (the response let its completing write land: honeypot,
//     or discard when the repair was impossible) is only logged there and
//     left unapplied; it is raised again by the next commit block, which
//     is evaluated together with it.
//   - With a checksum v1 CRC in the commit block, the discard response
//     cannot repair a transaction (the CRC covers every copy): it drops
//     the blamed bytes, a replay stops before that transaction, and the
//     transactions after it are lost to a replay, as when a commit block
//     is dropped.
//   - The engine does not raise KindVolumeFull itself: it reports the
//     free-block count of the newest group descriptors (FreeBlocks,
//     revfs.SpaceReporter) and the device core compares it with its
//     threshold.
package ext4
