package ext4

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// sealExtentBlock sets the tail checksum of a non-root extent tree block
// of f, as the kernel does (ext4_extent_block_csum_set).
func (r *rig) sealExtentBlock(f *tracked, blk []byte) {
	if !r.e.sb.HasMetadataCsum() {
		return
	}
	seed := layout.InodeSeed(r.e.fsSeed, uint32(f.ino), f.view.inode.Generation)
	off := layout.ExtentTailOffset(binary.LittleEndian.Uint16(blk[4:])) // eh_max
	binary.LittleEndian.PutUint32(blk[off:], layout.TailChecksum(seed, blk, off))
}

func hasKind(vs []revfs.Violation, k revfs.Kind) bool {
	for _, v := range vs {
		if v.Kind == k {
			return true
		}
	}
	return false
}

// Flags that make the kernel refuse a protected file or read it otherwise
// (the red team's debugfs "sif <ino> flags ...") are a type change; the
// flags chattr and the kernel change on a log are not.
func TestInodeFlagsAllowList(t *testing.T) {
	const p = "var/log/app.log"
	setFlags := func(or layout.InodeFlags) func([]byte) {
		return func(raw []byte) {
			binary.LittleEndian.PutUint32(raw[0x20:], binary.LittleEndian.Uint32(raw[0x20:])|uint32(or)) // i_flags
		}
	}
	for _, name := range []string{"b4k-journal.img", "b1k-nojournal.img"} {
		t.Run(name, func(t *testing.T) {
			path := loadImage(t, name)
			for _, fl := range []layout.InodeFlags{layout.InodeFlagEncrypt, layout.InodeFlagVerity, layout.InodeFlagEAInode,
				layout.InodeFlagCasefold, layout.InodeFlagIndex, layout.InodeFlagComprBlk, layout.InodeFlagReserved, 0x04000000} {
				r := openRig(t, path, map[string]int64{p: 5000}, p)
				home, blk := r.inodeBlockWith(p, setFlags(fl))
				vs := r.write(int64(home)*r.bs, blk)
				if kinds(vs) != "type-changed" || !strings.Contains(vs[0].Detail, fl.String()) {
					t.Errorf("flag %s set: %v, want type-changed naming it", fl, vs)
				}
			}
			r := openRig(t, path, map[string]int64{p: 5000}, p)
			for _, fl := range []layout.InodeFlags{layout.InodeFlagAppend, layout.InodeFlagImmutable, layout.InodeFlagNoAtime,
				layout.InodeFlagNoDump, layout.InodeFlagSync, layout.InodeFlagJournalData, layout.InodeFlagHugeFile,
				layout.InodeFlagSecRm, layout.InodeFlagUnRm, layout.InodeFlagCompr, layout.InodeFlagNoCompr,
				layout.InodeFlagNoTail, layout.InodeFlagDirSync, layout.InodeFlagTopDir, layout.InodeFlagDAX,
				layout.InodeFlagProjInherit, layout.InodeFlagEOFBlocks} {
				home, blk := r.inodeBlockWith(p, setFlags(fl))
				if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
					t.Errorf("flag %s set: %v, want nothing", fl, vs)
				}
				home, blk = r.inodeBlockWith(p, func(raw []byte) {
					binary.LittleEndian.PutUint32(raw[0x20:], binary.LittleEndian.Uint32(raw[0x20:])&^uint32(fl))
				})
				if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
					t.Errorf("flag %s cleared: %v, want nothing", fl, vs)
				}
			}
		})
	}
}

