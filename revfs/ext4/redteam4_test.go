package ext4

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// Fourth red-team round: the rules of commit 0d81df7 for a filesystem
// without a journal. (1) Blocks a tracked inode stops mapping are set
// aside (Engine.dropped) and kept when the same inode maps them again at
// the same logical block. (2) Overlapping extents that agree make their
// range unknown (StallUnknownTree) instead of a violation.
//
// Tests named ...Hole fail on 0d81df7, the tree they were written
// against: each message says what the attacker achieves. Most were mended
// by 2dc6650 and 83e0fec (from this round and a parallel one) and pass
// since; TestRedTeam4TruncateAfterSetAside/incomplete_view still fails on 83e0fec
// (fix: /tmp/redteam4/FIX.diff). The others pass: the attack is caught
// (regression tests).

// rt4Root writes an extent root into an inode record's i_block: depth 0
// entries are {logical, ee_len, physical}, depth > 0 entries are
// {ei_block, 0, child}.
func rt4Root(raw []byte, depth uint16, xs [][3]uint64) {
	rt4Node(raw[0x28:0x28+60], 4, depth, xs)
}

// rt4Node fills an extent node (header and entries) in b.
func rt4Node(b []byte, max, depth uint16, xs [][3]uint64) {
	le := binary.LittleEndian
	clear(b)
	le.PutUint16(b[0:], layout.ExtentMagic)
	le.PutUint16(b[2:], uint16(len(xs)))
	le.PutUint16(b[4:], max)
	le.PutUint16(b[6:], depth)
	for i, x := range xs {
		e := b[12+12*i:]
		le.PutUint32(e[0:], uint32(x[0]))
		if depth == 0 {
			le.PutUint16(e[4:], uint16(x[1]))
			le.PutUint16(e[6:], uint16(x[2]>>32))
			le.PutUint32(e[8:], uint32(x[2]))
		} else {
			le.PutUint32(e[4:], uint32(x[2]))
			le.PutUint16(e[8:], uint16(x[2]>>32))
		}
	}
}

// rt4TreeBlock returns a whole extent tree block of file p (eh_max for
// the block size) with its checksum tail, as the kernel writes one.
func (r *rig) rt4TreeBlock(p string, depth uint16, xs [][3]uint64) []byte {
	f := r.e.byIno[uint64(r.ids[p])]
	b := make([]byte, r.bs)
	rt4Node(b, uint16((r.bs-12)/12), depth, xs)
	r.sealExtentBlock(f, b)
	return b
}

// rt4WriteRoot has the host write p's inode with root xs at depth and size n.
func (r *rig) rt4WriteRoot(p string, depth uint16, xs [][3]uint64, n uint32) []revfs.Violation {
	home, blk := r.inodeBlockWith(p, func(raw []byte) {
		rt4Root(raw, depth, xs)
		binary.LittleEndian.PutUint32(raw[4:], n)
	})
	return r.write(int64(home)*r.bs, blk)
}

// rt4Phys returns the physical block of p's logical block lb in the
// current view.
func (r *rig) rt4Phys(p string, lb uint64) uint64 {
	f := r.e.byIno[uint64(r.ids[p])]
	m, ok := f.view.lookup(lb)
	if !ok {
		r.t.Fatalf("%s: logical block %d not mapped", p, lb)
	}
	return m.Physical + lb - m.Logical
}

// rt4Split returns big.log's block map as two extents {logical, length,
// physical}: [0,6) and [6,18) (the images map it with one or two extents;
// the split maps the same blocks).
func (r *rig) rt4Split(t *testing.T) [][3]uint64 {
	const p = "var/log/big.log"
	xs := [][3]uint64{{0, 6, r.rt4Phys(p, 0)}, {6, 12, r.rt4Phys(p, 6)}}
	for _, x := range xs {
		for i := uint64(0); i < x[1]; i++ {
			if r.rt4Phys(p, x[0]+i) != x[2]+i {
				t.Skipf("big.log's map is not two runs [0,6) and [6,18)")
			}
		}
	}
	return xs
}

// rt4KernelRead mounts a copy of img with the running kernel (root only)
// and reads p: ok is false when the kernel cannot be asked.
func rt4KernelRead(t *testing.T, img []byte, p string) (data []byte, ok bool, err error) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil, false, nil
	}
	if _, e := os.Stat("/dev/loop-control"); e != nil {
		return nil, false, nil
	}
	path := filepath.Join(t.TempDir(), "k.img")
	if e := os.WriteFile(path, img, 0o644); e != nil {
		t.Fatal(e)
	}
	m := newLoopMount(t, path, "ro")
	defer m.unmount()
	data, err = os.ReadFile(filepath.Join(m.dir, p))
	return data, true, err
}

// rt4Free returns n blocks from the end of the filesystem, free in the
// test images (every image is one block group, metadata at its start).
func (r *rig) rt4Free(n int) []uint64 {
	var out []uint64
	for b := r.e.blocks - 64; len(out) < n; b++ {
		out = append(out, b)
	}
	return out
}

