package ext4

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/revfs"
)

// The journal cache keeps at most maxJournalCache bytes, a block's newest
// version, and lets a block go when the block a cache's worth further round
// the log takes its slot; a dropped block reads as not cached.
func TestJournalCacheSlots(t *testing.T) {
	const bs = 4096
	j := &journal{e: &Engine{bs: bs}}
	slots := uint32(maxJournalCache / bs)
	block := func(n uint32) []byte {
		b := make([]byte, bs)
		binary.BigEndian.PutUint32(b, n)
		return b
	}
	holds := func(jb, want uint32) bool {
		c, ok := j.cached(jb)
		return ok && c.jb == jb && binary.BigEndian.Uint32(c.b) == want
	}
	if _, ok := j.cached(1); ok {
		t.Fatal("an empty cache holds block 1")
	}
	for jb := uint32(1); jb <= slots; jb++ {
		j.cachePut(jb, block(jb))
	}
	if len(j.cache) != int(slots) {
		t.Fatalf("%d slots, want %d", len(j.cache), slots)
	}
	j.cachePut(1, block(1001)) // a rewrite replaces the bytes
	if !holds(1, 1001) {
		t.Fatal("block 1 does not hold its newest version")
	}
	j.cacheDrop(2)
	j.cacheDrop(slots + 3) // not cached: leaves block 3 alone
	if _, ok := j.cached(2); ok || !holds(3, 3) {
		t.Fatal("drop removed the wrong block")
	}
	// One lap further round the log takes the slots over.
	for jb := slots + 1; jb <= slots+4; jb++ {
		j.cachePut(jb, block(jb))
	}
	for _, jb := range []uint32{1, 3, 4} {
		if _, ok := j.cached(jb); ok {
			t.Fatalf("block %d kept its slot after block %d took it", jb, jb+slots)
		}
	}
	for _, jb := range []uint32{5, slots, slots + 1, slots + 4} {
		if !holds(jb, jb) {
			t.Fatalf("block %d missing or wrong", jb)
		}
	}
	j.cacheReset()
	for jb := uint32(0); jb <= 2*slots; jb++ {
		if _, ok := j.cached(jb); ok {
			t.Fatalf("reset left block %d", jb)
		}
	}
}

// CheckWrite's evaluation of a commit block is reused by the Wrote of the
// same request, and only then: the state it leaves is the one a fresh
// evaluation gives, a Wrote of other bytes evaluates afresh, and a commit
// raising a violation leaves nothing to reuse.
func TestCommitMemo(t *testing.T) {
	const p = "var/log/app.log"
	path := loadImage(t, "b4k-journal.img")
	// A later lap of the log (blocks written before) and the first one.
	open := func() *rig {
		r := openRig(t, path, map[string]int64{p: 5000}, p)
		for _, m := range r.e.jnl.maps {
			r.written.Add(m.Physical, m.Len)
		}
		return r
	}

	t.Run("same request", func(t *testing.T) {
		r, first, fresh := open(), openRig(t, path, map[string]int64{p: 5000}, p), open()
		wr, w1, wf := newTxWriter(r), newTxWriter(first), newTxWriter(fresh)
		for _, n := range []uint32{6000, 7000, 9000} {
			home, blk := r.inodeBlockWith(p, setSizeTo(n))
			for _, x := range []struct {
				r *rig
				w *txWriter
			}{{r, wr}, {first, w1}} {
				off, commit := x.w.stage([]uint64{home}, [][]byte{blk})
				if vs := x.r.e.CheckWrite(off, commit); len(vs) != 0 {
					t.Fatalf("size %d: %v", n, vs)
				}
				if x.r.e.memo == nil {
					t.Fatalf("size %d: no memo after CheckWrite of a commit block", n)
				}
				copy(x.r.img.b[off:], commit)
				x.r.e.Wrote(off, bytes.Clone(commit)) // another buffer, same bytes
				if x.r.e.memo != nil {
					t.Fatal("memo kept after Wrote")
				}
			}
			// The same commit evaluated afresh by Wrote.
			off, commit := wf.stage([]uint64{home}, [][]byte{blk})
			if vs := fresh.e.CheckWrite(off, commit); len(vs) != 0 {
				t.Fatalf("fresh rig, size %d: %v", n, vs)
			}
			fresh.e.memo = nil
			copy(fresh.img.b[off:], commit)
			fresh.e.Wrote(off, commit)
			got, want := r.state(p), fresh.state(p)
			if st := first.state(p); st.Size != want.Size || st.Coherent != want.Coherent || st.Journalled != want.Journalled {
				t.Fatalf("size %d: first lap %+v, fresh %+v", n, st, want)
			}
			got.LastTouch, want.LastTouch = time.Time{}, time.Time{}
			if got != want || got.Size != int64(n) {
				t.Fatalf("size %d: with memo %+v, fresh %+v", n, got, want)
			}
		}
	})

	t.Run("other bytes written", func(t *testing.T) {
		r := open()
		home, blk := r.inodeBlockWith(p, setSizeTo(6000))
		off, commit := newTxWriter(r).stage([]uint64{home}, [][]byte{blk})
		if vs := r.e.CheckWrite(off, commit); len(vs) != 0 || r.e.memo == nil {
			t.Fatalf("CheckWrite: %v, memo %v", vs, r.e.memo != nil)
		}
		// What lands is not a commit block: nothing commits.
		junk := make([]byte, r.bs)
		copy(r.img.b[off:], junk)
		r.e.Wrote(off, junk)
		if st := r.state(p); st.Size != 5000 {
			t.Fatalf("a commit block that never landed was applied: %+v", st)
		}
	})

	t.Run("model changed in between", func(t *testing.T) {
		r := open()
		home, blk := r.inodeBlockWith(p, setSizeTo(6000))
		off, commit := newTxWriter(r).stage([]uint64{home}, [][]byte{blk})
		r.e.CheckWrite(off, commit)
		r.e.Flushed()
		if r.e.takeMemo(&hostWrite{off: off, p: commit}) != nil {
			t.Fatal("memo survived a flush")
		}
	})

	t.Run("violation", func(t *testing.T) {
		r := open()
		home, blk := r.inodeBlockWith(p, setSizeTo(100))
		off, commit := newTxWriter(r).stage([]uint64{home}, [][]byte{blk})
		vs := r.e.CheckWrite(off, commit)
		if len(vs) != 1 || vs[0].Kind != revfs.KindSizeDecreased {
			t.Fatalf("truncate: %v", vs)
		}
		if r.e.memo != nil {
			t.Fatal("memo kept for a write raising a violation")
		}
	})
}

