// Package jbd2 decodes the jbd2 journal of an ext4 filesystem and scans its
// log the way the kernel's recovery does (fs/jbd2/recovery.c, PASS_SCAN),
// so the ext4 engine can learn, when a commit block lands, which home blocks
// a transaction carried and where their journalled copies lie.
//
// The package is pure: no I/O. Callers hand it journal blocks as bytes;
// Scan pulls further blocks through a callback that maps a journal-relative
// block number (0 = the journal superblock) to the device. Every integer in
// the journal is big-endian. The structs mirror the C structs of
// include/linux/jbd2.h and are decoded with encoding/binary; everything read
// is treated as hostile and bounded by the block size.
//
// # The log
//
// The log is circular over journal blocks [First, LogEnd), LogEnd being
// s_maxlen less the fast-commit area. A transaction (tid = h_sequence) is:
// optional revoke blocks, then one or more descriptor blocks each followed
// by the journalled copies its tags announce, then a commit block. Copies
// whose first four bytes equal JournalMagic are stored with those bytes
// zeroed and TagFlagEscape set; Unescape restores them. Three checksum
// schemes exist and all are verified: v1 (FeatureCompatChecksum, a crc32_be
// over a transaction's descriptors and copies, kept in the commit block),
// v2 and v3 (crc32c seeded with the journal UUID on every descriptor,
// revoke and commit block, and per copy in its tag: 16 bits in v2, 32 in
// v3). A copy whose tag checksum fails is not replayed by the kernel; Scan
// reports it in Transaction.Skipped instead of Blocks. ReplayPlan applies
// revoke records the kernel's way.
//
// Not supported, refused with ErrUnsupported: journals shared by several
// filesystems (external journal devices; the engine also sees that in the
// ext4 superblock), unknown incompatible features, checksum types other
// than crc32c. Fast commits are not parsed: Scan ignores the fast-commit
// area [LogEnd, MaxLen); the engine treats a fast commit only as a sign that
// a full commit will follow and waits for it (indelible init does not
// enable fast_commit).
//
// # What the kernel does (observed on Linux 6.18, e2fsprogs 1.47)
//
// These facts, checked by TestKernelJournal and
// TestKernelSuperblockBeforeFirstDescriptor against the real kernel, tell
// the engine where the first transaction after a mount starts:
//
//   - mkfs.ext4 writes a version-2 journal superblock with no features at
//     all, even for a metadata_csum,64bit filesystem: s_sequence 1,
//     s_start 0, s_head 0. The kernel turns on 64bit and csum_v3 (or, with
//     -o journal_checksum and no metadata_csum, compat checksum v1) at mount,
//     in memory only.
//   - Mounting a clean journal writes nothing to the journal.
//   - Right before the first transaction of a mount, the kernel writes the
//     journal superblock with s_start = the block where that transaction
//     starts, s_sequence = its tid, and the features it uses. It waits for
//     that write to complete before sending the descriptor (seen on the NBD
//     wire). So the engine must parse journal block 0 again whenever the
//     host writes it, and scan with that superblock: the one mkfs left
//     describes neither the features nor the start of what follows.
//   - That first transaction starts at s_head when s_head lies inside the
//     log (ext4 always sets JBD2_CYCLE_RECORD since Linux 6.4), else at
//     s_first, with tid s_sequence+1. Superblock.ScanFrom computes this.
//   - While mounted, s_start and s_sequence move only when the kernel
//     checkpoints; a sync commits transactions but leaves them alone.
//   - A clean unmount sets s_start 0, s_head to the block after the last
//     commit, and s_sequence to at least the tid after the last committed
//     one (ext4 allocates a tid at unmount that it never commits, so tids
//     across mounts have gaps).
//   - Revoke blocks can appear while the superblock on disk still lacks
//     FeatureIncompatRevoke: the kernel sets it in memory at the first
//     revoke and writes it with a later superblock update. Like recovery,
//     Scan accepts revoke blocks whatever the feature says. ext4 revokes
//     freed metadata (a deleted directory's block, say) in data=ordered and
//     data=writeback, and never revokes in data=journal (ext4_forget).
//   - data=journal logs file data blocks under their home block numbers;
//     data=ordered and data=writeback log only metadata (inode-table
//     blocks, bitmaps, group descriptors, directory and extent blocks).
//
// From the source (fs/jbd2/journal.c, journal_reset), not exercised here:
// mounting a dirty journal (s_start != 0) replays it and then writes the
// superblock with REQ_FUA before any new transaction.
//
// # Differences from the kernel's PASS_SCAN
//
// Scan stops at the first descriptor or revoke block whose checksum fails,
// where the kernel keeps going to the commit block and then either treats
// the rest as stale or fails the mount; the replayable set is the same in
// the first case, and Scan refuses to guess in the second. Scan also stops,
// with ErrCorrupt, after one lap of the log, and obeys a caller's budget
// (ErrTooLong, resumable from the returned position).
//
// The kernel's PASS_REVOKE keeps every revoke record of the log in a hash
// table (block -> newest tid). Scan keeps only the records that cancel a
// copy it returns, or one the caller holds (Transaction.Revoked): the same
// replay, in memory bounded by the copies rather than by the records, of
// which a log full of revoke blocks holds blocksize/4 per block. It reads
// each revoke block a second time, when its commit block is reached.
package jbd2