// ---------------------------------------------------------------------
// Rule 1: blocks set aside.

// TestRedTeam4ShiftThroughUnknownView: forgetDropped returns at once
// when the NEW view has an unknown range ("an incomplete view proves
// nothing was dropped"), and compares the next complete view with that
// incomplete one, not with the last complete view. A host that moves
// written blocks to other logical positions in an incomplete view is
// never seen dropping them: they keep counting as written, and the device
// seals the bytes the host wrote for logical blocks 16-17 as the file's
// bytes at logical blocks 14-15, where the host never wrote them (I1).
// Written directly (complete view to complete view) the same move is
// caught: the moved blocks must be written again. The incomplete view is
// cheap: rule 2 makes any pair of agreeing duplicate extents in the
// root one (before 0d81df7 a violation without a journal), and an index
// to a block the host never wrote is one in every mode.
func TestRedTeam4ShiftThroughUnknownView(t *testing.T) {
	const p = "var/log/big.log"
	type how struct {
		name, img string
		// incomplete returns the root of a view in which logical blocks
		// 14-17 map to physical pb+2.. (pb: the old physical block of
		// logical 14) and some range is unknown.
		incomplete func(r *rig, xs [][3]uint64, pb uint64) (uint16, [][3]uint64)
	}
	moved := func(xs [][3]uint64, pb uint64) [][3]uint64 {
		// [0,6) as it was, [6,14) as it was, [14,18) -> pb+2.. (the
		// blocks that held logical 16-17, then two the host never wrote).
		return [][3]uint64{xs[0], {6, 8, xs[1][2]}, {14, 4, pb + 2}}
	}
	hows := []how{
		{"overlap (rule 2)", "b4k-nojournal.img", func(r *rig, xs [][3]uint64, pb uint64) (uint16, [][3]uint64) {
			m := moved(xs, pb)
			return 0, [][3]uint64{m[0], m[0], m[1], m[2]} // [0,6) twice: a "torn merge"
		}},
		{"index to an unwritten block", "b4k-nojournal.img", func(r *rig, xs [][3]uint64, pb uint64) (uint16, [][3]uint64) {
			// The root indexes [0,6) through a block the host has not
			// written, and the rest through a leaf it wrote.
			free := r.rt4Free(2)
			leaf := r.rt4TreeBlock(p, 0, moved(xs, pb)[1:])
			if vs := r.write(int64(free[1])*r.bs, leaf); len(vs) != 0 {
				r.t.Fatalf("leaf: %v", vs)
			}
			return 1, [][3]uint64{{0, 0, free[0]}, {6, 0, free[1]}}
		}},
		{"index to an unwritten block, journal", "b4k-journal.img", func(r *rig, xs [][3]uint64, pb uint64) (uint16, [][3]uint64) {
			free := r.rt4Free(2)
			leaf := r.rt4TreeBlock(p, 0, moved(xs, pb)[1:])
			if vs := r.write(int64(free[1])*r.bs, leaf); len(vs) != 0 {
				r.t.Fatalf("leaf: %v", vs)
			}
			return 1, [][3]uint64{{0, 0, free[0]}, {6, 0, free[1]}}
		}},
	}
	for _, h := range hows {
		t.Run(h.name, func(t *testing.T) {
			r, _ := tornRig(t, h.img)
			xs := r.rt4Split(t)
			pb := xs[1][2] + 8 // physical block of logical 14
			// Baseline: the same move, complete view to complete view.
			base, _ := tornRig(t, h.img)
			if vs := base.writeExtents(moved(xs, pb), 70000); len(vs) != 0 {
				t.Fatalf("baseline: %v", vs)
			}
			base.wantCoherent(p, 14*4096, "baseline: the moved blocks must be written again")

			depth, root := h.incomplete(r, xs, pb)
			if vs := r.rt4WriteRoot(p, depth, root, 70000); len(vs) != 0 {
				t.Fatalf("incomplete view raised %v", vs)
			}
			if st := r.state(p); !st.UnknownMap {
				t.Fatalf("the view is not incomplete: %+v", st)
			}
			if vs := r.writeExtents(moved(xs, pb), 70000); len(vs) != 0 {
				t.Fatalf("complete view raised %v", vs)
			}
			if st := r.state(p); st.Coherent > 14*4096 {
				got := r.readAll(p, st.Coherent)
				t.Fatalf("HOLE: through an incomplete view the device takes blocks %d-%d, which the host wrote as logical 16-17, as logical 14-15 "+
					"(coherent %d, baseline 57344): it would seal %q at offset 57344, bytes the host wrote at offset %d, never at 57344 (I1)",
					pb+2, pb+3, st.Coherent, got[57344:57344+24], 16*4096)
			}
		})
	}
}

