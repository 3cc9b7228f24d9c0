package hostflags

import (
	"fmt"
	"runtime"
	"strings"
)

// Platform is a family of operating systems sharing one set of locking flags
// and therefore one configuration vocabulary.
type Platform uint8

const (
	// Linux uses the inode flags of chattr(1): +i and +a.
	Linux Platform = iota + 1
	// BSD covers FreeBSD, OpenBSD, NetBSD and macOS: chflags(1) with schg,
	// uchg, sappnd and uappnd.
	BSD
)

// Native returns the platform of the running system, or 0 where neither
// flag family exists.
func Native() Platform {
	switch runtime.GOOS {
	case "linux", "android":
		return Linux
	case "freebsd", "openbsd", "netbsd", "dragonfly", "darwin":
		return BSD
	}
	return 0
}

func (p Platform) String() string {
	switch p {
	case Linux:
		return "linux"
	case BSD:
		return "bsd"
	}
	return "unknown"
}

// DefaultImmutable is the flag entries get when neither the configuration's
// immutable-flag line nor their group line names one. Non-root BSD users
// can only manage user flags, so they default to uchg.
func (p Platform) DefaultImmutable(nonRoot bool) Flag {
	switch {
	case p == Linux:
		return Immutable
	case p == BSD && nonRoot:
		return UserImmutable
	case p == BSD:
		return SysImmutable
	}
	return 0
}

// Flag is one locking flag. Each configuration entry is managed with exactly
// one of them.
type Flag uint8

const (
	// Immutable is Linux "+i" (FS_IMMUTABLE_FL): no change, rename, link or
	// unlink, by anyone.
	Immutable Flag = iota + 1
	// Append is Linux "+a" (FS_APPEND_FL): opened for writing only with
	// O_APPEND, never truncated, renamed or unlinked.
	Append
	// SysImmutable is BSD "schg" (SF_IMMUTABLE); removable only at
	// securelevel 0 or below.
	SysImmutable
	// UserImmutable is BSD "uchg" (UF_IMMUTABLE); the owner or root may
	// remove it at any time.
	UserImmutable
	// SysAppend is BSD "sappnd" (SF_APPEND); removable only at securelevel
	// 0 or below.
	SysAppend
	// UserAppend is BSD "uappnd" (UF_APPEND).
	UserAppend

	maxFlag = UserAppend
)

// flagNames are the spellings used in configurations, -g selectors and
// messages, indexed by Flag.
var flagNames = [...]string{
	Immutable:     "+i",
	Append:        "+a",
	SysImmutable:  "schg",
	UserImmutable: "uchg",
	SysAppend:     "sappnd",
	UserAppend:    "uappnd",
}

func (f Flag) String() string {
	if f == 0 || int(f) >= len(flagNames) {
		return "none"
	}
	return flagNames[f]
}

// ParseFlag returns the flag spelled name ("+i", "uappnd", ...), or 0.
func ParseFlag(name string) Flag {
	for f, n := range flagNames {
		if n != "" && n == name {
			return Flag(f)
		}
	}
	return 0
}

// Platform returns the platform whose filesystems know f.
func (f Flag) Platform() Platform {
	switch f {
	case Immutable, Append:
		return Linux
	case SysImmutable, UserImmutable, SysAppend, UserAppend:
		return BSD
	}
	return 0
}

// IsAppend reports whether f is an append-only flag.
func (f Flag) IsAppend() bool { return f == Append || f == SysAppend || f == UserAppend }

// IsSystem reports whether f is a BSD system flag, which the kernel refuses
// to remove while kern.securelevel is above 0.
func (f Flag) IsSystem() bool { return f == SysImmutable || f == SysAppend }

// lockedState and unlockedState are how an audit names the state a path
// should be in, in syslock's words, so scripts reading either tool's audit
// output see the same phrases.
func (f Flag) lockedState() string {
	switch f {
	case Immutable:
		return "locked"
	case Append, UserAppend:
		return "append-only"
	case SysAppend:
		return "sys-append-only"
	}
	return "locked with " + f.String()
}

func (f Flag) unlockedState() string {
	switch f {
	case Append, UserAppend:
		return "not append-only"
	case SysAppend:
		return "not sys-append-only"
	}
	return "unlocked"
}

// hint names the equivalent flag on the other platform, for error messages
// when a configuration written for one is used on the other.
func (f Flag) hint() string {
	switch f {
	case Immutable:
		return "schg or uchg"
	case Append:
		return "sappnd or uappnd"
	case SysImmutable, UserImmutable:
		return "+i"
	case SysAppend, UserAppend:
		return "+a"
	}
	return ""
}

// flagChoices lists the flags a configuration for p may use, for error
// messages: only the immutable ones when immutableOnly (the immutable-flag:
// line), only the user flags when nonRoot (BSD users other than root).
func flagChoices(p Platform, nonRoot, immutableOnly bool) string {
	var names []string
	for f := Flag(1); int(f) < len(flagNames); f++ {
		if f.Platform() != p || (immutableOnly && f.IsAppend()) || (nonRoot && f.IsSystem()) {
			continue
		}
		names = append(names, f.String())
	}
	switch len(names) {
	case 0:
		return "no flag"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// platformMismatch is the message for a flag of the other platform.
func platformMismatch(f Flag, p Platform) string {
	return fmt.Sprintf("%s is a %s flag, but this is a %s system; use %s", f, f.Platform(), p, f.hint())
}
