package kernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
	"github.com/indelible-worm/indelible/worm"
)

// Second red-team round: attacks made with the ext4 driver's own ioctls and
// tools (EXT4_IOC_MOVE_EXT, e4defrag, EXT4_IOC_SWAP_BOOT) and with names
// (a hard link outside the watched path, then the watched name unlinked).
// Each asserts the secure behaviour: an indicator in the sealed event log,
// the real logs kept, and (where the attack leaves the device writable) the
// host reading nothing but what is sealed unless an indicator says so.

// rt2Setup makes a device with the victim and the bystander, fragments the
// victim on purpose (block-sized fsync-ed appends interleaved with a filler
// file) so that e4defrag has work to do, and waits for everything sealed.
func rt2Setup(t *testing.T, mode string, resp worm.Response) (*kdev, *attackEnv) {
	t.Helper()
	k := newDevice(t, devOpts{journal: mode, size: 32 << 20, response: resp,
		logs: []string{victim, bystander}, quiescence: 200 * time.Millisecond})
	filler := filepath.Join(k.m.Dir, "filler")
	for i := 0; i < 8; i++ {
		var b bytes.Buffer
		for b.Len() < 4096 {
			b.Write(line(i*100 + b.Len()/48))
		}
		appendFile(t, k.path(victim), b.Bytes()[:4096], true)
		f, err := os.OpenFile(filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(bytes.Repeat([]byte{'f'}, 8192))
		f.Sync()
		f.Close()
		appendFile(t, k.path(bystander), line(i), true)
	}
	appendFile(t, k.path(victim), line(999), true)
	k.waitSealed(sealTimeout)
	k.noIndicators()
	a := &attackEnv{t: t, k: k, path: k.path(victim), ino: k.inode(victim), bs: k.blockSize(), committed: k.realLog(victim)}
	return k, a
}

// rt2Expect waits for one of kinds, then checks the real logs kept what was
// sealed and the host, after a checkpoint and a cache drop, either reads the
// sealed bytes or an indicator stands (it does, having been waited for).
func rt2Expect(t *testing.T, k *kdev, a *attackEnv, kinds []string) {
	t.Helper()
	e := k.waitEvent(kinds, 15*time.Second)
	t.Logf("indicator: %s: %s", e.Kind, e.Detail)
	k.realLogsKept(map[string][]byte{victim: a.committed})
}

// moveExtent is struct move_extent of <linux/ext4.h>.
type moveExtent struct {
	reserved   uint32
	donorFd    uint32
	origStart  uint64
	donorStart uint64
	len        uint64
	movedLen   uint64
}

const (
	ext4IocMoveExt  = 0xC028660F // _IOWR('f', 15, struct move_extent)
	ext4IocSwapBoot = 0x6611     // _IO('f', 17)
)

// TestRedTeam2MoveExt: root swaps the committed blocks of the victim with
// a donor file's blocks through EXT4_IOC_MOVE_EXT (what e4defrag does). The
// donor holds forged bytes; the kernel copies the victim's page-cache
// content to the donor's blocks after the swap, so the host keeps reading
// its own bytes, but the committed range now lives in blocks that were
// another file's a moment ago. The block map of the committed range changed:
// that is an indicator (DESIGN.md), whatever the content.
func TestRedTeam2MoveExt(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"ordered", "journal", "none"} {
		t.Run(mode, func(t *testing.T) {
			k, a := rt2Setup(t, mode, worm.ResponseHoneypot)
			n := (int64(len(a.committed)) + a.bs - 1) / a.bs
			donor := filepath.Join(k.m.Dir, "donor")
			forged := bytes.Repeat([]byte("FORGED LINE\n"), int(n*a.bs)/12+1)[:n*a.bs]
			if err := os.WriteFile(donor, forged, 0o644); err != nil {
				t.Fatal(err)
			}
			host(t, "sync")
			df, err := os.OpenFile(donor, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer df.Close()
			vf, err := os.OpenFile(a.path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer vf.Close()
			me := moveExtent{donorFd: uint32(df.Fd()), len: uint64(n)}
			_, _, errno := unix.Syscall(unix.SYS_IOCTL, vf.Fd(), ext4IocMoveExt, uintptr(unsafe.Pointer(&me)))
			t.Logf("MOVE_EXT: errno %v, moved %d of %d blocks", errno, me.movedLen, n)
			if errno != 0 {
				t.Skipf("the kernel refused MOVE_EXT: %v", errno)
			}
			host(t, "sync")
			rt2Expect(t, k, a, []string{"mapping-changed", "data-changed"})
		})
	}
}

// TestRedTeam2E4defrag: e4defrag on the fragmented victim (an honest admin
// action too). It rewrites the committed range into new blocks: an
// indicator, never a silent remap.
func TestRedTeam2E4defrag(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "e4defrag")
	for _, mode := range []string{"ordered", "journal"} {
		t.Run(mode, func(t *testing.T) {
			k, a := rt2Setup(t, mode, worm.ResponseHoneypot)
			host(t, "filefrag", "-v", a.path)
			r := host(t, "e4defrag", "-v", a.path)
			host(t, "sync")
			host(t, "filefrag", "-v", a.path)
			if r.err != nil || strings.Contains(r.out, "already optimal") {
				t.Skipf("e4defrag did not move the file (data=journal: EOPNOTSUPP)")
			}
			rt2Expect(t, k, a, []string{"mapping-changed", "data-changed"})
		})
	}
}

// TestRedTeam2SwapBoot: EXT4_IOC_SWAP_BOOT swaps the victim's data with the
// boot loader inode (5): the victim becomes empty.
func TestRedTeam2SwapBoot(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"ordered", "journal"} {
		t.Run(mode, func(t *testing.T) {
			k, a := rt2Setup(t, mode, worm.ResponseHoneypot)
			vf, err := os.OpenFile(a.path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _, errno := unix.Syscall(unix.SYS_IOCTL, vf.Fd(), ext4IocSwapBoot, 0)
			vf.Close()
			t.Logf("SWAP_BOOT: errno %v", errno)
			if errno != 0 {
				t.Skipf("the kernel refused SWAP_BOOT: %v", errno)
			}
			host(t, "sync")
			rt2Expect(t, k, a, []string{"size-decreased", "mapping-changed", "inode-freed"})
		})
	}
}

// TestRedTeam2LinkThenUnlink: a hard link to the victim in an unwatched
// directory, then the watched name unlinked: the inode keeps a link, but
// the path the auditor and the host's tools know leads nowhere, and the
// host may keep writing through the hidden name. The protected entry
// removed from its directory is an indicator (KindDirEntry).
func TestRedTeam2LinkThenUnlink(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k, a := rt2Setup(t, mode, worm.ResponseHoneypot)
			hidden := filepath.Join(k.m.Dir, ".hidden")
			if err := os.Mkdir(hidden, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(a.path, filepath.Join(hidden, "x")); err != nil {
				t.Fatal(err)
			}
			host(t, "sync")
			if err := os.Remove(a.path); err != nil {
				t.Fatal(err)
			}
			host(t, "sync")
			rt2Expect(t, k, a, []string{"dir-entry", "inode-freed"})
		})
	}
}