// TestRedTeam4TruncateRealloc: the host truncates the unsealed tail
// (the inode maps [0,14), size 57344: blocks of logical 14-17 set aside)
// and appends again; ext4's allocator picks the same physical blocks for
// the same logical blocks (ext4_ext_find_goal: the neighbour's physical
// block + distance), and the inode that maps them lands before the new
// data (no journal: any order). The set-aside blocks are "mapped again
// by the same inode at the same logical block" and kept: the device
// takes the truncated bytes as the new append, seals them within the
// quiescence window, and the host's real data, when it lands, changes
// committed bytes: a violation against an honest host, and a real log
// holding bytes the file never holds again at that offset (I1). Before
// 0d81df7 the truncation forgot them. In a journal mode the same happens
// with inode checkpoints (rule 1 is not limited to "without a journal").
func TestRedTeam4TruncateRealloc(t *testing.T) {
	const p = "var/log/big.log"
	for _, img := range []string{"b4k-nojournal.img", "b4k-journal.img"} {
		t.Run(img, func(t *testing.T) {
			r, _ := tornRig(t, img)
			xs := r.rt4Split(t)
			old := r.readAll(p, 70000)
			r.e.SetCommitted(r.ids[p], 6*4096) // some prefix sealed: irrelevant to the attack
			trunc := [][3]uint64{xs[0], {6, 8, xs[1][2]}}
			if vs := r.writeExtents(trunc, 14*4096); len(vs) != 0 {
				t.Fatalf("truncate: %v", vs)
			}
			// The append: same blocks (goal allocation), the inode first.
			if vs := r.writeExtents(xs, 70000); len(vs) != 0 {
				t.Fatalf("append: %v", vs)
			}
			st := r.state(p)
			if st.Coherent <= 14*4096 {
				return // the new data must come first: secure
			}
			// What happens next: the device seals, the real data lands.
			r.e.SetCommitted(r.ids[p], st.Coherent)
			pb := xs[1][2] + 8
			fresh := bytes.Repeat([]byte("NEW APPEND "), 4096)[:4096]
			vs := r.write(int64(pb)*r.bs, fresh)
			t.Fatalf("HOLE: after a truncate to 57344 and a new append reusing the same blocks, the device takes [57344,%d) as coherent "+
				"before the host wrote the new data: it seals the truncated bytes %q; the host's real append (%q...) then raises %s",
				st.Coherent, old[57344:57344+24], fresh[:11], kinds(vs))
		})
	}
}

// TestRedTeam4TruncateAfterSetAside: TestRedTeam4TruncateRealloc
// with the blocks set aside first. A torn view (size unchanged, the last
// 4 blocks missing) sets them aside; the truncate that follows (size
// 57344) drops nothing more, the torn view not mapping them either; the
// append over the same blocks then finds them "mapped again by the same
// inode at the same place", and the device would take the truncated bytes
// as the new append (I1), as above. Two truncating inodes: one mapping
// [0,14), which a rule forgetting only the blocks a truncating view drops
// misses; one also carrying an agreeing duplicate extent over [0,6) (rule
// 2: unknown there), which a rule forgetting set-aside blocks past a new
// size only for complete views misses.
func TestRedTeam4TruncateAfterSetAside(t *testing.T) {
	const p = "var/log/big.log"
	cases := []struct {
		name       string
		truncating func(xs [][3]uint64) [][3]uint64
		incomplete bool // the truncating view has an unknown range
	}{
		{"complete view", func(xs [][3]uint64) [][3]uint64 { return [][3]uint64{xs[0], {6, 8, xs[1][2]}} }, false},
		{"incomplete view", func(xs [][3]uint64) [][3]uint64 { return [][3]uint64{xs[0], xs[0], {6, 8, xs[1][2]}} }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, _ := tornRig(t, "b4k-nojournal.img")
			xs := r.rt4Split(t)
			old := r.readAll(p, 70000)
			torn := [][3]uint64{xs[0], {6, 8, xs[1][2]}}
			if vs := r.writeExtents(torn, 70000); len(vs) != 0 {
				t.Fatalf("torn: %v", vs)
			}
			if vs := r.writeExtents(c.truncating(xs), 14*4096); len(vs) != 0 {
				t.Fatalf("truncate: %v", vs)
			}
			if st := r.state(p); st.UnknownMap != c.incomplete || st.Size != 14*4096 {
				t.Fatalf("the truncating view: %+v, want an unknown range %v", st, c.incomplete)
			}
			if vs := r.writeExtents(xs, 70000); len(vs) != 0 {
				t.Fatalf("append: %v", vs)
			}
			if st := r.state(p); st.Coherent > 14*4096 {
				t.Fatalf("HOLE: set aside by a torn view, then truncated, then appended over the same blocks: the device takes [57344,%d) "+
					"as coherent before the host wrote the new data, and would seal the truncated bytes %q (I1)", st.Coherent, old[57344:57344+24])
			}
		})
	}
}

