package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

var allImages = []string{"b1k-journal.img", "b4k-journal.img", "b4k-nojournal.img", "b1k-nojournal.img", "b4k-journal-data.img"}

func TestOpenAndRead(t *testing.T) {
	for _, name := range allImages {
		t.Run(name, func(t *testing.T) {
			path := loadImage(t, name)
			r := openRig(t, path, map[string]int64{"var/log/app.log": 5000, "var/log/big.log": 70000},
				"var/log/app.log", "var/log/big.log", "var/log/empty.log")
			for p, want := range map[string][]byte{"var/log/app.log": seqContent(5000), "var/log/big.log": seqContent(70000), "var/log/empty.log": nil} {
				st := r.state(p)
				if st.Size != int64(len(want)) || st.Coherent != int64(len(want)) {
					t.Errorf("%s: size %d coherent %d, want %d", p, st.Size, st.Coherent, len(want))
				}
				got := make([]byte, len(want))
				if err := r.e.ReadFile(st.ID, got, 0); err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: ReadFile: %v (content equal %v)", p, err, bytes.Equal(got, want))
				}
			}
			if err := r.e.ReadFile(r.ids["var/log/app.log"], make([]byte, 10), 4995); !errors.Is(err, ErrNotCoherent) {
				t.Errorf("read past coherent: %v", err)
			}
			// Watches: superblock, the inode table block, data, not a free block.
			if !r.e.Watches(1024, 1) {
				t.Error("superblock not watched")
			}
			f := r.e.byIno[uint64(r.ids["var/log/app.log"])]
			if !r.e.Watches(int64(f.inoBlock)*r.bs+int64(f.inoOff), 4) {
				t.Error("inode not watched")
			}
			m := f.view.maps[0]
			if !r.e.Watches(int64(m.Physical)*r.bs, 1) {
				t.Error("data not watched")
			}
			if r.e.Watches(int64(r.e.blocks-1)*r.bs, r.bs) {
				t.Error("last (free) block watched")
			}
		})
	}
}

func TestOpenRefusesUnsupported(t *testing.T) {
	for _, name := range []string{"unsupported-inline-data.img", "unsupported-bigalloc.img"} {
		b, _ := os.ReadFile(loadImage(t, name))
		_, err := Open(bytes.NewReader(b), int64(len(b)), nil, blockSet{}, Options{})
		if !errors.Is(err, layout.ErrUnsupported) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Fresh (uncommitted) files become coherent only as their blocks are
// written: Open trusts nothing the host has not written.
func TestCoherenceNeedsWrittenBlocks(t *testing.T) {
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), nil, "var/log/big.log")
	st := r.state("var/log/big.log")
	if st.Size != 70000 || st.Coherent != 0 {
		t.Fatalf("fresh: %+v", st)
	}
	f := r.e.byIno[uint64(st.ID)]
	rewrite := func(lb uint64) {
		m, ok := f.view.lookup(lb)
		if !ok {
			t.Fatalf("logical block %d not mapped", lb)
		}
		off := int64(m.Physical+lb-m.Logical) * r.bs
		r.write(off, bytes.Clone(r.img.b[off:off+r.bs]))
	}
	// Rewrite blocks 0..4 (unchanged content): coherent covers 5 blocks.
	for i := uint64(0); i < 5; i++ {
		rewrite(i)
	}
	if st = r.state("var/log/big.log"); st.Coherent != 5*r.bs {
		t.Fatalf("after 5 blocks: coherent %d", st.Coherent)
	}
	// A gap (block 6 written, 5 not) does not extend it.
	rewrite(6)
	if st = r.state("var/log/big.log"); st.Coherent != 5*r.bs {
		t.Fatalf("gap: coherent %d", st.Coherent)
	}
	// Freeing block 5 in the bitmap and writing nothing: still not coherent;
	// the rest written: coherent reaches the size.
	for i := uint64(5); i*uint64(r.bs) < 70000; i++ {
		rewrite(i)
	}
	if st = r.state("var/log/big.log"); st.Coherent != 70000 {
		t.Fatalf("all written: coherent %d", st.Coherent)
	}
}

func TestBitmapFreeForgetsWritten(t *testing.T) {
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), nil, "var/log/app.log")
	next := r.debugfs("rm var/log/big.log")
	big, err := layout.LookupPath(bytes.NewReader(r.img.b), "var/log/big.log")
	if err != nil {
		t.Fatal(err)
	}
	im, _ := layout.OpenImage(bytes.NewReader(r.img.b))
	in, _, _ := im.ReadInode(big)
	maps, _, _ := im.FileMap(in)
	r.written.Add(maps[0].Physical, maps[0].Len)
	if vs := r.feed(next, changedBlocks(r.img.b, next, r.bs)); len(vs) != 0 {
		t.Fatalf("rm of an unprotected file: %v", vs)
	}
	// Every changed block was "written" by the feed, but the freed data
	// blocks were not among them: they must be gone from the set.
	if r.written.Contains(maps[0].Physical, 1) {
		t.Errorf("freed block %d still counts as written", maps[0].Physical)
	}
}

