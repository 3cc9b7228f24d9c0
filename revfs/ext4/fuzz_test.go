package ext4

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
)

// fuzzBase is an image and the blocks worth aiming at: every kind of
// watched metadata, the journal superblock and a journal block where a
// commit could land.
type fuzzBase struct {
	img     []byte
	files   []revfs.ProtectedFile
	targets []int64 // byte offsets of target blocks
	bs      int64
}

func newFuzzBase(f *testing.F, name string) *fuzzBase {
	path := loadImage(f, name)
	r := openRig(f, path, map[string]int64{"var/log/app.log": 5000, "var/log/frag.log": 30000}, "var/log/app.log", "var/log/frag.log", "var/log/empty.log")
	fb := &fuzzBase{bs: r.bs}
	fb.img, _ = os.ReadFile(path)
	for p, id := range r.ids {
		fb.files = append(fb.files, revfs.ProtectedFile{ID: id, Path: p})
	}
	for b := range r.e.roles {
		fb.targets = append(fb.targets, int64(b)*r.bs)
	}
	for _, d := range r.e.data {
		fb.targets = append(fb.targets, int64(d.phys)*r.bs)
	}
	if j := r.e.jnl; j != nil {
		for _, jb := range []uint32{0, 1, 2, 3} {
			pb, _ := j.physOf(jb)
			fb.targets = append(fb.targets, int64(pb)*r.bs)
		}
	}
	// Stable order for reproducible inputs.
	for i := range fb.targets {
		for k := i + 1; k < len(fb.targets); k++ {
			if fb.targets[k] < fb.targets[i] {
				fb.targets[i], fb.targets[k] = fb.targets[k], fb.targets[i]
			}
		}
	}
	return fb
}

// jbdBlock builds a jbd2 block header for seeds.
func jbdBlock(bs int64, typ, seq uint32) []byte {
	b := make([]byte, bs)
	binary.BigEndian.PutUint32(b[0:], 0xC03B3998)
	binary.BigEndian.PutUint32(b[4:], typ)
	binary.BigEndian.PutUint32(b[8:], seq)
	return b
}

// FuzzEngineWrites writes fuzzed bytes over watched blocks (two writes per
// input) and then exercises every query: the engine must never panic,
// whatever the metadata says.
func FuzzEngineWrites(f *testing.F) {
	bases := []*fuzzBase{newFuzzBase(f, "b1k-journal.img"), newFuzzBase(f, "b4k-nojournal.img")}
	for i, fb := range bases {
		for t := range fb.targets {
			blk := fb.img[fb.targets[t] : fb.targets[t]+fb.bs]
			mut := bytes.Clone(blk)
			mut[len(mut)/3] ^= 0xFF
			f.Add(uint8(i), uint16(t), uint16(0), mut[:min(len(mut), 512)], uint16(t), uint16(0), []byte{1, 2, 3, 4})
		}
		f.Add(uint8(i), uint16(len(fb.targets)-1), uint16(0), jbdBlock(fb.bs, 2, 1)[:64], uint16(len(fb.targets)-3), uint16(0), jbdBlock(fb.bs, 1, 1)[:64])
	}
	f.Fuzz(func(t *testing.T, which uint8, t1, o1 uint16, p1 []byte, t2, o2 uint16, p2 []byte) {
		fb := bases[int(which)%len(bases)]
		img := &memImage{b: bytes.Clone(fb.img)}
		set := blockSet{}
		e, err := Open(img, int64(len(img.b)), fb.files, set, Options{Committed: map[revfs.FileID]int64{fb.files[0].ID: 100}})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []struct {
			t, o uint16
			p    []byte
		}{{t1, o1, p1}, {t2, o2, p2}} {
			if len(w.p) == 0 {
				continue
			}
			off := fb.targets[int(w.t)%len(fb.targets)] + int64(w.o)%fb.bs
			p := w.p
			if off+int64(len(p)) > int64(len(img.b)) {
				p = p[:int64(len(img.b))-off]
			}
			e.Watches(off, int64(len(p)))
			for _, v := range e.CheckWrite(off, p) {
				if v.Off < off || v.Off+v.Len > off+int64(len(p)) || v.Len <= 0 {
					t.Fatalf("violation %v outside the write [%d,+%d)", v, off, len(p))
				}
			}
			copy(img.b[off:], p)
			e.Wrote(off, p)
		}
		e.Flushed()
		e.CheckDiscard(0, int64(len(img.b)))
		for _, st := range e.Files() {
			if st.Coherent > st.Size && st.Size >= 100 {
				t.Fatalf("coherent %d beyond size %d", st.Coherent, st.Size)
			}
			if st.Coherent > 0 {
				buf := make([]byte, min(st.Coherent, 1<<16))
				_ = e.ReadFile(st.ID, buf, 0)
			}
			// Stalled ranges lie within the size, and taking them as
			// found keeps the prefix within it too.
			for _, s := range e.Stalls(st.ID, 4) {
				if s.Off < st.Coherent/fb.bs*fb.bs || s.Len <= 0 || s.Off+s.Len > st.Size {
					t.Fatalf("stall %+v outside [coherent %d, size %d)", s, st.Coherent, st.Size)
				}
				e.AcceptAsFound(st.ID, s)
			}
		}
		for _, st := range e.Files() {
			if st.Coherent > st.Size && st.Size >= 100 {
				t.Fatalf("after taking stalls as found: coherent %d beyond size %d", st.Coherent, st.Size)
			}
			if st.Coherent > 0 {
				_ = e.ReadFile(st.ID, make([]byte, min(st.Coherent, 1<<16)), 0)
			}
		}
		e.Discarded(fb.targets[int(t1)%len(fb.targets)], fb.bs)
	})
}