// TestRedTeam4PunchHoleRealloc: the residue of the truncate holes
// that no size tells apart from a torn view. The host punches a hole in
// the unsealed tail (fallocate PUNCH_HOLE: the inode maps [0,14) and
// [16,18), size unchanged) and writes into it again; ext4's allocator
// picks the same physical blocks (the goal is the neighbour's physical
// block + distance) and the inode lands before the new data. The blocks
// were set aside, not forgotten, and are "mapped again by the same inode
// at the same place": the device takes the bytes the host punched out as
// the new data, seals them, and the real write then changes committed
// bytes (a violation against an honest host, and I1). Still open with
// FIX.diff; closed by forgetDropped's i_blocks rule: the kernel's punched
// inode counts fewer blocks, a torn view's inode does not.
func TestRedTeam4PunchHoleRealloc(t *testing.T) {
	const p = "var/log/big.log"
	r, _ := tornRig(t, "b4k-nojournal.img")
	xs := r.rt4Split(t)
	old := r.readAll(p, 70000)
	pb := xs[1][2] + 8 // logical 14
	punched := [][3]uint64{xs[0], {6, 8, xs[1][2]}, {16, 2, pb + 2}}
	// The kernel's punched inode counts two blocks fewer (i_blocks, in
	// 512-byte units).
	home, blk := r.inodeBlockWith(p, func(raw []byte) {
		rt2Extents(raw, punched)
		binary.LittleEndian.PutUint32(raw[28:], binary.LittleEndian.Uint32(raw[28:])-uint32(2*r.bs/512))
	})
	if vs := r.write(int64(home)*r.bs, blk); len(vs) != 0 {
		t.Fatalf("punch: %v", vs)
	}
	r.wantCoherent(p, 14*4096, "a hole at [14,16)")
	if vs := r.writeExtents(xs, 70000); len(vs) != 0 {
		t.Fatalf("refill: %v", vs)
	}
	if st := r.state(p); st.Coherent > 14*4096 {
		t.Fatalf("HOLE: a hole punched at [57344,65536) and written again over the same blocks: the device takes it as coherent "+
			"(%d) before the host wrote the new data there, and would seal the punched-out bytes %q (I1)", st.Coherent, old[57344:57344+24])
	}
}

// TestRedTeam4SameChangeMoveBetweenFiles: two protected files share an
// inode-table block (16 records per 4 KiB block). One write of that
// block has big.log stop mapping its last block X (a torn or shrunk
// view, size unchanged) and app.log map X as its new block 2 (the kernel
// handed the freed block out again; app.log's data for it is still in
// the host's page cache). applyChange runs forgetDropped (set aside) and
// claimDropped (forget what another owner maps) per inode in map order:
// when app.log comes first, it claims X before big.log sets it aside, X
// stays written, and app.log's coherent prefix takes big.log's bytes as
// its own (I1); when big.log comes first, X is forgotten, as it should
// be. Go randomises map order, so a run of 40 tries both.
func TestRedTeam4SameChangeMoveBetweenFiles(t *testing.T) {
	for _, img := range []string{"b4k-nojournal.img", "b4k-journal.img"} {
		t.Run(img, func(t *testing.T) { rt4SameChangeMove(t, img) })
	}
}

func rt4SameChangeMove(t *testing.T, img string) {
	const big, app = "var/log/big.log", "var/log/app.log"
	path := loadImage(t, img)
	bad := 0
	var example string
	var moved uint64
	for try := 0; try < 40; try++ {
		r := openRig(t, path, nil, big, app)
		fb, fa := r.e.byIno[uint64(r.ids[big])], r.e.byIno[uint64(r.ids[app])]
		if fb.inoBlock != fa.inoBlock {
			t.Skip("the files' inodes are in different blocks")
		}
		for lb := uint64(0); lb < 18; lb++ {
			r.writeBlocks(big, lb)
		}
		r.writeBlocks(app, 0, 1)
		xs := r.rt4Split(t)
		var as [][3]uint64
		for _, x := range rt2RootExtents(t, r, app) {
			as = append(as, [3]uint64{uint64(x.Block), uint64(x.Length()), x.Start()})
		}
		if len(as) != 1 || as[0][1] != 2 {
			t.Skipf("app.log's extents %v", as)
		}
		last := xs[1][2] + xs[1][1] - 1 // big.log's last block (logical 17)
		moved = last
		xs[1][1]--
		as = append(as, [3]uint64{2, 1, last})
		b := bytes.Clone(r.img.b[int64(fb.inoBlock)*r.bs : int64(fb.inoBlock+1)*r.bs])
		n := r.e.sb.InodeSizeBytes()
		rb, ra := b[fb.inoOff:fb.inoOff+n], b[fa.inoOff:fa.inoOff+n]
		rt2Extents(rb, xs)
		rt2Extents(ra, as)
		binary.LittleEndian.PutUint32(ra[4:], 2*4096+100)
		r.sealInode(fb.ino, rb)
		r.sealInode(fa.ino, ra)
		if vs := r.write(int64(fb.inoBlock)*r.bs, b); len(vs) != 0 {
			t.Fatalf("%v", vs)
		}
		if st := r.state(app); st.Coherent > 2*4096 {
			bad++
			got := r.readAll(app, st.Coherent)
			example = string(got[2*4096 : 2*4096+24])
		}
	}
	if bad > 0 {
		t.Fatalf("HOLE: in %d of 40 runs (map order) app.log takes block %s's bytes, written by the host for big.log, as its own new block 2 "+
			"before the host wrote app.log's data there: the device would seal %q at app.log offset 8192 (I1)", bad, itoa(int(moved)), example)
	}
}

