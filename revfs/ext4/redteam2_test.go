package ext4

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// Second red-team round, crafted blocks fed straight to the engine.

// rt2Extents rewrites the extents in the root node of an inode record
// (i_block at 0x28): xs as {logical, len (ee_len, unwritten if > 32768),
// physical}.
func rt2Extents(raw []byte, xs [][3]uint64) {
	le := binary.LittleEndian
	ib := raw[0x28 : 0x28+60]
	le.PutUint16(ib[0:], layout.ExtentMagic)
	le.PutUint16(ib[2:], uint16(len(xs)))
	le.PutUint16(ib[4:], 4)
	le.PutUint16(ib[6:], 0)
	clear(ib[12:])
	for i, x := range xs {
		e := ib[12+12*i:]
		le.PutUint32(e[0:], uint32(x[0]))
		le.PutUint16(e[4:], uint16(x[1]))
		le.PutUint16(e[6:], uint16(x[2]>>32))
		le.PutUint32(e[8:], uint32(x[2]))
	}
}

func rt2RootExtents(t *testing.T, r *rig, p string) []layout.Extent {
	f := r.e.byIno[uint64(r.ids[p])]
	raw := r.img.b[int64(f.inoBlock)*r.bs+int64(f.inoOff):]
	n, err := layout.ParseExtentNode(raw[0x28 : 0x28+60])
	if err != nil || n.Header.Depth != 0 {
		t.Fatalf("root node: %v (depth %v)", err, n)
	}
	return n.Extents
}

// TestRedTeam2ExtentIntoMetadata: the host grows a protected file by one
// block whose extent points at filesystem metadata (the inode-table block
// holding the file's own inode). The kernel refuses such an extent
// (ext4_valid_extent → ext4_inode_block_valid: the block is in the system
// zone), so the host can never read those bytes as the file's content; nor
// did it write them as file data. Sealing them would put bytes in the real
// log that the host never appended (I1). Secure: the coherent prefix stops
// before that block, or the change is a violation.
func TestRedTeam2ExtentIntoMetadata(t *testing.T) {
	const p = "var/log/app.log"
	for _, img := range []string{"b4k-nojournal.img", "b1k-nojournal.img"} {
		t.Run(img, func(t *testing.T) {
			r := openRig(t, loadImage(t, img), map[string]int64{p: 5000}, p)
			f := r.e.byIno[uint64(r.ids[p])]
			xs := rt2RootExtents(t, r, p)
			var maps [][3]uint64
			next := uint64(0)
			for _, x := range xs {
				maps = append(maps, [3]uint64{uint64(x.Block), uint64(x.Len), x.Start()})
				next = uint64(x.Block) + uint64(x.Length())
			}
			// Every data block of the file written by the host (the rig's
			// written set starts empty).
			for lb := uint64(0); lb < next; lb++ {
				r.writeBlocks(p, lb)
			}
			maps = append(maps, [3]uint64{next, 1, f.inoBlock})
			size := uint32((next + 1) * uint64(r.bs))
			home, blk := r.inodeBlockWith(p, func(raw []byte) {
				rt2Extents(raw, maps)
				binary.LittleEndian.PutUint32(raw[4:], size)
			})
			vs := r.write(int64(home)*r.bs, blk)
			st := r.state(p)
			t.Logf("violations %v; size %d coherent %d", vs, st.Size, st.Coherent)
			if len(vs) == 0 && st.Coherent > int64(next)*r.bs {
				t.Fatalf("the engine would seal [%d,%d): the bytes of inode-table block %d, which the kernel refuses to read as file data",
					int64(next)*r.bs, st.Coherent, f.inoBlock)
			}
		})
	}
}

// TestRedTeam2ExtentUnwrittenFlip: the committed extent is marked
// unwritten (the host then reads zeroes). Secure: mapping-changed.
func TestRedTeam2ExtentUnwrittenFlip(t *testing.T) {
	const p = "var/log/app.log"
	for _, img := range []string{"b4k-nojournal.img", "b4k-journal.img"} {
		t.Run(img, func(t *testing.T) {
			r := openRig(t, loadImage(t, img), map[string]int64{p: 5000}, p)
			xs := rt2RootExtents(t, r, p)
			var maps [][3]uint64
			for _, x := range xs {
				maps = append(maps, [3]uint64{uint64(x.Block), uint64(x.Len) + layout.ExtentInitMaxLen, x.Start()})
			}
			home, blk := r.inodeBlockWith(p, func(raw []byte) { rt2Extents(raw, maps) })
			vs := r.write(int64(home)*r.bs, blk)
			if !hasKind(vs, revfs.KindMappingChanged) {
				t.Fatalf("unwritten flip of the committed extent raised %q", kinds(vs))
			}
		})
	}
}

// TestRedTeam2OverlappingFirstExtent: ext4_valid_extent_entries lets an
// extent start at logical 0 again when the first one is [0,1) (its overlap
// test is skipped while prev == 0), and ext4_ext_binsearch then maps
// logical 0 through the second extent: the host reads another block for
// committed block 0. Secure: a violation (the engine must not keep the
// first extent's mapping as the truth).
func TestRedTeam2OverlappingFirstExtent(t *testing.T) {
	const p = "var/log/app.log"
	for _, img := range []string{"b4k-nojournal.img", "b4k-journal.img", "b1k-nojournal.img"} {
		t.Run(img, func(t *testing.T) {
			r := openRig(t, loadImage(t, img), map[string]int64{p: 5000}, p)
			xs := rt2RootExtents(t, r, p)
			x := xs[0]
			if x.Block != 0 || len(xs) > 2 {
				t.Skipf("extents %v", xs)
			}
			forged := r.e.blocks - 10 // any data block the host filled with forged bytes
			maps := [][3]uint64{{0, 1, x.Start()}, {0, 1, forged}}
			if x.Length() > 1 {
				maps = append(maps, [3]uint64{1, uint64(x.Length() - 1), x.Start() + 1})
			}
			for _, y := range xs[1:] {
				maps = append(maps, [3]uint64{uint64(y.Block), uint64(y.Len), y.Start()})
			}
			if len(maps) > 4 {
				t.Skipf("no room: %v", maps)
			}
			home, blk := r.inodeBlockWith(p, func(raw []byte) { rt2Extents(raw, maps) })
			vs := r.write(int64(home)*r.bs, blk)
			if len(vs) == 0 {
				t.Fatalf("extents %v (the kernel maps logical 0 to %d) raised nothing", maps, forged)
			}
			t.Logf("raised %s: %v", kinds(vs), vs[0].Detail)
		})
	}
}

var _ = bytes.Equal