// An i_file_acl the kernel refuses (ext4_iget: ext4_inode_block_valid) is
// unparseable; an xattr block allocated or freed by the host is not.
func TestXattrBlockValidity(t *testing.T) {
	const p = "var/log/app.log"
	setACL := func(n uint64) func([]byte) {
		return func(raw []byte) {
			binary.LittleEndian.PutUint32(raw[0x68:], uint32(n))     // i_file_acl_lo
			binary.LittleEndian.PutUint16(raw[0x76:], uint16(n>>32)) // l_i_file_acl_high
		}
	}
	for _, name := range []string{"b4k-journal.img", "b1k-journal.img", "b4k-nojournal.img"} {
		t.Run(name, func(t *testing.T) {
			path := loadImage(t, name)
			r := openRig(t, path, map[string]int64{p: 5000}, p)
			g0 := r.e.groups[0]
			bad := map[string]uint64{
				"block 1":             1,
				"descriptors":         r.e.gdtFirst,
				"reserved gdt":        r.e.gdtFirst + r.e.gdtCount,
				"block bitmap":        g0.BlockBitmap(),
				"inode bitmap":        g0.InodeBitmap(),
				"inode table":         g0.InodeTable() + 1,
				"past the end":        r.e.blocks,
				"far past the end":    1 << 40,
				"backup of group one": uint64(r.e.sb.FirstDataBlock) + uint64(r.e.sb.BlocksPerGroup),
			}
			if r.e.sb.FirstDataBlock != 0 {
				bad["first data block"] = uint64(r.e.sb.FirstDataBlock)
			}
			if r.e.jnl != nil {
				pb, _ := r.e.jnl.physOf(3)
				bad["journal"] = pb
			}
			for what, n := range bad {
				r := openRig(t, path, map[string]int64{p: 5000}, p)
				home, blk := r.inodeBlockWith(p, setACL(n))
				if vs := r.write(int64(home)*r.bs, blk); kinds(vs) != "unparseable" {
					t.Errorf("file_acl %d (%s): %v, want unparseable", n, what, vs)
				}
			}
			// A free data block, as ext4_xattr_block_set allocates it, and
			// back to none when the attribute goes.
			free := r.e.blocks - 1
			for r.e.systemBlock(free) != "" {
				free--
			}
			for _, n := range []uint64{free, 0} {
				home, blk := r.inodeBlockWith(p, setACL(n))
				if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
					t.Errorf("file_acl %d: %v, want nothing", n, vs)
				}
			}
		})
	}
}

// With metadata_csum and a journal, a new version of a protected inode,
// its extent blocks, or its directory's inode or blocks, whose checksum
// fails hides the file from the host (EBADMSG): unparseable. Only the
// tracked records count, not their neighbours in the inode table block.
func TestNewVersionsMustCarryChecksums(t *testing.T) {
	const p, frag, other = "var/log/app.log", "var/log/frag.log", "var/log/big.log"
	breakRec := func(raw []byte) { raw[0x7C] ^= 0xFF } // l_i_checksum_lo
	path := loadImage(t, "b4k-journal.img")
	open := func() (*rig, *tracked) {
		r := openRig(t, path, map[string]int64{p: 5000, frag: 20000}, p, frag)
		return r, r.e.byIno[uint64(r.ids[p])]
	}
	rawBlock := func(r *rig, b uint64) []byte { return bytes.Clone(r.img.b[int64(b)*r.bs : int64(b+1)*r.bs]) }

	t.Run("inode checksum, home write", func(t *testing.T) {
		r, f := open()
		blk := rawBlock(r, f.inoBlock)
		breakRec(blk[f.inoOff : f.inoOff+r.e.sb.InodeSizeBytes()])
		if vs := r.write(int64(f.inoBlock)*r.bs, blk); kinds(vs) != "unparseable" || vs[0].File != revfs.FileID(f.ino) {
			t.Fatalf("got %v, want unparseable", vs)
		}
	})
	t.Run("inode checksum, journalled", func(t *testing.T) {
		r, f := open()
		blk := rawBlock(r, f.inoBlock)
		breakRec(blk[f.inoOff : f.inoOff+r.e.sb.InodeSizeBytes()])
		if vs, _ := newTxWriter(r).commit([]uint64{f.inoBlock}, [][]byte{blk}); kinds(vs) != "unparseable" {
			t.Fatalf("got %v, want unparseable", vs)
		}
	})
	t.Run("a neighbour's checksum in the same block", func(t *testing.T) {
		r, f := open()
		ino, err := layout.LookupPath(bytes.NewReader(r.img.b), other)
		if err != nil {
			t.Fatal(err)
		}
		blk, off, err := layout.InodeAddr(r.e.sb, r.e.groups, ino)
		if err != nil || blk != f.inoBlock {
			t.Skipf("%s is not in %s's inode block", other, p)
		}
		b := rawBlock(r, blk)
		breakRec(b[off : off+r.e.sb.InodeSizeBytes()])
		if vs := r.write(int64(blk)*r.bs, b); len(vs) != 0 {
			t.Fatalf("got %v, want nothing", vs)
		}
	})
	t.Run("directory inode checksum", func(t *testing.T) {
		r, f := open()
		d := f.parent
		blk := rawBlock(r, d.inoBlock)
		breakRec(blk[d.inoOff : d.inoOff+r.e.sb.InodeSizeBytes()])
		if vs := r.write(int64(d.inoBlock)*r.bs, blk); !hasKind(vs, revfs.KindUnparseable) {
			t.Fatalf("got %v, want unparseable", vs)
		}
	})
	t.Run("directory block tail checksum", func(t *testing.T) {
		r, f := open()
		db := f.parent.view.dirBlocks[0]
		blk := rawBlock(r, db)
		binary.LittleEndian.PutUint32(blk[r.bs-4:], 0xFFFFFFFF)
		if vs := r.write(int64(db)*r.bs, blk); !hasKind(vs, revfs.KindUnparseable) {
			t.Fatalf("got %v, want unparseable", vs)
		}
	})
	t.Run("directory block without its tail", func(t *testing.T) {
		r, f := open()
		db := f.parent.view.dirBlocks[0]
		blk := rawBlock(r, db)
		copy(blk[r.bs-12:], make([]byte, 12)) // the tail's rec_len and type gone
		if vs := r.write(int64(db)*r.bs, blk); !hasKind(vs, revfs.KindUnparseable) {
			t.Fatalf("got %v, want unparseable", vs)
		}
	})
	t.Run("extent block tail checksum", func(t *testing.T) {
		r, _ := open()
		g := r.e.byIno[uint64(r.ids[frag])]
		leaf := g.view.tree[0]
		blk := rawBlock(r, leaf)
		off := layout.ExtentTailOffset(binary.LittleEndian.Uint16(blk[4:]))
		blk[off] ^= 0xFF
		if vs := r.write(int64(leaf)*r.bs, blk); kinds(vs) != "unparseable" {
			t.Fatalf("got %v, want unparseable", vs)
		}
	})
	t.Run("honest versions", func(t *testing.T) {
		r, f := open()
		// The inode, resealed (inodeBlockWith), the directory block and the
		// extent block rewritten as they are, and a sealed new extent.
		home, blk := r.inodeBlockWith(p, setSizeTo(6000))
		if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
			t.Fatalf("inode: %v", vs)
		}
		db := f.parent.view.dirBlocks[0]
		if vs := r.write(int64(db)*r.bs, rawBlock(r, db)); len(vs) != 0 {
			t.Fatalf("directory block: %v", vs)
		}
		g := r.e.byIno[uint64(r.ids[frag])]
		leaf := g.view.tree[0]
		lb := rawBlock(r, leaf)
		binary.LittleEndian.PutUint32(lb[8:], 7) // eh_generation, ignored by the kernel
		r.sealExtentBlock(g, lb)
		if vs := r.write(int64(leaf)*r.bs, lb); len(vs) != 0 {
			t.Fatalf("extent block: %v", vs)
		}
	})
	t.Run("without a journal only logged", func(t *testing.T) {
		// ext4 without a journal may write a block while changing it (a
		// torn checksum the next write repairs): no indicator.
		r := openRig(t, loadImage(t, "b4k-nojournal.img"), map[string]int64{p: 5000}, p)
		f := r.e.byIno[uint64(r.ids[p])]
		blk := rawBlock(r, f.inoBlock)
		breakRec(blk[f.inoOff : f.inoOff+r.e.sb.InodeSizeBytes()])
		if vs := r.write(int64(f.inoBlock)*r.bs, blk); len(vs) != 0 {
			t.Fatalf("got %v, want nothing", vs)
		}
	})
}