// TestRedTeam4SetAsideTrimmedOrFreed: a block set aside, then trimmed
// (TRIM or WRITE_ZEROES), or freed in the bitmap, and mapped again by the
// same inode at the same logical block must be written again: setting
// aside never adds to the written set, and both paths remove from it.
// Caught (regression).
func TestRedTeam4SetAsideTrimmedOrFreed(t *testing.T) {
	const p = "var/log/big.log"
	for _, how := range []string{"trim", "bitmap"} {
		t.Run(how, func(t *testing.T) {
			r, xs := tornRig(t, "b4k-nojournal.img")
			short := slices.Clone(xs)
			short[len(short)-1][1] -= 4
			if vs := r.writeExtents(short, 70000); len(vs) != 0 {
				t.Fatalf("%v", vs)
			}
			last := xs[len(xs)-1]
			pb := last[2] + last[1] - 4
			switch how {
			case "trim":
				if vs := r.e.CheckDiscard(int64(pb)*r.bs, 4*r.bs); len(vs) != 0 {
					t.Fatalf("trim of set-aside blocks raised %v", vs)
				}
				clear(r.img.b[int64(pb)*r.bs : int64(pb+4)*r.bs])
				r.e.Discarded(int64(pb)*r.bs, 4*r.bs)
			case "bitmap":
				bm := r.e.groups[0].BlockBitmap()
				blk := bytes.Clone(r.img.b[int64(bm)*r.bs : int64(bm+1)*r.bs])
				for b := pb; b < pb+4; b++ {
					blk[b/8] &^= 1 << (b % 8)
				}
				if vs := r.write(int64(bm)*r.bs, blk); len(vs) != 0 {
					t.Fatalf("bitmap: %v", vs)
				}
			}
			if vs := r.writeExtents(xs, 70000); len(vs) != 0 {
				t.Fatalf("%v", vs)
			}
			r.wantCoherent(p, int64(last[0]+last[1]-4)*4096, "set aside, then "+how+", then mapped again")
		})
	}
}

// TestRedTeam4DroppedCapOnlyForgets: past maxDropped set-aside spans one
// is forgotten at once (whichever the cap picks): the cap can only make
// blocks count as not written (a stall, never stale bytes). Every block
// pushed out of the list must have left the written set, and the file's
// own set-aside blocks, mapped again, count as written only if they are
// still set aside. Caught (regression).
func TestRedTeam4DroppedCapOnlyForgets(t *testing.T) {
	const p = "var/log/big.log"
	r, xs := tornRig(t, "b4k-nojournal.img")
	short := slices.Clone(xs)
	short[len(short)-1][1] -= 4
	if vs := r.writeExtents(short, 70000); len(vs) != 0 {
		t.Fatalf("%v", vs)
	}
	last := xs[len(xs)-1]
	pb := last[2] + last[1] - 4
	aside := func(b uint64) bool {
		for _, s := range r.e.dropped {
			if b >= s.phys && b < s.phys+s.n {
				return true
			}
		}
		return false
	}
	// Spans of blocks nobody maps, below and above the file's, all
	// written by the host first.
	var pushed []uint64
	for i := 0; i < maxDropped+8; i++ {
		b := uint64(40 + i)
		if i%2 == 1 {
			b = r.e.blocks - 1 - uint64(i)
		}
		if b >= pb-1 && b <= pb+4 {
			continue
		}
		r.write(int64(b)*r.bs, make([]byte, r.bs))
		r.e.drop(droppedSpan{phys: b, n: 1, ino: 1})
		pushed = append(pushed, b)
	}
	if len(r.e.dropped) > maxDropped {
		t.Fatalf("%d spans set aside, cap %d", len(r.e.dropped), maxDropped)
	}
	for _, b := range pushed {
		if !aside(b) && r.e.written.Contains(b, 1) {
			t.Fatalf("block %d left the set-aside list and still counts as written", b)
		}
	}
	kept := aside(pb)
	if vs := r.writeExtents(xs, 70000); len(vs) != 0 {
		t.Fatalf("%v", vs)
	}
	want := int64(last[0]+last[1]-4) * 4096
	if kept {
		want = 70000
	}
	r.wantCoherent(p, want, "mapped again after the cap")
}