// FuzzJournalTransaction commits a transaction carrying a fuzzed copy of a
// watched home block (inode table, extent block, directory, bitmap,
// descriptors, superblock, or protected data): the engine must judge it
// without panicking, blame only the commit block, and stay consistent.
func FuzzJournalTransaction(f *testing.F) {
	fb := newFuzzBase(f, "b1k-journal.img")
	for t := range fb.targets {
		blk := fb.img[fb.targets[t] : fb.targets[t]+fb.bs]
		f.Add(uint16(t), bytes.Clone(blk), uint16(0))
		mut := bytes.Clone(blk)
		mut[len(mut)/2] ^= 0x55
		f.Add(uint16(t), mut, uint16(len(mut)/2))
	}
	f.Fuzz(func(t *testing.T, target uint16, content []byte, flip uint16) {
		img := &memImage{b: bytes.Clone(fb.img)}
		e, err := Open(img, int64(len(img.b)), fb.files, blockSet{}, Options{Committed: map[revfs.FileID]int64{fb.files[0].ID: 100}})
		if err != nil {
			t.Fatal(err)
		}
		r := &rig{t: t, img: img, e: e, bs: fb.bs, written: blockSet{}}
		home := uint64(fb.targets[int(target)%len(fb.targets)] / fb.bs)
		if e.jnl == nil {
			t.Skip()
		}
		if _, inJournal := e.jnl.jblockOf(home); inJournal {
			return
		}
		cp := make([]byte, fb.bs)
		copy(cp, content)
		if len(cp) > 0 {
			cp[int(flip)%len(cp)] ^= 1
		}
		vs, commitOff := newTxWriter(r).commit([]uint64{home}, [][]byte{cp})
		for _, v := range vs {
			if v.Off != commitOff || v.Len != fb.bs {
				t.Fatalf("violation %v not on the commit block at %d", v, commitOff)
			}
		}
		e.Flushed()
		for _, st := range e.Files() {
			if st.Coherent > 0 {
				_ = e.ReadFile(st.ID, make([]byte, min(st.Coherent, 4096)), 0)
			}
		}
	})
}
