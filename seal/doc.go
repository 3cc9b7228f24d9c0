// Package seal keeps sealed real logs in the SealFS v2 format: a store
// directory holding the real log files and .SEALFS.LOG, a list of 72-byte
// entries each binding one append (file, offset, length) to an HMAC-SHA256
// under a key drawn from a finite keystream and advanced through an HMAC
// ratchet. The device keeps one copy of the keystream and burns each key
// once used; the auditor keeps the other and is the only one who can check,
// or forge, the entries. The byte-by-byte format, including indelible's
// additions, is in docs/FORMAT.md; SealFS's own verify tool accepts the
// logs this package writes.
//
// indelible adds, in separate files so .SEALFS.LOG stays pure SealFS:
//   - side records (.indelible/seal/records): a sealed map from each file
//     ID to its real-log path, so a store copied with cp, tar or rsync (new
//     inode numbers) still verifies, sealed time records dating the entries
//     (to the minute by default), and sealed repair records saying what
//     crash recovery changed; each record is sealed with a key derived from
//     the key of one entry, so it is exactly as hard to forge;
//   - the ratchet state (next to the device keystream): the acknowledged
//     entry count and the key of the next entry, which lets a crashed
//     device finish its ratchet block instead of leaving it unverifiable,
//     and the commit in flight, which lets Open finish a commit whose keys
//     had started burning (Store.commit explains the two-round commit).
//
// Create makes a store and a keystream pair; Open (which repairs after a
// crash) returns a Store whose Append seals and makes durable one append;
// Verify checks a store with the auditor's keystream and streams problems.
package seal