// TestRedTeam4ClaimCost: claimDropped walks every set-aside span for
// every extent of a view (settleDropped is linear in Engine.dropped), at
// every applied view of a tracked inode, under the device's lock. A host
// builds a forged extent tree beyond the committed range (depth 2, about
// 1000 leaves of 340 single-block extents: the engine allows 4096 tree
// blocks and 1.39M extents), then rewrites one index block so that 4
// leaves drop out: their extents are set aside (1024 spans, the cap), and
// the view that dropped them, and every later one, costs extents x 1024
// settle steps. Each 4 KiB index-block write then holds the device for
// seconds (I5: no input may hang the device); before 0d81df7 the same
// write cost what reading the tree costs.
func TestRedTeam4ClaimCost(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	// The same writes twice: the dropped leaves' extents map blocks of
	// their own (1024 spans stay set aside), or blocks other extents map
	// too (claimed at once: no span stays). The difference is what the
	// spans cost.
	spans, drop, back, base, claim := rt4ClaimCost(t, true)
	_, drop0, back0, _, _ := rt4ClaimCost(t, false)
	t.Logf("340000 extents: first view %v; index write dropping 4 leaves: %v with %d spans set aside, %v with none; writing them back: %v, %v; "+
		"one claimDropped of the view with the spans set aside: %v",
		base, drop, spans, drop0, back, back0, claim)
	// claimDropped alone, against reading the whole tree from scratch:
	// both run on the same machine at the same moment.
	if spans >= maxDropped/2 && claim > base/2 {
		t.Fatalf("HOLE: with %d spans set aside, claimDropped of one view costs %v (reading the whole tree: %v); one 4 KiB write of a "+
			"forged index block holds the device for %v (%v without spans; writing the leaves back %v), and the host repeats it at will (I5)",
			spans, claim, base, drop, drop0, back)
	}
}

// rt4ClaimCost builds the forged tree of TestRedTeam4ClaimCost and
// times the write that drops 4 leaves and the one that puts them back.
func rt4ClaimCost(t *testing.T, own bool) (spans int, drop, back, base, claim time.Duration) {
	const p = "var/log/big.log"
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), nil, p)
	// Free blocks from the block bitmap (one group).
	bm := r.e.groups[0].BlockBitmap()
	bits := r.img.b[int64(bm)*r.bs : int64(bm+1)*r.bs]
	var free []uint64
	for b := uint64(r.e.sb.FirstDataBlock) + 1; b < r.e.blocks; b++ {
		if bits[b/8]&(1<<(b%8)) == 0 {
			free = append(free, b)
		}
	}
	const leaves, perLeaf, perIndex = 1000, 340, 334
	if len(free) < leaves+3+4*perLeaf+300 {
		t.Skipf("%d free blocks", len(free))
	}
	pool := free[leaves+3:] // data blocks the forged extents map
	leafAt, idxAt := free[:leaves], free[leaves:leaves+3]
	// With own, the extents of the last 4 leaves map blocks no other
	// extent maps (set aside, nobody claims them); the others share the
	// rest of the pool.
	nOwn := uint64(4 * perLeaf)
	shared := uint64(len(pool)) - nOwn
	total := uint64(leaves * perLeaf)
	k := uint64(0)
	for _, b := range leafAt {
		var xs [][3]uint64
		for j := 0; j < perLeaf; j++ {
			pb := pool[k%shared]
			if own && k >= total-nOwn {
				pb = pool[shared+k-(total-nOwn)]
			}
			xs = append(xs, [3]uint64{2 * k, 1, pb})
			k++
		}
		r.write(int64(b)*r.bs, r.rt4TreeBlock(p, 0, xs))
	}
	index := func(i, drop int) []byte {
		var xs [][3]uint64
		for l := i * perIndex; l < min((i+1)*perIndex, leaves)-drop; l++ {
			xs = append(xs, [3]uint64{uint64(2 * perLeaf * l), 0, leafAt[l]})
		}
		return r.rt4TreeBlock(p, 1, xs)
	}
	for i, b := range idxAt {
		r.write(int64(b)*r.bs, index(i, 0))
	}
	var root [][3]uint64
	for i, b := range idxAt {
		root = append(root, [3]uint64{uint64(2 * perLeaf * perIndex * i), 0, b})
	}
	start := time.Now()
	if vs := r.rt4WriteRoot(p, 2, root, uint32(2*k)*4096); len(vs) != 0 {
		t.Fatalf("forged tree: %v", vs)
	}
	base = time.Since(start)
	f := r.e.byIno[uint64(r.ids[p])]
	if len(f.view.maps) != int(k) || len(f.view.unknown) != 0 {
		t.Fatalf("forged tree: %d extents (want %d), unknown %v", len(f.view.maps), k, f.view.unknown)
	}
	start = time.Now()
	r.write(int64(idxAt[2])*r.bs, index(2, 4))
	drop = time.Since(start)
	spans = len(r.e.dropped)
	// The spans set aside lie outside the view: a claim settles nothing.
	start = time.Now()
	r.e.claimDropped(f, f.view)
	claim = time.Since(start)
	start = time.Now()
	r.write(int64(idxAt[2])*r.bs, index(2, 0))
	back = time.Since(start)
	return spans, drop, back, base, claim
}

