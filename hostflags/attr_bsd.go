//go:build darwin || freebsd || openbsd || netbsd || dragonfly

package hostflags

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// File flags of chflags(2), from sys/sys/stat.h; the values are the same on
// FreeBSD, OpenBSD, NetBSD, DragonFly and macOS (x/sys/unix declares them
// only for some of these systems).
const (
	ufNodump    = 0x00000001 // UF_NODUMP
	ufImmutable = 0x00000002 // UF_IMMUTABLE: uchg
	ufAppend    = 0x00000004 // UF_APPEND: uappnd
	ufOpaque    = 0x00000008 // UF_OPAQUE
	ufNounlink  = 0x00000010 // UF_NOUNLINK (FreeBSD)
	sfArchived  = 0x00010000 // SF_ARCHIVED
	sfImmutable = 0x00020000 // SF_IMMUTABLE: schg
	sfAppend    = 0x00040000 // SF_APPEND: sappnd
	sfNounlink  = 0x00100000 // SF_NOUNLINK (FreeBSD)
)

// lockBits are the flags Run manages; every other bit is preserved.
const lockBits = ufImmutable | ufAppend | sfImmutable | sfAppend

// systemBits cannot be removed while kern.securelevel > 0.
const systemBits = sfImmutable | sfAppend

func flagBits(f Flag) uint64 {
	switch f {
	case UserImmutable:
		return ufImmutable
	case UserAppend:
		return ufAppend
	case SysImmutable:
		return sfImmutable
	case SysAppend:
		return sfAppend
	}
	return 0
}

func getFlags(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return uint64(st.Flags), nil
}

func setFlags(fd int, v uint64) error {
	err := unix.Fchflags(fd, int(v))
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%w (%s: fchflags: %v)", ErrUnsupportedFS, fsName(fd), err)
	}
	return err
}

func describeSetError(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("fchflags: %w (system flags need root and securelevel < 1; user flags need the owner or root)", err)
	}
	if errors.Is(err, ErrUnsupportedFS) {
		return err
	}
	return fmt.Errorf("fchflags: %w", err)
}

// bsdFlagNames are the names ls -lo prints, for the audit's "flags=".
var bsdFlagNames = [...]struct {
	bit  uint64
	name string
}{
	{sfArchived, "arch"}, {ufNodump, "nodump"}, {ufOpaque, "opaque"},
	{sfAppend, "sappnd"}, {sfImmutable, "schg"}, {sfNounlink, "sunlnk"},
	{ufAppend, "uappnd"}, {ufImmutable, "uchg"}, {ufNounlink, "uunlnk"},
}

func formatFlags(v uint64) string {
	var names []string
	for _, f := range bsdFlagNames {
		if v&f.bit != 0 {
			names = append(names, f.name)
			v &^= f.bit
		}
	}
	if v != 0 {
		names = append(names, fmt.Sprintf("%#x", v))
	}
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ",")
}

// securelevel reads kern.securelevel, an int that is -1 on a FreeBSD
// system that never raised it.
func securelevel() (int, error) {
	v, err := unix.SysctlUint32("kern.securelevel")
	if err != nil {
		return 0, err
	}
	return int(int32(v)), nil
}

// fsName would need a per-system statfs layout; messages stay generic.
func fsName(int) string { return "filesystem" }
