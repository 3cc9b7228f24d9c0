package ext4

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/indelible-worm/indelible/audit"
	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// The device core finds the repair through this method (worm's
// journalRepairer).
var _ interface {
	RepairDiscard(off int64, p []byte, vs []revfs.Violation, write func(b []byte, off int64) error) ([]byte, []revfs.Violation, error)
} = (*Engine)(nil)

// mountedJournal returns a copy of testdata image name whose journal looks
// as the kernel leaves it while mounted on a metadata_csum filesystem:
// 64bit and csum v3 (plus compat, e.g. checksum v1, when given), and the
// log open at its first block, so that a replay (audit's reader, the
// kernel's recovery) reads every transaction the test commits.
func mountedJournal(t testing.TB, name string, incompat jbd2.FeatureIncompat, compat jbd2.FeatureCompat) string {
	t.Helper()
	path := loadImage(t, name)
	r := openRig(t, path, nil)
	pb, _ := r.e.jnl.physOf(0)
	b := r.img.b
	sb := b[int64(pb)*r.bs : int64(pb)*r.bs+jbd2.SuperblockSize]
	be := binary.BigEndian
	be.PutUint32(sb[0x24:], uint32(compat))
	be.PutUint32(sb[0x28:], uint32(incompat))
	if incompat&(jbd2.FeatureIncompatCsumV2|jbd2.FeatureIncompatCsumV3) != 0 {
		sb[0x50] = jbd2.ChecksumTypeCRC32C
	}
	be.PutUint32(sb[0x1C:], be.Uint32(sb[0x14:])) // s_start = s_first
	var zero [4]byte
	be.PutUint32(sb[0xFC:], layout.Crc32c(layout.Crc32c(layout.Crc32c(^uint32(0), sb[:0xFC]), zero[:]), sb[0x100:]))
	out := filepath.Join(t.TempDir(), "mounted-"+name)
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// csumTx writes jbd2 transactions the way the kernel does with 64bit and
// csum v2/v3 (or without checksums): 16-byte tag3 (csum v3) or 12/14-byte
// tags, escaped copies, descriptor tail and commit block checksums.
type csumTx struct {
	r        *rig
	sb       *jbd2.Superblock
	seed     uint32
	pos, seq uint32
}

func newCsumTx(r *rig) *csumTx {
	sb := r.e.jnl.sb
	start, seq := sb.ScanFrom()
	return &csumTx{r: r, sb: sb, seed: layout.Crc32c(^uint32(0), sb.Disk.UUID[:]), pos: start, seq: seq}
}

func (w *csumTx) blockAt(jb uint32) int64 {
	pb, ok := w.r.e.jnl.physOf(jb)
	if !ok {
		w.r.t.Fatalf("journal block %d not mapped", jb)
	}
	return int64(pb) * w.r.bs
}

// log writes the descriptor and the copies of one transaction and returns
// the journal block its commit block goes to.
func (w *csumTx) log(homes []uint64, copies [][]byte) uint32 {
	desc, stored := w.blocks(homes, copies)
	if vs := w.r.write(w.blockAt(w.pos), desc); len(vs) > 0 {
		w.r.t.Fatalf("descriptor raised %v", vs)
	}
	for i, c := range stored {
		if vs := w.r.write(w.blockAt(w.pos+1+uint32(i)), c); len(vs) > 0 {
			w.r.t.Fatalf("copy raised %v", vs)
		}
	}
	return w.pos + 1 + uint32(len(copies))
}

// blocks builds the descriptor and the copies as stored (escaped) of the
// current transaction, which lie from w.pos on, without writing them.
func (w *csumTx) blocks(homes []uint64, copies [][]byte) ([]byte, [][]byte) {
	be := binary.BigEndian
	bs := int(w.r.bs)
	desc := make([]byte, bs)
	be.PutUint32(desc, jbd2.JournalMagic)
	be.PutUint32(desc[4:], jbd2.BlockTypeDescriptor)
	be.PutUint32(desc[8:], w.seq)
	v3 := w.sb.Incompat()&jbd2.FeatureIncompatCsumV3 != 0
	off := jbd2.HeaderSize
	stored := make([][]byte, len(copies))
	for i, h := range homes {
		c := bytes.Clone(copies[i])
		flags := uint16(0)
		if be.Uint32(c) == jbd2.JournalMagic {
			clear(c[:4])
			flags |= uint16(jbd2.TagFlagEscape)
		}
		stored[i] = c
		if i > 0 {
			flags |= uint16(jbd2.TagFlagSameUUID)
		}
		if i == len(homes)-1 {
			flags |= uint16(jbd2.TagFlagLastTag)
		}
		var tid [4]byte
		be.PutUint32(tid[:], w.seq)
		sum := layout.Crc32c(layout.Crc32c(w.seed, tid[:]), c)
		tag := desc[off:]
		be.PutUint32(tag, uint32(h))
		be.PutUint16(tag[6:], flags)
		if w.sb.Has64Bit() {
			be.PutUint32(tag[8:], uint32(h>>32))
		}
		switch {
		case v3:
			be.PutUint32(tag[12:], sum)
		case w.sb.HasCsumV2V3():
			be.PutUint16(tag[4:], uint16(sum))
		}
		off += w.sb.TagBytes()
		if i == 0 {
			off += 16
		}
	}
	if w.sb.HasCsumV2V3() {
		w.tail(desc)
	}
	return desc, stored
}

func (w *csumTx) tail(b []byte) {
	var zero [4]byte
	n := len(b) - jbd2.BlockTailSize
	binary.BigEndian.PutUint32(b[n:], layout.Crc32c(layout.Crc32c(w.seed, b[:n]), zero[:]))
}

// commitBlock is the commit block of the current transaction.
func (w *csumTx) commitBlock() []byte {
	b := make([]byte, w.r.bs)
	binary.BigEndian.PutUint32(b, jbd2.JournalMagic)
	binary.BigEndian.PutUint32(b[4:], jbd2.BlockTypeCommit)
	binary.BigEndian.PutUint32(b[8:], w.seq)
	if w.sb.HasCsumV2V3() {
		var zero [4]byte
		binary.BigEndian.PutUint32(b[0x10:], layout.Crc32c(layout.Crc32c(w.seed, b[:0x10]), append(zero[:], b[0x14:]...)))
	}
	return b
}

// commit writes the commit block at cpos through the discard response and
// moves on to the next transaction.
func (w *csumTx) commit(cpos uint32) ([]revfs.Violation, int64) {
	off := w.blockAt(cpos)
	vs := w.r.discardWrite(off, w.commitBlock())
	w.pos, w.seq = cpos+1, w.seq+1
	return vs, off
}

// discardWrite applies one write as the device core does under the
// discard response: the engine repairs what it can (writing the image),
// the rest of the blamed bytes keep the image's contents.
func (r *rig) discardWrite(off int64, p []byte) []revfs.Violation {
	vs, _ := r.discardWriteRest(off, p)
	return vs
}

// discardWriteRest is discardWrite that also returns the violations the
// engine left unrepaired.
func (r *rig) discardWriteRest(off int64, p []byte) ([]revfs.Violation, []revfs.Violation) {
	r.t.Helper()
	vs := r.e.CheckWrite(off, p)
	if len(vs) == 0 {
		copy(r.img.b[off:], p)
		r.e.Wrote(off, p)
		return nil, nil
	}
	q, rest, err := r.e.RepairDiscard(off, p, vs, func(b []byte, o int64) error {
		if o < off+int64(len(p)) && off < o+int64(len(b)) {
			r.t.Errorf("repair write [%d,+%d) overlaps the request [%d,+%d)", o, len(b), off, len(p))
		}
		copy(r.img.b[o:], b)
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	q = bytes.Clone(q)
	for _, v := range rest {
		lo, hi := max(v.Off, off), min(v.Off+v.Len, off+int64(len(q)))
		if lo < hi {
			copy(q[lo-off:hi-off], r.img.b[lo:hi])
		}
	}
	copy(r.img.b[off:], q)
	r.e.Wrote(off, q)
	return vs, rest
}

// replayed reads the journal of the rig's image as a replay does and
// returns the copy of home block h it would write, and the transactions.
func (r *rig) replayed(h uint64) ([]byte, jbd2.LoggedBlock, []jbd2.Transaction) {
	r.t.Helper()
	j := r.e.jnl
	read := func(jb uint32) ([]byte, error) {
		pb, ok := j.physOf(jb)
		if !ok {
			r.t.Fatalf("journal block %d not mapped", jb)
		}
		return bytes.Clone(r.img.b[int64(pb)*r.bs : int64(pb+1)*r.bs]), nil
	}
	raw, _ := read(0)
	sb, err := jbd2.ParseSuperblock(raw)
	if err != nil {
		r.t.Fatal(err)
	}
	txs, _, _, err := jbd2.Scan(sb, sb.Start(), sb.Sequence(), read, int(sb.MaxLen()))
	if err != nil {
		r.t.Fatalf("scan: %v", err)
	}
	for _, tx := range txs {
		if len(tx.Skipped) > 0 {
			r.t.Fatalf("tid %d: copies failing their tag checksum: %+v", tx.Sequence, tx.Skipped)
		}
	}
	lb, ok := jbd2.ReplayPlan(txs)[h]
	if !ok {
		r.t.Fatalf("no replayed copy of block %d in %d transactions", h, len(txs))
	}
	c, _ := read(lb.JBlock)
	if lb.Escaped {
		jbd2.Unescape(c)
	}
	return c, lb, txs
}

// auditSees reads file id from the rig's image with the journal replayed,
// as `indelible diff` (and the kernel, mounting it) would.
func (r *rig) auditSees(id revfs.FileID) []byte {
	r.t.Helper()
	im, err := audit.OpenImage(bytes.NewReader(r.img.b), int64(len(r.img.b)))
	if err != nil {
		r.t.Fatal(err)
	}
	f, err := im.OpenFile(uint64(id))
	if err != nil {
		r.t.Fatalf("audit: %v (notes %q)", err, im.Notes)
	}
	data, err := f.ReadAll()
	if err != nil {
		r.t.Fatalf("audit: %v", err)
	}
	return data
}

func TestDiscardRepairsJournalledCopy(t *testing.T) {
	const p = "var/log/app.log"
	v3 := jbd2.FeatureIncompatRevoke | jbd2.FeatureIncompat64Bit | jbd2.FeatureIncompatCsumV3
	record := func(r *rig, b []byte) []byte {
		f := r.e.byIno[uint64(r.ids[p])]
		return b[f.inoOff : f.inoOff+r.e.sb.InodeSizeBytes()]
	}

	for _, tc := range []struct {
		name     string
		incompat jbd2.FeatureIncompat
	}{
		{"csum v3", v3},
		{"csum v2", jbd2.FeatureIncompatRevoke | jbd2.FeatureIncompatCsumV2},
		{"no checksums", jbd2.FeatureIncompatRevoke},
	} {
		t.Run("raw write journalled again/"+tc.name, func(t *testing.T) {
			r := openRig(t, mountedJournal(t, "b4k-journal.img", tc.incompat, 0), map[string]int64{p: 5000}, p)
			want := seqContent(5000)
			home, bad := r.inodeBlockWith(p, setSizeTo(10))
			orig := bytes.Clone(r.img.b[int64(home)*r.bs : int64(home+1)*r.bs])
			// debugfs -w under the mount: the home write is discarded...
			if vs := r.discardWrite(int64(home)*r.bs, bad); kinds(vs) != "size-decreased" {
				t.Fatalf("home write: %v", vs)
			}
			if !bytes.Equal(r.img.b[int64(home)*r.bs:int64(home+1)*r.bs], orig) {
				t.Fatal("the discarded home write changed the image")
			}
			// ...but the host's cache keeps the attacker's block and the
			// kernel journals it, in the same flush epoch.
			w := newCsumTx(r)
			cpos := w.log([]uint64{home}, [][]byte{bad})
			r.e.Flushed()
			vs, commitOff := w.commit(cpos)
			if len(vs) != 1 || vs[0].Kind != revfs.KindSizeDecreased || vs[0].Off != commitOff || vs[0].Len != r.bs {
				t.Fatalf("commit: %v, want size-decreased on the commit block [%d,+%d)", vs, commitOff, r.bs)
			}
			c, _, txs := r.replayed(home)
			if len(txs) != 1 {
				t.Fatalf("%d transactions replayed, want the repaired one", len(txs))
			}
			if !bytes.Equal(record(r, c), record(r, orig)) {
				t.Fatal("the replayed copy does not hold the protected inode record")
			}
			if got := r.auditSees(r.ids[p]); !bytes.Equal(got, want) {
				t.Fatalf("the replayed image shows %d bytes of the file, want the 5000 committed", len(got))
			}
			if st := r.state(p); st.Size != 5000 {
				t.Fatalf("the model took size %d", st.Size)
			}
		})
	}

	t.Run("truncate in a transaction keeps the log going", func(t *testing.T) {
		r := openRig(t, mountedJournal(t, "b4k-journal.img", v3, 0), map[string]int64{p: 5000}, p)
		home, blk := r.inodeBlockWith(p, setSizeTo(100))
		w := newCsumTx(r)
		vs, _ := w.commit(w.log([]uint64{home}, [][]byte{blk}))
		if kinds(vs) != "size-decreased" {
			t.Fatalf("truncate: %v", vs)
		}
		// The next transaction, a legit growth, is followed and replayed
		// after the repaired one: the log did not end at the attack.
		_, grow := r.inodeBlockWith(p, setSizeTo(6000))
		if vs, _ := w.commit(w.log([]uint64{home}, [][]byte{grow})); len(vs) != 0 {
			t.Fatalf("growth after the repaired truncate: %v", vs)
		}
		if st := r.state(p); st.Size != 6000 || !st.Journalled {
			t.Fatalf("after the growth: %+v", st)
		}
		c, _, txs := r.replayed(home)
		if len(txs) != 2 || binary.LittleEndian.Uint32(record(r, c)[4:]) != 6000 {
			t.Fatalf("replay: %d transactions, size %d", len(txs), binary.LittleEndian.Uint32(record(r, c)[4:]))
		}
	})

	t.Run("journalled data copy escaped, repaired unescaped", func(t *testing.T) {
		r := openRig(t, mountedJournal(t, "b4k-journal-data.img", v3, 0), map[string]int64{p: 5000}, p)
		f := r.e.byIno[uint64(r.ids[p])]
		m := f.view.maps[0]
		orig := bytes.Clone(r.img.b[int64(m.Physical)*r.bs : int64(m.Physical+1)*r.bs])
		forged := bytes.Clone(orig)
		binary.BigEndian.PutUint32(forged, jbd2.JournalMagic) // stored escaped
		copy(forged[100:], "forged")
		w := newCsumTx(r)
		vs, _ := w.commit(w.log([]uint64{m.Physical}, [][]byte{forged}))
		if kinds(vs) != "data-changed" {
			t.Fatalf("forged data copy: %v", vs)
		}
		c, lb, _ := r.replayed(m.Physical)
		if lb.Escaped || !bytes.Equal(c, orig) {
			t.Fatalf("replayed copy escaped=%v, equal to the committed block: %v", lb.Escaped, bytes.Equal(c, orig))
		}
		if got := r.auditSees(r.ids[p]); !bytes.Equal(got, seqContent(5000)) {
			t.Fatal("the replayed image does not show the committed bytes")
		}
	})

	t.Run("a copy that starts with the magic once repaired is escaped", func(t *testing.T) {
		r := openRig(t, mountedJournal(t, "b4k-journal-data.img", v3, 0), map[string]int64{p: 5000}, p)
		f := r.e.byIno[uint64(r.ids[p])]
		m := f.view.maps[0]
		// The committed block itself starts with the magic (the file's
		// first four bytes are the attacker's choice as much as anyone's).
		blk := bytes.Clone(r.img.b[int64(m.Physical)*r.bs : int64(m.Physical+1)*r.bs])
		binary.BigEndian.PutUint32(blk, jbd2.JournalMagic)
		copy(r.img.b[int64(m.Physical)*r.bs:], blk)
		forged := bytes.Clone(blk)
		copy(forged, "XXXX")
		w := newCsumTx(r)
		vs, _ := w.commit(w.log([]uint64{m.Physical}, [][]byte{forged}))
		if kinds(vs) != "data-changed" {
			t.Fatalf("forged data copy: %v", vs)
		}
		c, lb, _ := r.replayed(m.Physical)
		if !lb.Escaped || !bytes.Equal(c, blk) {
			t.Fatalf("replayed copy escaped=%v, equal to the committed block: %v", lb.Escaped, bytes.Equal(c, blk))
		}
	})

	t.Run("checksum v1 is left to the device", func(t *testing.T) {
		r := openRig(t, mountedJournal(t, "b4k-journal.img", jbd2.FeatureIncompatRevoke, jbd2.FeatureCompatChecksum), map[string]int64{p: 5000}, p)
		home, blk := r.inodeBlockWith(p, setSizeTo(100))
		w := newCsumTx(r)
		cpos := w.log([]uint64{home}, [][]byte{blk})
		off := w.blockAt(cpos)
		commit := w.commitBlock()
		vs := r.e.CheckWrite(off, commit)
		if kinds(vs) != "size-decreased" {
			t.Fatalf("truncate: %v", vs)
		}
		q, rest, err := r.e.RepairDiscard(off, commit, vs, func([]byte, int64) error {
			t.Fatal("repair wrote with checksum v1")
			return nil
		})
		if err != nil || len(rest) != len(vs) || !bytes.Equal(q, commit) {
			t.Fatalf("RepairDiscard: rest %v, err %v", rest, err)
		}
	})
}

// FuzzRepairDiscard commits, under the discard response, a transaction
// carrying a fuzzed copy of the protected file's inode-table block, extent
// or data block (optionally after the same bytes were written home and
// discarded, as a raw write under the mount does): the repair must never
// panic, and whenever it takes the violations on, the log must stay valid
// (no copy failing its checksum) and the image, journal replayed, must show
// every committed byte. With flags&2 the commit block lands first and the
// copy completes the transaction (journal.checkPending).
func FuzzRepairDiscard(f *testing.F) {
	const p = "var/log/app.log"
	path := mountedJournal(f, "b1k-journal.img", jbd2.FeatureIncompatRevoke|jbd2.FeatureIncompat64Bit|jbd2.FeatureIncompatCsumV3, 0)
	base := openRig(f, path, map[string]int64{p: 5000}, p)
	fl := base.e.byIno[uint64(base.ids[p])]
	targets := []uint64{fl.inoBlock, fl.view.maps[0].Physical}
	targets = append(targets, fl.view.tree...)
	for i := range targets {
		f.Add(uint8(i), uint8(0), uint16(fl.inoOff+4), []byte{0xFF})
		f.Add(uint8(i), uint8(1), uint16(fl.inoOff), make([]byte, 256))
		f.Add(uint8(i), uint8(2), uint16(fl.inoOff+4), []byte{0xFF})
	}
	f.Fuzz(func(t *testing.T, target, flags uint8, at uint16, xor []byte) {
		r := openRig(t, path, map[string]int64{p: 5000}, p)
		home := targets[int(target)%len(targets)]
		cp := bytes.Clone(r.img.b[int64(home)*r.bs : int64(home+1)*r.bs])
		for i, x := range xor {
			cp[(int(at)+i)%len(cp)] ^= x
		}
		if flags&1 != 0 {
			r.discardWrite(int64(home)*r.bs, cp)
		}
		w := newCsumTx(r)
		var vs, rest []revfs.Violation
		if flags&2 != 0 {
			// The commit block first: the copy, written last, completes
			// the transaction and is repaired in the request.
			desc, stored := w.blocks([]uint64{home}, [][]byte{cp})
			if vs := r.discardWrite(w.blockAt(w.pos+2), w.commitBlock()); len(vs) > 0 {
				t.Fatalf("commit block first: %v", vs)
			}
			if vs := r.discardWrite(w.blockAt(w.pos), desc); len(vs) > 0 {
				t.Fatalf("descriptor before its copy: %v", vs)
			}
			vs, rest = r.discardWriteRest(w.blockAt(w.pos+1), stored[0])
		} else {
			cpos := w.log([]uint64{home}, [][]byte{cp})
			r.e.Flushed()
			vs, rest = r.discardWriteRest(w.blockAt(cpos), w.commitBlock())
		}
		if len(vs) == 0 || len(rest) > 0 {
			return
		}
		r.replayed(home)
		if got := r.auditSees(r.ids[p]); !bytes.HasPrefix(got, seqContent(5000)) {
			t.Fatalf("repaired %v, but the replayed image shows %d bytes that are not the committed ones", vs, len(got))
		}
	})
}

// BenchmarkCommitBlock measures the engine's work for the commit block of a
// legit one-copy transaction (an append growing the protected file): the
// CheckWrite and Wrote of the commit block, which is where the discard
// path's extra check (replayViolations) runs.
func BenchmarkCommitBlock(b *testing.B) {
	const p = "var/log/app.log"
	path := mountedJournal(b, "b4k-journal.img", jbd2.FeatureIncompatRevoke|jbd2.FeatureIncompat64Bit|jbd2.FeatureIncompatCsumV3, 0)
	var r *rig
	var w *csumTx
	size := uint32(5000)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if i%300 == 0 { // a fresh log before this one wraps
			b.StopTimer()
			r = openRig(b, path, map[string]int64{p: 5000}, p)
			r.log.t = nopTB{b}
			w = newCsumTx(r)
			size = 5000
			b.StartTimer()
		}
		b.StopTimer()
		size++
		home, blk := r.inodeBlockWith(p, func(raw []byte) { binary.LittleEndian.PutUint32(raw[4:], size) })
		cpos := w.log([]uint64{home}, [][]byte{blk})
		r.e.Flushed()
		off, commit := w.blockAt(cpos), w.commitBlock()
		b.StartTimer()
		if vs := r.e.CheckWrite(off, commit); len(vs) > 0 {
			b.Fatal(vs)
		}
		copy(r.img.b[off:], commit)
		r.e.Wrote(off, commit)
		w.pos, w.seq = cpos+1, w.seq+1
	}
}

// nopTB silences the engine's log in benchmarks.
type nopTB struct{ testing.TB }

func (nopTB) Logf(string, ...any) {}
