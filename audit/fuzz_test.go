package audit

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// fuzzBase is a kernel-made image with a dirty journal and the blocks worth
// mutating in it: superblock, group descriptors, the protected inode's
// table block, the root and var/log directories, the log's data, and the
// journal's superblock and transactions.
var fuzzBase struct {
	once  sync.Once
	img   []byte
	ino   uint64
	spots []int64 // byte offsets of interesting blocks
	bs    int64
}

func loadFuzzBase(f *testing.F) {
	fuzzBase.once.Do(func() {
		img := loadImage(f, "ordered-dirty")
		home, err := layout.OpenImage(bytes.NewReader(img))
		if err != nil {
			f.Fatal(err)
		}
		bs := int64(home.BlockSize())
		ino, err := home.Lookup("var/log/app.log")
		if err != nil {
			f.Fatal(err)
		}
		spots := []int64{0, 1024, 2 * bs}
		if blk, _, err := home.InodeAddr(ino); err == nil {
			spots = append(spots, int64(blk)*bs)
		}
		for _, i := range []uint64{layout.RootIno, uint64(home.SB.JournalInum)} {
			in, _, err := home.ReadInode(i)
			if err != nil {
				continue
			}
			maps, tree, err := home.FileMap(in)
			if err != nil {
				continue
			}
			for _, b := range tree {
				spots = append(spots, int64(b)*bs)
			}
			// The journal's used head: its superblock and first
			// transactions.
			for _, m := range maps {
				for k := uint64(0); k < min(m.Len, 64); k++ {
					spots = append(spots, int64(m.Physical+k)*bs)
				}
			}
		}
		fuzzBase.img, fuzzBase.ino, fuzzBase.spots, fuzzBase.bs = img, ino, spots, bs
	})
}

// FuzzReadImageFile mutates a real dirty-journal image at fuzz-chosen
// offsets, mostly inside its metadata and journal, and reads the protected
// file: the reader must never panic, never hang and never return more
// bytes than the image holds.
//
// Each 4-byte record of the input patches one byte: which interesting block
// (or, for high selectors, anywhere), the offset inside it, the new value.
func FuzzReadImageFile(f *testing.F) {
	loadFuzzBase(f)
	f.Add([]byte{})
	f.Add([]byte{0, 0x04, 0x00, 0xff})                      // superblock s_inodes_count
	f.Add([]byte{1, 0x00, 0x38, 0x00})                      // magic
	f.Add([]byte{3, 0x00, 0x28, 0x07})                      // inode i_block region
	f.Add([]byte{5, 0x00, 0x00, 0x00, 6, 0x00, 0x0c, 0x02}) // journal blocks
	f.Add([]byte{200, 0x12, 0x34, 0x56})
	f.Fuzz(func(t *testing.T, patch []byte) {
		img := append([]byte(nil), fuzzBase.img...)
		for len(patch) >= 4 {
			sel, off, val := int(patch[0]), int64(binary.BigEndian.Uint16(patch[1:3])), patch[3]
			patch = patch[4:]
			var at int64
			if sel < len(fuzzBase.spots) {
				at = fuzzBase.spots[sel] + off%fuzzBase.bs
			} else {
				at = (int64(sel)<<16 | off) * 37 % int64(len(img))
			}
			if at < int64(len(img)) {
				img[at] = val
			}
		}
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("reading took %v", d)
			}
		}()
		im, err := OpenImage(bytes.NewReader(img), int64(len(img)))
		if err != nil {
			return
		}
		fl, err := im.OpenFile(fuzzBase.ino)
		if err != nil {
			return
		}
		if fl.Size > int64(len(img)) {
			t.Fatalf("size %d from a %d-byte image", fl.Size, len(img))
		}
		data, err := readAllOf(fl)
		if err == nil && int64(len(data)) != fl.Size {
			t.Fatalf("read %d bytes of a %d-byte file", len(data), fl.Size)
		}
		im.Lookup("var/log/app.log")
	})
}