// ---------------------------------------------------------------------
// Rule 2: agreeing overlaps are unknown.

// TestRedTeam4IndexLeafStartMismatch: the kernel checks a non-root
// extent node against its parent: the node's first entry must start at
// the parent index's ei_block (ext4_valid_extent_entries: "lblk !=
// le32_to_cpu(ext->ee_block)" → EFSCORRUPTED). The engine only checks
// that the node's entries lie in [ei_block, next ei_block). A host
// rewrites a committed file's tree so that the second leaf's index says
// 5 while its first extent starts at 6 (frag.log has holes at odd
// blocks): the engine sees the same block map and raises nothing, ever;
// the kernel refuses the leaf, and every read of the committed file past
// block 5 fails (hidden committed data, no indicator).
func TestRedTeam4IndexLeafStartMismatch(t *testing.T) {
	const p = "var/log/frag.log"
	for _, img := range []string{"b4k-nojournal.img", "b4k-journal.img"} {
		t.Run(img, func(t *testing.T) {
			path := loadImage(t, img)
			r := openRig(t, path, nil, p)
			f := r.e.byIno[uint64(r.ids[p])]
			size := f.view.size
			r.e.SetCommitted(r.ids[p], size)
			var a, b [][3]uint64
			for _, m := range f.view.maps {
				if m.Len != 1 {
					t.Skipf("frag.log's map %v", f.view.maps)
				}
				x := [3]uint64{m.Logical, 1, m.Physical}
				if m.Logical < 5 {
					a = append(a, x)
				} else {
					b = append(b, x)
				}
			}
			if len(a) == 0 || len(b) == 0 || b[0][0] != 6 {
				t.Skipf("frag.log's map %v", f.view.maps)
			}
			free := r.rt4Free(2)
			var vs []revfs.Violation
			vs = append(vs, r.write(int64(free[0])*r.bs, r.rt4TreeBlock(p, 0, a))...)
			vs = append(vs, r.write(int64(free[1])*r.bs, r.rt4TreeBlock(p, 0, b))...)
			vs = append(vs, r.rt4WriteRoot(p, 1, [][3]uint64{{0, 0, free[0]}, {5, 0, free[1]}}, uint32(size))...)
			st := r.state(p)
			t.Logf("violations %v; state %+v", vs, st)
			kmsg := "the kernel was not asked (not root)"
			if data, ok, err := rt4KernelRead(t, r.img.b, p); ok {
				kmsg = "the kernel reads " + itoa(len(data)) + " bytes"
				if err != nil {
					kmsg += ": " + err.Error()
				}
				if err == nil && int64(len(data)) == size {
					if len(vs) == 0 {
						t.Logf("the kernel reads the file: %s", kmsg)
					}
					return
				}
			}
			if len(vs) == 0 && !st.UnknownMap {
				t.Fatalf("HOLE: a committed file's second leaf indexed at 5 but starting at 6 raises nothing and leaves no unknown range; "+
					"the kernel refuses the leaf (%s): committed bytes past %d are hidden, no indicator ever", kmsg, 5*r.bs)
			}
		})
	}
}

// TestRedTeam4OverlapKernelRefuses: what rule 2 tolerates, the running
// kernel refuses: an inode whose root holds two agreeing copies of an
// extent cannot be read at all (ext4_valid_extent_entries). Over a
// committed range that is hidden data, so the device only waits for the
// whole copy and must raise StallUnknownTree at the deadline. Caught (the
// engine reports the range; the deadline is the device core's, see
// worm's TestRedTeam4UnknownTreeToggle...).
func TestRedTeam4OverlapKernelRefuses(t *testing.T) {
	const p = "var/log/big.log"
	r, xs := tornRig(t, "b4k-nojournal.img")
	r.e.SetCommitted(r.ids[p], 70000)
	shapes := map[string][][3]uint64{
		"duplicate first": {xs[0], xs[0], xs[1]},
		"duplicate last":  {xs[0], xs[1], xs[1]},
		// ext4_valid_extent_entries of older kernels skipped the overlap
		// test while prev == 0: [0,1) then [0,n) passed.
		"prev 0": {{0, 1, xs[0][2]}, xs[0], xs[1]},
	}
	for name, root := range shapes {
		t.Run(name, func(t *testing.T) {
			if vs := r.writeExtents(root, 70000); len(vs) != 0 {
				t.Logf("raised %s", kinds(vs))
			} else {
				ss := r.e.Stalls(r.ids[p], 4)
				if len(ss) == 0 || ss[0].Kind != revfs.StallUnknownTree {
					t.Fatalf("committed range under agreeing overlaps: no violation and no unknown range (%v)", ss)
				}
				t.Logf("unknown range at %d", ss[0].Off)
			}
			if data, ok, err := rt4KernelRead(t, r.img.b, p); ok {
				t.Logf("kernel: %d bytes, %v", len(data), err)
				if err == nil && !bytes.Equal(data, r.readAll(p, 70000)) {
					t.Fatalf("the kernel reads other bytes than the sealed ones under %s", name)
				}
			}
			if vs := r.writeExtents(xs, 70000); len(vs) != 0 {
				t.Fatalf("the whole copy: %v", vs)
			}
		})
	}
}