// TestRedTeam2LinkUnlinkRecreate: as above, then a new, forged file put at
// the watched name; the host then reads the forged file at the path.
func TestRedTeam2LinkUnlinkRecreate(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k, a := rt2Setup(t, mode, worm.ResponseHoneypot)
			if err := os.Link(a.path, filepath.Join(k.m.Dir, "x")); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(a.path); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(a.path, []byte("nothing happened here\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			host(t, "sync")
			rt2Expect(t, k, a, []string{"dir-entry", "inode-freed"})
		})
	}
}

// rt2CraftRootBlock rewrites the root directory's first block through the
// loop device (as root on the host can): the last live entry keeps 512
// bytes of slack (room for new entries), then comes a deleted entry
// (inode 0) whose name_len (255) runs past its rec_len (252). The kernel's
// lookups never check an entry that does not match (ext4_search_dir), and
// its insertions stop at the first entry with room (ext4_find_dest_de), so
// the host keeps working; the tail checksum is recomputed. The engine's
// ParseDirBlock refuses the block, and a directory above the protected
// file's parent that does not decode is not judged (checkNames).
func rt2CraftRootBlock(t *testing.T, k *kdev) {
	t.Helper()
	dev, err := os.OpenFile(k.m.Loop, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	raw := make([]byte, 1024)
	if _, err := dev.ReadAt(raw, 1024); err != nil {
		t.Fatal(err)
	}
	sb, err := layout.ParseSuperBlock(raw)
	if err != nil {
		t.Fatal(err)
	}
	bs := int64(sb.BlockSize())
	blk := k.dataBlock(2, 0)
	b := make([]byte, bs)
	if _, err := dev.ReadAt(b, blk*bs); err != nil {
		t.Fatal(err)
	}
	ents, err := layout.ParseDirBlock(b)
	if err != nil {
		t.Fatalf("root block: %v", err)
	}
	tail := layout.HasDirTail(b)
	end := int(bs)
	if tail {
		end -= layout.DirTailSize
	}
	var last layout.DirEntry
	for _, e := range layout.LiveEntries(ents) {
		last = e
	}
	min := (layout.DirEntryHeaderSize + len(last.Name) + 3) &^ 3
	bad := end - 252
	if last.Off+min+512 > bad {
		t.Fatalf("root block too full: last entry at %d", last.Off)
	}
	le := func(off int, v uint32, n int) {
		for i := 0; i < n; i++ {
			b[off+i] = byte(v >> (8 * i))
		}
	}
	le(last.Off+4, uint32(bad-last.Off), 2) // rec_len of the last live entry
	clear(b[bad:end])
	le(bad, 0, 4)     // inode 0: a deleted entry
	le(bad+4, 252, 2) // rec_len
	b[bad+6] = 255    // name_len past rec_len
	for i := bad + 8; i < end; i++ {
		b[i] = 'z'
	}
	if tail {
		seed := layout.InodeSeed(sb.ChecksumSeed(), 2, 0)
		le(end+8, layout.TailChecksum(seed, b, end), 4)
	}
	if _, err := dev.WriteAt(b, blk*bs); err != nil {
		t.Fatal(err)
	}
	if err := dev.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestRedTeam2UndecodableRootHidesForgedPath: root makes the root
// directory undecodable for the engine (rt2CraftRootBlock) while the
// kernel keeps using it, then replaces var/ with a new tree holding a
// forged var/log/app.log (mv-dir-then-forge, which TestAttacks shows
// raising dir-entry on an intact root). The host now reads the forged file
// at the protected path. Secure: an indicator (the malformed block itself,
// or the name "var" naming another inode).
func TestRedTeam2UndecodableRootHidesForgedPath(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, size: 32 << 20, response: worm.ResponseHoneypot,
				logs: []string{victim, bystander}, quiescence: 200 * time.Millisecond})
			for i := 0; i < 100; i++ {
				appendFile(t, k.path([]string{victim, bystander}[i%2]), line(i), i%20 == 19)
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
			committed := k.realLog(victim)
			host(t, "fsfreeze", "--freeze", k.m.Dir)
			host(t, "fsfreeze", "--unfreeze", k.m.Dir)
			rt2CraftRootBlock(t, k)
			dropCaches(t)
			time.Sleep(500 * time.Millisecond)
			t.Logf("after the crafted root block: events:%s", k.eventSummary())
			var1 := filepath.Join(k.m.Dir, "var")
			if r := host(t, "mv", var1, var1+".old"); r.err != nil {
				t.Fatalf("mv: %s", r)
			}
			if err := os.MkdirAll(filepath.Dir(k.path(victim)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(k.path(victim), []byte("nothing happened here\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			host(t, "sync")
			host(t, "fsfreeze", "--freeze", k.m.Dir)
			host(t, "fsfreeze", "--unfreeze", k.m.Dir)
			dropCaches(t)
			got, err := os.ReadFile(k.path(victim))
			t.Logf("the host reads %q (%v) at %s; the real log holds %d bytes", got, err, victim, len(committed))
			if opts, _ := mountOptions(k.m.Dir); strings.HasPrefix(opts, "ro") {
				t.Logf("the host's ext4 went read-only")
			}
			e := k.waitEvent([]string{"dir-entry", "unparseable", "layout-changed"}, 10*time.Second)
			t.Logf("indicator: %s: %s", e.Kind, e.Detail)
			k.realLogsKept(map[string][]byte{victim: committed})
		})
	}
}

// TestRedTeam2ExtentIntoMetadata: root, under the mount, grows the victim
// by one block whose extent points at the inode-table block holding the
// victim's own inode (raw write of the inode record, checksum
// recomputed). The kernel refuses the extent (system zone: EFSCORRUPTED),
// so the host never reads those bytes as the file, and never wrote them as
// its data. Secure (I1): the real log never takes them, and the extent is
// an indicator (the system zone, layout.Zone).
func TestRedTeam2ExtentIntoMetadata(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"none", "ordered"} {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, size: 32 << 20, response: worm.ResponseHoneypot,
				logs: []string{victim, bystander}, quiescence: 200 * time.Millisecond})
			for i := 0; i < 100; i++ {
				appendFile(t, k.path([]string{victim, bystander}[i%2]), line(i), i%20 == 19)
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
			committed := k.realLog(victim)
			host(t, "fsfreeze", "--freeze", k.m.Dir)
			host(t, "fsfreeze", "--unfreeze", k.m.Dir)
			ino := k.inode(victim)
			iblk, _ := k.inodeBlock(ino)
			bs := k.blockSize()
			var next uint64
			rt2EditInode(t, k, ino, func(raw []byte, sb *layout.SuperBlock) {
				n, err := layout.ParseExtentNode(raw[0x28 : 0x28+60])
				if err != nil || n.Header.Depth != 0 || len(n.Extents) >= 4 {
					t.Skipf("root node %+v: %v", n, err)
				}
				last := n.Extents[len(n.Extents)-1]
				next = uint64(last.Block) + uint64(last.Length())
				// One more extent, past the end, over the inode table
				// block that holds the victim's own inode.
				e := raw[0x28+12+12*len(n.Extents):]
				binary.LittleEndian.PutUint32(e[0:], uint32(next))
				binary.LittleEndian.PutUint16(e[4:], 1)
				binary.LittleEndian.PutUint16(e[6:], 0)
				binary.LittleEndian.PutUint32(e[8:], uint32(iblk))
				binary.LittleEndian.PutUint16(raw[0x28+2:], uint16(len(n.Extents)+1))
				binary.LittleEndian.PutUint32(raw[4:], uint32(int64(next+1)*bs))
			})
			time.Sleep(5 * time.Second)
			got, rerr := os.ReadFile(k.path(victim))
			real := k.realLog(victim)
			t.Logf("host reads %d bytes (%v); real log %d bytes (was %d); events:%s", len(got), rerr, len(real), len(committed), k.eventSummary())
			if len(real) > int(next)*int(bs) && !bytes.HasPrefix(got, real) {
				code, _, out := k.diff(buildIndelible(t))
				t.Logf("indelible diff: exit %d\n%s", code, out)
				t.Fatalf("I1: the real log took %d bytes of inode-table block %d as the victim's content [%d,%d), which the host cannot read as the file (%v)",
					len(real)-int(next)*int(bs), iblk, int(next)*int(bs), len(real), rerr)
			}
			ev := k.waitEvent([]string{"unparseable"}, 10*time.Second)
			t.Logf("indicator: %s: %s", ev.Kind, ev.Detail)
			k.realLogsKept(map[string][]byte{victim: committed})
			// The auditor's diff reads the image as the kernel would: the
			// file is not readable there either.
			if code, _, out := k.diff(buildIndelible(t)); code == 0 {
				t.Fatalf("indelible diff passes an image whose protected file maps filesystem metadata:\n%s", out)
			}
		})
	}
}

