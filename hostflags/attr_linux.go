package hostflags

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Inode flags of FS_IOC_GETFLAGS/FS_IOC_SETFLAGS, from the kernel's
// include/uapi/linux/fs.h (x/sys/unix has the ioctl numbers, not these).
const (
	fsImmutableFl = 0x00000010 // FS_IMMUTABLE_FL: chattr +i
	fsAppendFl    = 0x00000020 // FS_APPEND_FL: chattr +a
)

// lockBits are the flags Run manages; every other bit is preserved.
const lockBits = fsImmutableFl | fsAppendFl

// systemBits are flags that a securelevel protects; Linux has none.
const systemBits = 0

func flagBits(f Flag) uint64 {
	switch f {
	case Immutable:
		return fsImmutableFl
	case Append:
		return fsAppendFl
	}
	return 0
}

// getFlags reads the inode flags of the file open as fd. The ioctl is
// declared with a long argument but the kernel copies an int (see
// fs/ioctl.c), hence the uint32.
func getFlags(fd int) (uint64, error) {
	v, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		if unsupportedErrno(err) {
			return 0, fmt.Errorf("%w (%s: FS_IOC_GETFLAGS: %v)", ErrUnsupportedFS, fsName(fd), err)
		}
		return 0, fmt.Errorf("FS_IOC_GETFLAGS: %w", err)
	}
	return uint64(v), nil
}

func setFlags(fd int, v uint64) error {
	err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(int32(uint32(v))))
	if err != nil && unsupportedErrno(err) {
		return fmt.Errorf("%w (%s: FS_IOC_SETFLAGS: %v)", ErrUnsupportedFS, fsName(fd), err)
	}
	return err
}

// unsupportedErrno: filesystems without the ioctl answer ENOTTY (no
// fileattr support at all) or EOPNOTSUPP; some FUSE servers answer ENOSYS.
func unsupportedErrno(err error) bool {
	return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}

func describeSetError(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("FS_IOC_SETFLAGS: %w (changing +i or +a needs CAP_LINUX_IMMUTABLE; run as root)", err)
	}
	if errors.Is(err, ErrUnsupportedFS) {
		return err
	}
	return fmt.Errorf("FS_IOC_SETFLAGS: %w", err)
}

// securelevel: Linux has none.
func securelevel() (int, error) { return 0, errors.New("no securelevel on Linux") }

// lsattrFlags are the letters lsattr(1) prints, in its order (e2fsprogs
// lib/e2p/pf.c), with the FS_*_FL values of include/uapi/linux/fs.h. They
// are only used to show an audit's "flags=" the way lsattr would.
var lsattrFlags = [...]struct {
	bit    uint64
	letter byte
}{
	{0x00000001, 's'}, {0x00000002, 'u'}, {0x00000008, 'S'}, {0x00010000, 'D'},
	{0x00000010, 'i'}, {0x00000020, 'a'}, {0x00000040, 'd'}, {0x00000080, 'A'},
	{0x00000004, 'c'}, {0x00000800, 'E'}, {0x00004000, 'j'}, {0x00001000, 'I'},
	{0x00008000, 't'}, {0x00020000, 'T'}, {0x00080000, 'e'}, {0x00800000, 'C'},
	{0x02000000, 'x'}, {0x40000000, 'F'}, {0x10000000, 'N'}, {0x20000000, 'P'},
	{0x00100000, 'V'}, {0x00000400, 'm'},
}

// formatFlags renders flags as lsattr's letters without the dashes
// ("ie"), or "-" when none is set, as syslock's audit does.
func formatFlags(v uint64) string {
	var b strings.Builder
	for _, f := range lsattrFlags {
		if v&f.bit != 0 {
			b.WriteByte(f.letter)
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// fsMagic names the statfs f_type of filesystems commonly found without
// flag support (include/uapi/linux/magic.h), for clearer messages.
var fsMagic = map[int64]string{
	0x01021994: "tmpfs", 0x4d44: "vfat", 0x2011BAB0: "exfat", 0x65735546: "fuse",
	0x6969: "nfs", 0x9fa0: "proc", 0x62656572: "sysfs", 0x794c7630: "overlayfs",
	0x5346544e: "ntfs", 0x7366746e: "ntfs3", 0xFF534D42: "cifs", 0x01021997: "9p",
	0x9123683E: "btrfs", 0x858458f6: "ramfs", 0xEF53: "ext2/3/4", 0x58465342: "xfs", 0x73717368: "squashfs",
}

func fsName(fd int) string {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return "filesystem"
	}
	if n, ok := fsMagic[int64(st.Type)]; ok {
		return n
	}
	return fmt.Sprintf("filesystem type %#x", st.Type)
}