// Attacks made with debugfs on the image, fed block by block as home
// writes: each must raise the right kind, on the right file, blaming
// exactly the offending bytes.
func TestAttacks(t *testing.T) {
	for _, name := range []string{"b1k-journal.img", "b4k-nojournal.img"} {
		t.Run(name, func(t *testing.T) {
			path := loadImage(t, name)
			const p = "var/log/app.log"
			open := func() *rig { return openRig(t, path, map[string]int64{p: 4000}, p) }
			inodeRange := func(r *rig) (int64, int64) {
				f := r.e.byIno[uint64(r.ids[p])]
				return int64(f.inoBlock)*r.bs + int64(f.inoOff), int64(r.e.sb.InodeSizeBytes())
			}
			for _, tc := range []struct {
				name string
				cmds []string
				want revfs.Kind
			}{
				{"truncate", []string{"set_inode_field " + p + " size 100"}, revfs.KindSizeDecreased},
				{"clri", []string{"clri " + p}, revfs.KindInodeFreed},
				{"links 0", []string{"set_inode_field " + p + " links_count 0"}, revfs.KindInodeFreed},
				{"to directory", []string{"set_inode_field " + p + " mode 040644"}, revfs.KindTypeChanged},
				{"drop extents flag", []string{"set_inode_field " + p + " flags 0"}, revfs.KindTypeChanged},
				{"generation", []string{"set_inode_field " + p + " generation 77"}, revfs.KindInodeFreed},
				{"extent start", []string{"set_inode_field " + p + " block[5] 1700"}, revfs.KindMappingChanged},
				// Block 2: descriptors (1 KiB blocks) or reserved ones (4 KiB).
				{"extent into metadata", []string{"set_inode_field " + p + " block[5] 2"}, revfs.KindUnparseable},
				{"garbage extent header", []string{"set_inode_field " + p + " block[0] 0x12345678"}, revfs.KindUnparseable},
				// Sizes no kernel writes: negative as a signed number, or
				// past the 2^32 blocks extents can map.
				{"negative size", []string{"set_inode_field " + p + " size 0x8000000000001000"}, revfs.KindUnparseable},
				{"size past extents", []string{"set_inode_field " + p + " size 0x100000000001000"}, revfs.KindUnparseable},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := open()
					next := r.debugfs(tc.cmds...)
					vs := r.feed(next, changedBlocks(r.img.b, next, r.bs))
					if len(vs) == 0 {
						t.Fatalf("no violation (want %s)", tc.want)
					}
					off, n := inodeRange(r)
					v := vs[0]
					if v.Kind != tc.want || v.File != r.ids[p] || v.Off != off || v.Len != n {
						t.Fatalf("got %v, want %s on file %d bytes [%d,+%d)", vs, tc.want, r.ids[p], off, n)
					}
				})
			}
			journalled := r0(t, path).e.jnl != nil
			t.Run("unlink", func(t *testing.T) {
				r := open()
				next := r.debugfs("rm " + p)
				vs := r.feed(next, changedBlocks(r.img.b, next, r.bs))
				want := "inode-freed"
				if journalled {
					want = "dir-entry,inode-freed"
				}
				if k := kinds(vs); k != want {
					t.Fatalf("rm: %v, want %s", vs, want)
				}
			})
			t.Run("entry removed only", func(t *testing.T) {
				r := open()
				next := r.debugfs("unlink " + p)
				vs := r.feed(next, changedBlocks(r.img.b, next, r.bs))
				want := ""
				if journalled {
					// A raw write of the directory block, checked against
					// the committed directory.
					want = "dir-entry"
				}
				if k := kinds(vs); k != want {
					t.Fatalf("unlink: %v, want %q", vs, want)
				}
			})
			t.Run("raw data overwrite", func(t *testing.T) {
				r := open()
				f := r.e.byIno[uint64(r.ids[p])]
				m := f.view.maps[0]
				// Overwrite bytes 3990..4010 of the file: 10 committed, 10 not.
				off := int64(m.Physical)*r.bs + 3990
				if r.bs == 1024 {
					off = int64(m.Physical+3)*r.bs + 3990 - 3072
				}
				vs := r.write(off, bytes.Repeat([]byte{'X'}, 20))
				if len(vs) != 1 || vs[0].Kind != revfs.KindDataChanged || vs[0].Off != off || vs[0].Len != 10 {
					t.Fatalf("got %v, want data-changed [%d,+10)", vs, off)
				}
				// Rewriting the same bytes (the partial block refilled) is fine.
				blk := int64(m.Physical) * r.bs
				if vs := r.write(blk, bytes.Clone(r.img.b[blk:blk+r.bs])); len(vs) != 0 {
					t.Fatalf("identical rewrite: %v", vs)
				}
			})
			t.Run("discard", func(t *testing.T) {
				r := open()
				f := r.e.byIno[uint64(r.ids[p])]
				m := f.view.maps[0]
				vs := r.e.CheckDiscard(int64(m.Physical)*r.bs, 1<<20)
				if len(vs) == 0 || vs[0].Kind != revfs.KindDiscard || vs[0].Off != int64(m.Physical)*r.bs {
					t.Fatalf("discard: %v", vs)
				}
				if vs[0].Len != 4000 || vs[0].File != r.ids[p] {
					t.Errorf("discard blames %v, want the 4000 committed bytes", vs[0])
				}
				t.Logf("%v", vs)
			})
			t.Run("mkfs", func(t *testing.T) {
				r := open()
				next := mkfsOver(t, r.img.b, "-b", "4096")
				vs := r.feed(next, changedBlocks(r.img.b, next, r.bs))
				found := false
				for _, v := range vs {
					if v.Kind == revfs.KindLayoutChanged && v.Off == 1024 && v.Len == 1024 {
						found = true
					}
				}
				if !found {
					t.Fatalf("mkfs: no layout-changed on the superblock: %v", vs)
				}
			})
			// Rotation by rename inside the directory, a new file put at
			// the name: the path leads to another file. (The rename alone
			// is raised too with a journal: see TestRenameWatched.)
			t.Run("rename and replace", func(t *testing.T) {
				r := open()
				next := r.debugfs("ln "+p+" var/log/app.log.1", "unlink "+p, "write /etc/hostname "+p)
				vs := r.feed(next, changedBlocks(r.img.b, next, r.bs))
				if !slices.ContainsFunc(vs, func(v revfs.Violation) bool {
					return v.Kind == revfs.KindDirEntry && strings.Contains(v.Detail, "leads to another file")
				}) {
					t.Fatalf("got %v, want %v: the path leads to another file", vs, revfs.KindDirEntry)
				}
			})
			// Legitimate changes: none may raise anything.
			for _, tc := range []struct {
				name string
				cmds []string
			}{
				{"append and immutable flags", []string{"set_inode_field " + p + " flags 0x80030"}},
				{"times", []string{"set_inode_field " + p + " mtime 20250101000000", "set_inode_field " + p + " atime 20250101000000", "set_inode_field " + p + " ctime 20250101000000"}},
				{"i_blocks", []string{"set_inode_field " + p + " blocks 800"}},
				{"grow", []string{"set_inode_field " + p + " size 4500"}},
				{"other files", []string{"rm var/log/big.log", "write /etc/hostname var/log/new.log", "mkdir var/log/sub"}},
			} {
				t.Run("ok "+tc.name, func(t *testing.T) {
					r := open()
					next := r.debugfs(tc.cmds...)
					if vs := r.feed(next, changedBlocks(r.img.b, next, r.bs)); len(vs) != 0 {
						t.Fatalf("false positive: %v", vs)
					}
				})
			}
		})
	}
}