// The red team's debugfs commands, run on the image as the host would have
// them land (home writes).
func TestRedTeamDebugfsInode(t *testing.T) {
	const p = "var/log/app.log"
	path := loadImage(t, "b4k-journal.img")
	for _, tc := range []struct{ cmd, want string }{
		{"sif var/log/app.log flags 0x80800", "type-changed"},
		{"sif var/log/app.log flags 0x180000", "type-changed"},
		{"sif var/log/app.log flags 0x280000", "type-changed"},
		{"sif var/log/app.log flags 0x40080000", "type-changed"},
		{"sif var/log/app.log file_acl 1", "unparseable"},
		{"sif var/log/app.log checksum 0x1234", "unparseable"},
		{"sif var/log checksum 0x1234", "unparseable"},
		{"sif var/log/app.log flags 0x80020", ""},  // chattr +a
		{"sif var/log/app.log flags 0x84090", ""},  // +i +A +j
		{"sif var/log/app.log mtime 20200101", ""}, // debugfs reseals the record
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			r := openRig(t, path, map[string]int64{p: 5000}, p)
			next := r.debugfs(tc.cmd)
			vs := r.feed(next, changedBlocks(r.img.b, next, r.bs))
			got := fmt.Sprint(kinds(vs))
			if tc.want == "" && len(vs) != 0 || tc.want != "" && !hasKind(vs, kindByName(tc.want)) {
				t.Fatalf("got %q %v, want %q", got, vs, tc.want)
			}
		})
	}
}

func kindByName(s string) revfs.Kind {
	for k := revfs.Kind(1); k < 32; k++ {
		if k.String() == s {
			return k
		}
	}
	return 0
}
