package ext4

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
)

// A transaction whose commit block the host writes before its descriptor
// and copies is judged at the write that completes it (checkPending): the
// commit block alone proves nothing, and a flush cannot raise.
func TestCommitBlockFirst(t *testing.T) {
	const p = "var/log/app.log"
	journals := []struct {
		name     string
		incompat jbd2.FeatureIncompat
		compat   jbd2.FeatureCompat
	}{
		{"no checksums", jbd2.FeatureIncompatRevoke, 0},
		{"csum v3", jbd2.FeatureIncompatRevoke | jbd2.FeatureIncompat64Bit | jbd2.FeatureIncompatCsumV3, 0},
		{"csum v2", jbd2.FeatureIncompatRevoke | jbd2.FeatureIncompatCsumV2, 0},
		{"checksum v1, no CRC in the commit", jbd2.FeatureIncompatRevoke, jbd2.FeatureCompatChecksum},
	}
	// forge writes the commit block of a one-copy transaction carrying
	// the inode-table block of p with its size set to size, then returns
	// the transaction's descriptor and copy and where they go.
	type forged struct {
		w              *csumTx
		home           uint64
		desc, cp       []byte
		descOff, cpOff int64
	}
	forge := func(t *testing.T, r *rig, size uint32) forged {
		t.Helper()
		home, blk := r.inodeBlockWith(p, setSizeTo(size))
		w := newCsumTx(r)
		desc, stored := w.blocks([]uint64{home}, [][]byte{blk})
		if vs := r.write(w.blockAt(w.pos+2), w.commitBlock()); len(vs) != 0 {
			t.Fatalf("commit block first: %v", vs)
		}
		if !r.e.jnl.pending {
			t.Fatal("the early commit block is not pending")
		}
		return forged{w: w, home: home, desc: desc, cp: stored[0], descOff: w.blockAt(w.pos), cpOff: w.blockAt(w.pos + 1)}
	}
	record := func(r *rig) (int64, int64) {
		f := r.e.byIno[uint64(r.ids[p])]
		return int64(f.inoOff), int64(r.e.sb.InodeSizeBytes())
	}

	for _, jc := range journals {
		t.Run("size cut blamed on the copy/"+jc.name, func(t *testing.T) {
			r := openRig(t, mountedJournal(t, "b4k-journal.img", jc.incompat, jc.compat), map[string]int64{p: 5000}, p)
			f := forge(t, r, 100)
			if vs := r.write(f.descOff, f.desc); len(vs) != 0 {
				t.Fatalf("descriptor before its copy: %v", vs)
			}
			// readonly: the copy is refused and never lands.
			vs := r.e.CheckWrite(f.cpOff, f.cp)
			in, n := record(r)
			if len(vs) != 1 || vs[0].Kind != revfs.KindSizeDecreased || vs[0].Off != f.cpOff+in || vs[0].Len != n {
				t.Fatalf("copy completing the transaction: %v, want size-decreased on its inode record [%d,+%d)", vs, f.cpOff+in, n)
			}
			if r.e.jnl.sb.HasCsumV2V3() {
				// A replay finds the transaction, but the stale block at
				// the copy's position fails its tag checksum: skipped.
				read := func(jb uint32) ([]byte, error) {
					pb, _ := r.e.jnl.physOf(jb)
					return r.img.b[int64(pb)*r.bs : int64(pb+1)*r.bs], nil
				}
				txs, _, _, _ := jbd2.Scan(r.e.jnl.sb, f.w.pos, f.w.seq, read, 16)
				if len(txs) != 1 || len(txs[0].Blocks) != 0 || len(txs[0].Skipped) != 1 {
					t.Fatalf("replay of the refused transaction: %+v", txs)
				}
			}
			r.e.Flushed()
			if st := r.state(p); st.Size != 5000 {
				t.Fatalf("the model took size %d", st.Size)
			}
		})

		t.Run("discard repairs the copy/"+jc.name, func(t *testing.T) {
			r := openRig(t, mountedJournal(t, "b4k-journal.img", jc.incompat, jc.compat), map[string]int64{p: 5000}, p)
			f := forge(t, r, 100)
			orig := bytes.Clone(r.img.b[int64(f.home)*r.bs : int64(f.home+1)*r.bs])
			if vs := r.discardWrite(f.descOff, f.desc); len(vs) != 0 {
				t.Fatalf("descriptor before its copy: %v", vs)
			}
			vs, rest := r.discardWriteRest(f.cpOff, f.cp)
			if kinds(vs) != "size-decreased" || len(rest) != 0 {
				t.Fatalf("copy: %v, left to the device %v", vs, rest)
			}
			c, _, txs := r.replayed(f.home)
			if len(txs) != 1 || !bytes.Equal(c, orig) {
				t.Fatalf("%d transactions replayed; the copy is the protected block: %v", len(txs), bytes.Equal(c, orig))
			}
			if got := r.auditSees(r.ids[p]); !bytes.Equal(got, seqContent(5000)) {
				t.Fatalf("the replayed image shows %d bytes of the file, want the 5000 committed", len(got))
			}
			// The repaired transaction is harmless: the flush applies it
			// and the engine follows the log on.
			r.e.Flushed()
			if r.e.jnl.pending || r.e.jnl.seq != f.w.seq+1 {
				t.Fatalf("after the flush: pending %v, next tid %d", r.e.jnl.pending, r.e.jnl.seq)
			}
			if st := r.state(p); st.Size != 5000 {
				t.Fatalf("the model took size %d", st.Size)
			}
		})
	}

	t.Run("copy first, then the commit block, then the descriptor", func(t *testing.T) {
		v3 := journals[1]
		r := openRig(t, mountedJournal(t, "b4k-journal.img", v3.incompat, v3.compat), map[string]int64{p: 5000}, p)
		home, blk := r.inodeBlockWith(p, setSizeTo(0))
		orig := bytes.Clone(r.img.b[int64(home)*r.bs : int64(home+1)*r.bs])
		w := newCsumTx(r)
		desc, stored := w.blocks([]uint64{home}, [][]byte{blk})
		if vs := r.discardWrite(w.blockAt(w.pos+1), stored[0]); len(vs) != 0 {
			t.Fatalf("copy before its transaction: %v", vs)
		}
		if vs := r.discardWrite(w.blockAt(w.pos+2), w.commitBlock()); len(vs) != 0 {
			t.Fatalf("commit block before the descriptor: %v", vs)
		}
		// The descriptor completes it: blamed as a whole, the copy
		// (outside the request) rewritten by the repair.
		off := w.blockAt(w.pos)
		vs, rest := r.discardWriteRest(off, desc)
		if kinds(vs) != "size-decreased" || vs[0].Off != off || vs[0].Len != r.bs || len(rest) != 0 {
			t.Fatalf("descriptor: %v, left %v; want size-decreased on the descriptor [%d,+%d)", vs, rest, off, r.bs)
		}
		if c, _, _ := r.replayed(home); !bytes.Equal(c, orig) {
			t.Fatal("the replayed copy is not the protected block")
		}
	})

	t.Run("honeypot: the write lands, the flush does not apply it", func(t *testing.T) {
		v3 := journals[1]
		r := openRig(t, mountedJournal(t, "b4k-journal.img", v3.incompat, v3.compat), map[string]int64{p: 5000}, p)
		f := forge(t, r, 100)
		r.write(f.descOff, f.desc)
		if vs := r.write(f.cpOff, f.cp); kinds(vs) != "size-decreased" {
			t.Fatalf("copy: %v", vs)
		}
		warns := r.log.warns
		r.e.Flushed()
		if st := r.state(p); st.Size != 5000 {
			t.Fatalf("the flush applied size %d", st.Size)
		}
		if r.log.warns == warns || !r.e.jnl.pending {
			t.Fatal("the flush neither logged the held transaction nor kept it pending")
		}
		// The next commit block raises it again, with its own transaction
		// (which logs a block nobody watches: a newer copy of the inode
		// table would make the pair harmless, as a replay of both is).
		f.w.pos, f.w.seq = f.w.pos+3, f.w.seq+1
		cpos := f.w.log([]uint64{r.e.blocks - 1}, [][]byte{make([]byte, r.bs)})
		if vs := r.write(f.w.blockAt(cpos), f.w.commitBlock()); kinds(vs) != "size-decreased" {
			t.Fatalf("next commit block: %v", vs)
		}
	})

	t.Run("harmless transaction applied at the flush", func(t *testing.T) {
		for _, jc := range journals {
			r := openRig(t, mountedJournal(t, "b4k-journal.img", jc.incompat, jc.compat), map[string]int64{p: 5000}, p)
			f := forge(t, r, 7000)
			if vs := r.write(f.descOff, f.desc); len(vs) != 0 {
				t.Fatalf("%s: descriptor: %v", jc.name, vs)
			}
			if vs := r.write(f.cpOff, f.cp); len(vs) != 0 {
				t.Fatalf("%s: copy: %v", jc.name, vs)
			}
			if st := r.state(p); st.Size != 5000 {
				t.Fatalf("%s: size %d before the flush", jc.name, st.Size)
			}
			r.e.Flushed()
			if st := r.state(p); st.Size != 7000 || r.e.jnl.pending {
				t.Fatalf("%s: after the flush: size %d, pending %v", jc.name, st.Size, r.e.jnl.pending)
			}
		}
	})

	t.Run("no expected log position yet (a clean journal)", func(t *testing.T) {
		r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
		if r.e.jnl.expect {
			t.Fatal("a clean journal gives the engine an expected position")
		}
		f := forge(t, r, 100)
		r.write(f.descOff, f.desc)
		in, n := record(r)
		if vs := r.e.CheckWrite(f.cpOff, f.cp); len(vs) != 1 || vs[0].Kind != revfs.KindSizeDecreased || vs[0].Off != f.cpOff+in || vs[0].Len != n {
			t.Fatalf("copy completing the transaction: %v", vs)
		}
	})

	t.Run("two commit blocks first: the harmless one applied, the other refused", func(t *testing.T) {
		v3 := journals[1]
		r := openRig(t, mountedJournal(t, "b4k-journal.img", v3.incompat, v3.compat), map[string]int64{p: 5000}, p)
		home, grow := r.inodeBlockWith(p, setSizeTo(6000))
		_, cut := r.inodeBlockWith(p, setSizeTo(100))
		w := newCsumTx(r)
		desc1, c1 := w.blocks([]uint64{home}, [][]byte{grow})
		at1, commit1 := w.pos, w.commitBlock()
		w.pos, w.seq = w.pos+3, w.seq+1
		desc2, c2 := w.blocks([]uint64{home}, [][]byte{cut})
		at2, commit2 := w.pos, w.commitBlock()
		for _, b := range []struct {
			jb uint32
			p  []byte
		}{{at1 + 2, commit1}, {at2 + 2, commit2}, {at1, desc1}, {at1 + 1, c1[0]}, {at2, desc2}} {
			if vs := r.write(w.blockAt(b.jb), b.p); len(vs) != 0 {
				t.Fatalf("journal block %d: %v", b.jb, vs)
			}
		}
		off := w.blockAt(at2 + 1)
		in, n := record(r)
		if vs := r.e.CheckWrite(off, c2[0]); len(vs) != 1 || vs[0].Kind != revfs.KindSizeDecreased || vs[0].Off != off+in || vs[0].Len != n {
			t.Fatalf("copy completing the second: %v", vs)
		}
		r.e.Flushed()
		if st := r.state(p); st.Size != 6000 || !r.e.jnl.pending {
			t.Fatalf("after the flush: size %d, pending %v; want the first applied only", st.Size, r.e.jnl.pending)
		}
	})

	t.Run("kernel writes while a commit is pending are not scanned for", func(t *testing.T) {
		v3 := journals[1]
		r := openRig(t, mountedJournal(t, "b4k-journal.img", v3.incompat, v3.compat), map[string]int64{p: 5000}, p)
		f := forge(t, r, 7000)
		// A write past the pending commit block is no block of its
		// transaction, whatever it holds.
		if txs, _, _ := r.e.jnl.pendingTxs(&hostWrite{e: r.e, off: f.w.blockAt(f.w.pos + 3), end: f.w.blockAt(f.w.pos+3) + r.bs,
			first: uint64(f.w.blockAt(f.w.pos+3) / r.bs), last: uint64(f.w.blockAt(f.w.pos+3) / r.bs)}, nil); len(txs) != 0 {
			t.Fatalf("pendingTxs: %v", txs)
		}
	})
}