// A file deeper than the inode (frag.log has an extent leaf block): moving
// a committed extent inside the leaf is blamed on the leaf's bytes.
func TestAttackExtentLeaf(t *testing.T) {
	for _, name := range []string{"b1k-nojournal.img", "b4k-journal.img"} {
		t.Run(name, func(t *testing.T) {
			const p = "var/log/frag.log"
			r := openRig(t, loadImage(t, name), map[string]int64{p: 20000}, p)
			f := r.e.byIno[uint64(r.ids[p])]
			if len(f.view.tree) != 1 {
				t.Fatalf("frag.log tree %v", f.view.tree)
			}
			leaf := f.view.tree[0]
			blk := bytes.Clone(r.img.b[int64(leaf)*r.bs : int64(leaf+1)*r.bs])
			// First leaf entry at byte 12: ee_start_lo at 12+8.
			start := binary.LittleEndian.Uint32(blk[20:])
			binary.LittleEndian.PutUint32(blk[20:], start+100)
			r.sealExtentBlock(f, blk)
			vs := r.e.CheckWrite(int64(leaf)*r.bs, blk)
			if len(vs) != 1 || vs[0].Kind != revfs.KindMappingChanged || vs[0].Off != int64(leaf)*r.bs || vs[0].Len != r.bs {
				t.Fatalf("got %v, want mapping-changed on the leaf block %d", vs, leaf)
			}
			// Growing the leaf (a new extent past the committed range) is fine.
			blk = bytes.Clone(r.img.b[int64(leaf)*r.bs : int64(leaf+1)*r.bs])
			n, err := layout.ParseExtentNode(blk)
			if err != nil {
				t.Fatal(err)
			}
			last := n.Extents[len(n.Extents)-1]
			if n.Header.Entries < n.Header.Max {
				e := 12 + 12*int(n.Header.Entries)
				binary.LittleEndian.PutUint32(blk[e:], last.Block+last.Length()+50)
				binary.LittleEndian.PutUint16(blk[e+4:], 1)
				binary.LittleEndian.PutUint32(blk[e+8:], uint32(r.e.blocks-2))
				binary.LittleEndian.PutUint16(blk[2:], n.Header.Entries+1)
				r.sealExtentBlock(f, blk)
				if vs := r.write(int64(leaf)*r.bs, blk); len(vs) != 0 {
					t.Fatalf("new extent past the committed range: %v", vs)
				}
			}
			// Garbage in the leaf is unparseable metadata.
			garbage := bytes.Repeat([]byte{0xAB}, int(r.bs))
			if vs := r.e.CheckWrite(int64(leaf)*r.bs, garbage); len(vs) != 1 || vs[0].Kind != revfs.KindUnparseable || vs[0].Off != int64(leaf)*r.bs {
				t.Fatalf("garbage leaf: %v", vs)
			}
		})
	}
}

