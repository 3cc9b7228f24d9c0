// Package hostflags keeps groups of files on the host immutable or
// append-only with the filesystem's own flags, the way the syslock and
// sysunlock tools do, and reads their configuration format.
//
// A configuration names paths and puts them in groups; each path is managed
// with one flag: on Linux +i (FS_IMMUTABLE_FL) or +a (FS_APPEND_FL), set
// through FS_IOC_SETFLAGS; on the BSDs and macOS schg, uchg, sappnd or uappnd,
// set through fchflags(2). Parse reads a configuration (it does no I/O, so it
// can be fuzzed and run for any platform); Run locks, unlocks or audits the
// selected entries on the running system.
//
// Two rules hold for everything Run touches:
//   - Symbolic links are never followed below a configured path, and a
//     configured path that is itself a symbolic link is reported and skipped;
//     devices, FIFOs and sockets are never opened.
//   - After a lock, a path carries exactly its configured flag among the
//     locking flags (other flags such as noatime are preserved); after an
//     unlock it carries none. The audit checks exactly these two states, so a
//     lock or unlock followed by an audit of the same selection is consistent.
//     A configured path that does not exist fails a lock audit (what should
//     be locked is not there) and is trivially unlocked for an unlock audit;
//     a glob that matches nothing is not an error (rotated logs may not
//     exist yet).
//
// A glob matches names in one directory with path.Match, except that, as in
// the shell, names starting with "." are matched only by a pattern starting
// with "."; symbolic links in the glob's directory path are followed, as
// they are in any configured path above its last element.
//
// On a filesystem without flags, a lock fails for each path while an unlock
// (or its audit) warns and counts the path as unlocked.
//
// On the BSDs, system flags (schg, sappnd) cannot be removed while
// kern.securelevel is above 0; Run skips them then, as syslock does, unless
// forced (for setting) or explicitly selected (which is an error). Linux has no
// securelevel: root with CAP_LINUX_IMMUTABLE can always change +i and +a.
package hostflags