// A commit block carrying a checksum v1 CRC cannot be rewritten: the
// device drops the blamed bytes of the completing write, which breaks the
// CRC, and a replay stops before the transaction.
func TestCommitBlockFirstChecksumV1(t *testing.T) {
	const p = "var/log/app.log"
	r := openRig(t, mountedJournal(t, "b4k-journal.img", jbd2.FeatureIncompatRevoke, jbd2.FeatureCompatChecksum), map[string]int64{p: 5000}, p)
	home, blk := r.inodeBlockWith(p, func(raw []byte) { binary.LittleEndian.PutUint32(raw[4:], 100) })
	w := newCsumTx(r)
	desc, stored := w.blocks([]uint64{home}, [][]byte{blk})
	commit := w.commitBlock()
	commit[0xC], commit[0xD] = jbd2.ChecksumTypeCRC32, jbd2.ChecksumSizeCRC32
	binary.BigEndian.PutUint32(commit[0x10:], crc32Be(crc32Be(^uint32(0), desc), stored[0]))
	r.write(w.blockAt(w.pos+2), commit)
	r.write(w.blockAt(w.pos), desc)
	vs, rest := r.discardWriteRest(w.blockAt(w.pos+1), stored[0])
	if kinds(vs) != "size-decreased" || len(rest) != len(vs) {
		t.Fatalf("copy: %v, left to the device %v", vs, rest)
	}
	read := func(jb uint32) ([]byte, error) {
		pb, _ := r.e.jnl.physOf(jb)
		return r.img.b[int64(pb)*r.bs : int64(pb+1)*r.bs], nil
	}
	if txs, _, _, _ := jbd2.Scan(r.e.jnl.sb, w.pos, w.seq, read, 16); len(txs) != 0 {
		t.Fatalf("a replay still finds %d transactions", len(txs))
	}
	r.e.Flushed()
	if st := r.state(p); st.Size != 5000 {
		t.Fatalf("the model took size %d", st.Size)
	}
}

// crc32Be is the kernel's crc32_be, which checksum v1 chains over the
// descriptor and copies of a transaction.
func crc32Be(crc uint32, p []byte) uint32 {
	for _, b := range p {
		crc ^= uint32(b) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04C11DB7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