func mkfsOver(t *testing.T, img []byte, args ...string) []byte {
	t.Helper()
	path := t.TempDir() + "/img"
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "mkfs.ext4", append(append([]string{"-q", "-F"}, args...), path)...)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMappingCheckIgnoresExtentSplits(t *testing.T) {
	// Two adjacent extents and one merged extent are the same mapping.
	a := []layout.Mapping{{Logical: 0, Physical: 100, Len: 2}, {Logical: 2, Physical: 102, Len: 3}}
	b := []layout.Mapping{{Logical: 0, Physical: 100, Len: 10}}
	if !slices.Equal(normalise(a, 5), normalise(b, 5)) {
		t.Fatal("split extents compare unequal")
	}
	if slices.Equal(normalise(a, 5), normalise(b, 6)) {
		t.Fatal("different lengths compare equal")
	}
}

func r0(t *testing.T, path string) *rig { return openRig(t, path, nil) }

// An extent leaf found in the image (not written as a new version) that
// disagrees with the committed block map is treated as stale, not as an
// attack: ext4 can reuse the block of an old leaf of the same inode, and
// without a journal the inode may land first. The verdict comes when the
// host writes that block.
func TestStaleLeafDefersVerdict(t *testing.T) {
	const p = "var/log/frag.log"
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), map[string]int64{p: 20000}, p)
	f := r.e.byIno[uint64(r.ids[p])]
	leaf := f.view.tree[0]
	forged := bytes.Clone(r.img.b[int64(leaf)*r.bs : int64(leaf+1)*r.bs])
	start := binary.LittleEndian.Uint32(forged[20:])
	moved := start + 100
	for _, in := r.e.zone.Overlap(uint64(moved), 1); in; _, in = r.e.zone.Overlap(uint64(moved), 1) {
		moved++ // a stale leaf, not one mapping metadata (unparseable)
	}
	binary.LittleEndian.PutUint32(forged[20:], moved)
	n, err := layout.ParseExtentNode(forged)
	if err != nil {
		t.Fatal(err)
	}
	seed := layout.InodeSeed(r.e.fsSeed, uint32(f.ino), f.view.inode.Generation)
	tail := layout.ExtentTailOffset(n.Header.Max)
	binary.LittleEndian.PutUint32(forged[tail:], layout.TailChecksum(seed, forged, tail))
	// The forged leaf lands in a free, unwatched block first.
	x := r.e.blocks - 3
	if r.e.Watches(int64(x)*r.bs, r.bs) {
		t.Fatal("free block watched")
	}
	if vs := r.write(int64(x)*r.bs, forged); len(vs) != 0 {
		t.Fatalf("unwatched block: %v", vs)
	}
	// Then the inode's root index is pointed at it.
	home, blk := r.inodeBlockWith(p, func(raw []byte) {
		// i_block: header (12 bytes), first index entry: ei_block, ei_leaf_lo.
		binary.LittleEndian.PutUint32(raw[layout.InodeBlockOff+12+4:], uint32(x))
	})
	if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
		t.Fatalf("root pointing at a leaf found only in the image: %v (want no verdict yet)", vs)
	}
	if st := r.state(p); st.Coherent < 20000 {
		t.Fatalf("coherent %d fell below the committed 20000", st.Coherent)
	}
	// The host writing that leaf is a new version: now it is judged.
	vs := r.write(int64(x)*r.bs, forged)
	if len(vs) != 1 || vs[0].Kind != revfs.KindMappingChanged || vs[0].Off != int64(x)*r.bs {
		t.Fatalf("written leaf: %v, want mapping-changed on block %d", vs, x)
	}
}
