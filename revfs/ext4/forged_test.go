package ext4

import (
	"bytes"
	"testing"

	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
)

// A root attacker writes only a descriptor and a commit block; the tag
// points at a log position it never writes, which still holds zeroes (or
// an earlier lap's block), and carries the tag checksum of what is there.
// No write completes that transaction, so checkPending never judges it,
// but a replay applies it: the protected inode would become the stale
// block's (freed). The flush after it raises the change, once; a forged
// transaction that changes nothing protected raises nothing.
func TestForgedTransactionOverStaleCopy(t *testing.T) {
	const p = "var/log/app.log"
	v3 := jbd2.FeatureIncompatRevoke | jbd2.FeatureIncompat64Bit | jbd2.FeatureIncompatCsumV3
	for _, tc := range []struct {
		name  string
		stale func(r *rig, f *tracked) []byte // what the copy's log position holds
		want  bool
	}{
		{"zeroes over the inode table", func(r *rig, f *tracked) []byte { return make([]byte, r.bs) }, true},
		{"the inode table as it is", func(r *rig, f *tracked) []byte {
			return bytes.Clone(r.img.b[int64(f.inoBlock)*r.bs : int64(f.inoBlock+1)*r.bs])
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openRig(t, mountedJournal(t, "b4k-journal.img", v3, 0), map[string]int64{p: 5000}, p)
			f := r.e.byIno[uint64(r.ids[p])]
			w := newCsumTx(r)
			stale := tc.stale(r, f)
			pos := w.blockAt(w.pos + 1)
			copy(r.img.b[pos:pos+r.bs], stale) // on disk, never written by the host
			desc, _ := w.blocks([]uint64{f.inoBlock}, [][]byte{stale})
			if vs := r.write(w.blockAt(w.pos), desc); len(vs) > 0 {
				t.Fatalf("descriptor: %v", vs)
			}
			if vs := r.write(w.blockAt(w.pos+2), w.commitBlock()); len(vs) > 0 {
				t.Fatalf("commit block: %v", vs)
			}
			r.e.Flushed()
			vs := r.e.FlushViolations()
			if !tc.want {
				if len(vs) > 0 {
					t.Fatalf("a transaction changing nothing protected raised %v", vs)
				}
				return
			}
			if len(vs) == 0 || vs[0].File != r.ids[p] {
				t.Fatalf("flush raised %v, want a violation on %s", vs, p)
			}
			// What DiscardAtFlush would undo moved out with the violations:
			// a response that never undoes (honeypot) does not pile it up.
			if len(r.e.flushUndo) != 0 || len(r.e.undoNext) != 1 {
				t.Fatalf("after FlushViolations: %d commit blocks still queued, %d to undo; want 0 and 1", len(r.e.flushUndo), len(r.e.undoNext))
			}
			r.e.Flushed()
			if again := r.e.FlushViolations(); len(again) > 0 {
				t.Fatalf("raised again at the next flush: %v", again)
			}
			if r.state(p).Size != 5000 {
				t.Fatalf("the model took the forged inode: size %d", r.state(p).Size)
			}
			// The discard response: the forged commit block is cleared, so
			// a replay no longer applies the transaction.
			if err := r.e.DiscardAtFlush(func(b []byte, off int64) error {
				copy(r.img.b[off:off+int64(len(b))], b)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if got := len(r.auditSees(r.ids[p])); got != 5000 {
				t.Fatalf("after the discard, the replayed image shows %d of the 5000 committed bytes", got)
			}
		})
	}
}