// rt2EditInode rewrites the victim's inode record through the loop device
// under the mount (checksum recomputed), then drops the host's caches.
func rt2EditInode(t *testing.T, k *kdev, ino uint64, edit func(raw []byte, sb *layout.SuperBlock)) {
	t.Helper()
	iblk, ioff := k.inodeBlock(ino)
	dev, err := os.OpenFile(k.m.Loop, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	sbRaw := make([]byte, 1024)
	dev.ReadAt(sbRaw, 1024)
	sb, err := layout.ParseSuperBlock(sbRaw)
	if err != nil {
		t.Fatal(err)
	}
	bs := int64(sb.BlockSize())
	isz := int64(sb.InodeSizeBytes())
	b := make([]byte, bs)
	if _, err := dev.ReadAt(b, iblk*bs); err != nil {
		t.Fatal(err)
	}
	raw := b[ioff : ioff+isz]
	edit(raw, sb)
	if sb.HasMetadataCsum() {
		c := layout.InodeChecksum(sb.ChecksumSeed(), uint32(ino), raw)
		raw[0x7C], raw[0x7D] = byte(c), byte(c>>8)
		if isz >= 0x84 && uint16(raw[0x80])|uint16(raw[0x81])<<8 >= 4 {
			raw[0x82], raw[0x83] = byte(c>>16), byte(c>>24)
		}
	}
	if _, err := dev.WriteAt(b, iblk*bs); err != nil {
		t.Fatal(err)
	}
	dev.Sync()
	dropCaches(t)
}

// TestRedTeam2IndexOverUnwrittenBlock: root turns the victim's extent root
// into a depth-1 index over a free block the host never writes. The kernel
// reads that block as the leaf and refuses it (EUCLEAN): the host's file
// is gone. The engine defers every verdict on a subtree until the host
// writes it (TestAttackHiddenSubtree checks only that the committed blocks
// stay watched), and a host that never writes it is never judged, nor is
// the halt reported as a stall (stallsFrom stops at unknown metadata).
// Secure: an indicator, at the latest once the range has stayed unknown
// past a flush / lost_after.
func TestRedTeam2IndexOverUnwrittenBlock(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"ordered", "none"} {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, size: 32 << 20, response: worm.ResponseHoneypot,
				logs: []string{victim, bystander}, quiescence: 200 * time.Millisecond, lostAfter: 2 * time.Second})
			for i := 0; i < 100; i++ {
				appendFile(t, k.path([]string{victim, bystander}[i%2]), line(i), i%20 == 19)
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
			committed := k.realLog(victim)
			host(t, "fsfreeze", "--freeze", k.m.Dir)
			host(t, "fsfreeze", "--unfreeze", k.m.Dir)
			rt2EditInode(t, k, k.inode(victim), func(raw []byte, sb *layout.SuperBlock) {
				c := uint32(sb.BlocksCount() - 40) // free, never written since mkfs
				ib := raw[0x28 : 0x28+60]
				clear(ib)
				ib[0], ib[1] = 0x0A, 0xF3 // magic
				ib[2] = 1                 // entries
				ib[4] = 4                 // max
				ib[6] = 1                 // depth
				ib[16], ib[17], ib[18], ib[19] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
			})
			host(t, "sync")
			got, err := os.ReadFile(k.path(victim))
			t.Logf("host reads %d bytes (%v)", len(got), err)
			if err := tryAppend(k.path(victim), line(500)); err != nil {
				t.Logf("append: %v", err)
			}
			host(t, "sync")
			e := k.waitEvent([]string{"unparseable", "mapping-changed", "data-changed", "lost"}, 10*time.Second)
			t.Logf("indicator: %s: %s", e.Kind, e.Detail)
			k.realLogsKept(map[string][]byte{victim: committed})
		})
	}
}

// TestRedTeam2FallocateModes: fallocate modes other than punch-hole over
// the committed range (zero-range turns it unwritten or zeroes it,
// collapse-range and insert-range shift the block map). Secure: an
// indicator each.
func TestRedTeam2FallocateModes(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "fallocate")
	for _, mode := range []string{"ordered", "none"} {
		for _, op := range [][]string{
			{"--zero-range", "--keep-size"},
			{"--zero-range"},
			{"--collapse-range"},
			{"--insert-range"},
		} {
			t.Run(mode+"/"+strings.Join(op, ""), func(t *testing.T) {
				k, a := rt2Setup(t, mode, worm.ResponseHoneypot)
				args := append(append([]string{}, op...), "--offset", "0", "--length", fmt.Sprint(a.bs), a.path)
				r := host(t, "fallocate", args...)
				if r.err != nil {
					t.Skipf("fallocate refused: %s", r)
				}
				host(t, "sync")
				rt2Expect(t, k, a, []string{"mapping-changed", "data-changed", "size-decreased", "discard"})
			})
		}
	}
}