// TestRedTeam4CommittedUnderTornRange: while the committed range lies
// under agreeing overlaps (unknown), a host write changing committed bytes
// is still judged at once (sealedUncovered keeps them watched), and the
// whole copy that remaps the committed range is a mapping change.
// Caught (regression).
func TestRedTeam4CommittedUnderTornRange(t *testing.T) {
	const p = "var/log/big.log"
	r, xs := tornRig(t, "b4k-nojournal.img")
	r.e.SetCommitted(r.ids[p], 70000)
	if vs := r.writeExtents([][3]uint64{xs[0], xs[0], xs[1]}, 70000); len(vs) != 0 {
		t.Fatalf("%v", vs)
	}
	pb := xs[0][2] + 2
	if vs := r.write(int64(pb)*r.bs, bytes.Repeat([]byte("X"), int(r.bs))); !hasKind(vs, revfs.KindDataChanged) {
		t.Fatalf("a committed block under an unknown range rewritten: %q", kinds(vs))
	}
	// Agreeing among themselves, but not with the sealed map: deferred
	// while unknown, a violation when the whole copy comes.
	other := r.rt4Free(6)[0]
	if vs := r.writeExtents([][3]uint64{{0, 6, other}, {0, 6, other}, xs[1]}, 70000); len(vs) != 0 {
		t.Logf("raised at once: %s", kinds(vs))
		return
	}
	if vs := r.writeExtents([][3]uint64{{0, 6, other}, xs[1]}, 70000); !hasKind(vs, revfs.KindMappingChanged) {
		t.Fatalf("the committed range remapped: %q", kinds(vs))
	}
}

// TestRedTeam4OverlapInLeafBlock: rule 2 in a leaf block (depth 1) the
// host writes after the index that points to it (a version the engine
// trusts): an overlap that disagrees is a violation; one that agrees is
// unknown. Caught (regression). (A leaf written before its index is read
// as bytes found in the image, never parsed leniently: any overlap there
// is an unknown range, as for any unreadable subtree.)
func TestRedTeam4OverlapInLeafBlock(t *testing.T) {
	const p = "var/log/big.log"
	for _, agree := range []bool{false, true} {
		r, _ := tornRig(t, "b4k-nojournal.img")
		xs := r.rt4Split(t)
		third := [3]uint64{6, 12, xs[1][2] + 1}
		if agree {
			third = xs[1]
		}
		leafAt := r.rt4Free(1)[0]
		if vs := r.rt4WriteRoot(p, 1, [][3]uint64{{0, 0, leafAt}}, 70000); len(vs) != 0 {
			t.Fatalf("index to a leaf not written yet: %v", vs)
		}
		vs := r.write(int64(leafAt)*r.bs, r.rt4TreeBlock(p, 0, [][3]uint64{xs[0], xs[1], third}))
		st := r.state(p)
		switch {
		case !agree && !hasKind(vs, revfs.KindUnparseable):
			t.Fatalf("a leaf with overlapping extents that disagree raised %q", kinds(vs))
		case agree && (len(vs) != 0 || !st.UnknownMap || st.Coherent > 6*4096):
			t.Fatalf("a leaf with an agreeing duplicate: %v, %+v", vs, st)
		}
	}
}

// TestRedTeam4UnknownTreeToggleEngineSide: the engine side of worm's
// TestRedTeam4UnknownTreeToggleNeverRaised. A committed file's inode
// alternates between two forged roots (first extent duplicated, last
// extent duplicated), never the whole copy: no write raises anything, and
// the unknown range the device watches starts at 0, then at 24576, then
// at 0... (the device matches an unknown range by its start, so each
// switch restarts the window). The kernel refuses both inodes
// (TestRedTeam4OverlapKernelRefuses). Passes: it documents the facts the
// worm-side hole builds on.
func TestRedTeam4UnknownTreeToggleEngineSide(t *testing.T) {
	const p = "var/log/big.log"
	r, _ := tornRig(t, "b4k-nojournal.img")
	xs := r.rt4Split(t)
	r.e.SetCommitted(r.ids[p], 70000)
	roots := [][][3]uint64{{xs[0], xs[0], xs[1]}, {xs[0], xs[1], xs[1]}}
	want := []int64{0, 6 * 4096}
	for i := 0; i < 6; i++ {
		if vs := r.writeExtents(roots[i%2], 70000); len(vs) != 0 {
			t.Fatalf("switch %d raised %v", i, vs)
		}
		ss := r.e.Stalls(r.ids[p], 4)
		if len(ss) != 1 || ss[0].Kind != revfs.StallUnknownTree || ss[0].Off != want[i%2] {
			t.Fatalf("switch %d: stalls %v, want one unknown range at %d", i, ss, want[i%2])
		}
	}
}