// A change carrying an inode-table block re-derives only the tracked
// inodes whose record it changes; a neighbour's record that stays as it
// was keeps its view, and a neighbour's record that changes is judged.
func TestUnchangedInodeKeepsView(t *testing.T) {
	const app, big = "var/log/app.log", "var/log/big.log"
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{app: 5000, big: 70000}, app, big)
	fa, fb := r.e.byIno[uint64(r.ids[app])], r.e.byIno[uint64(r.ids[big])]
	if fa.inoBlock != fb.inoBlock {
		t.Skip("the two files' inodes are in different blocks")
	}
	w := newTxWriter(r)
	home, blk := r.inodeBlockWith(app, setSizeTo(6000))
	before := fb.view
	if vs, _ := w.commit([]uint64{home}, [][]byte{blk}); len(vs) != 0 {
		t.Fatalf("growth of %s: %v", app, vs)
	}
	if fb.view != before {
		t.Fatalf("%s's view was re-derived though its record did not change", big)
	}
	if st := r.state(app); st.Size != 6000 {
		t.Fatalf("%s: %+v", app, st)
	}
	if !bytes.Equal(r.e.meta[home], blk) {
		t.Fatal("the model does not hold the new inode-table block")
	}
	_, blk2 := r.inodeBlockWith(big, setSizeTo(100))
	copy(blk2[fa.inoOff:fa.inoOff+r.e.sb.InodeSizeBytes()], blk[fa.inoOff:]) // app keeps 6000
	vs, _ := w.commit([]uint64{home}, [][]byte{blk2})
	if len(vs) != 1 || vs[0].Kind != revfs.KindSizeDecreased || vs[0].File != r.ids[big] {
		t.Fatalf("truncate of %s next to an unchanged record: %v", big, vs)
	}
}

// The journal cache's copies of a write's blocks are copies, each on its
// own: changing the request's buffer or appending to one never shows in
// another, across groups and for blocks the write covers in part.
func TestGroupCopierCopiesApart(t *testing.T) {
	const bs = 4096
	e := &Engine{bs: bs}
	n := cacheGroupBlocks + 3
	p := make([]byte, n*bs+100) // ends 100 bytes into block n+10
	for i := range n + 1 {
		p[i*bs] = byte(i + 1)
	}
	w := &hostWrite{e: e, off: 10 * bs, end: 10*bs + int64(len(p)), p: p, first: 10, last: uint64(10 + n)}
	e.meta = map[uint64][]byte{uint64(10 + n): make([]byte, bs)} // what the partial block merges with
	c := groupCopier{w: w}
	var got [][]byte
	for pb := uint64(10); pb <= w.last; pb++ {
		got = append(got, c.block(pb))
	}
	clear(p)
	_ = append(got[0], 7, 7, 7) // must not write into got[1]
	for i, b := range got {
		if len(b) != bs || cap(b) != bs || b[0] != byte(i+1) || b[1] != 0 {
			t.Fatalf("block %d: len %d cap %d, starts % x", i, len(b), cap(b), b[:2])
		}
	}
}
