package ext4

import (
	"encoding/binary"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// Journal superblock offsets (journal_superblock_t, include/linux/jbd2.h).
const (
	jsbCompatOff   = 0x24
	jsbIncompatOff = 0x28
	jsbROCompatOff = 0x2C
	jsbUUIDOff     = 0x30
	jsbCsumTypeOff = 0x50
	jsbChecksumOff = 0xFC
)

// journalSuperblockWith returns the journal superblock's device offset and
// its bytes with the log's start at journal block start, transaction seq,
// edited by edit, and its checksum recomputed when it has csum v2/v3.
func (r *rig) journalSuperblockWith(start, seq uint32, edit func(sb []byte)) (int64, []byte) {
	off, b := r.journalSuperblockAt(start, seq)
	edit(b)
	be := binary.BigEndian
	if jbd2.FeatureIncompat(be.Uint32(b[jsbIncompatOff:]))&(jbd2.FeatureIncompatCsumV2|jbd2.FeatureIncompatCsumV3) != 0 {
		var zero [4]byte
		be.PutUint32(b[jsbChecksumOff:], layout.Crc32c(layout.Crc32c(layout.Crc32c(^uint32(0), b[:jsbChecksumOff]), zero[:]), b[jsbChecksumOff+4:jbd2.SuperblockSize]))
	}
	return off, b
}

func setIncompat(f jbd2.FeatureIncompat) func([]byte) {
	return func(b []byte) { binary.BigEndian.PutUint32(b[jsbIncompatOff:], uint32(f)) }
}

func addIncompat(f jbd2.FeatureIncompat) func([]byte) {
	return func(b []byte) {
		binary.BigEndian.PutUint32(b[jsbIncompatOff:], binary.BigEndian.Uint32(b[jsbIncompatOff:])|uint32(f))
	}
}

func layoutChangedIn(vs []revfs.Violation) bool {
	return len(vs) == 1 && vs[0].Kind == revfs.KindLayoutChanged
}

// A feature change that makes a replay read a transaction the engine has
// applied differently is a layout change at the superblock's write.
func TestJournalFeatureFlipRefused(t *testing.T) {
	const p = "var/log/app.log"

	// Two copies: with one, a tag read with another size can still name
	// the same home block (the bytes a longer tag takes are the UUID's).
	homesOf := func(r *rig) ([]uint64, [][]byte) {
		home, blk := r.inodeBlockWith(p, setSizeTo(6000))
		gdt := r.e.gdtFirst
		return []uint64{home, gdt}, [][]byte{blk, r.img.b[int64(gdt)*r.bs : int64(gdt+1)*r.bs]}
	}

	// liveGrowth opens img and commits a transaction growing the file (and
	// carrying a second block) after a superblock as at mount: a live
	// transaction the engine applied, from journal block first, tid seq0.
	liveGrowth := func(t *testing.T, img string) (r *rig, first, seq0 uint32) {
		t.Helper()
		r = openRig(t, img, map[string]int64{p: 5000}, p)
		w := newTxWriter(r)
		first, seq0 = w.pos, w.seq
		if vs := r.write(r.journalSuperblockAt(first, seq0)); len(vs) != 0 {
			t.Fatalf("superblock as at mount: %v", vs)
		}
		if vs, _ := w.commit(homesOf(r)); len(vs) != 0 {
			t.Fatalf("growth: %v", vs)
		}
		return r, first, seq0
	}

	t.Run("64bit set under a live transaction of 8-byte tags", func(t *testing.T) {
		r, first, seq0 := liveGrowth(t, loadImage(t, "b4k-journal.img"))
		off, sb := r.journalSuperblockWith(first, seq0, addIncompat(jbd2.FeatureIncompat64Bit))
		vs := r.e.CheckWrite(off, sb)
		if !layoutChangedIn(vs) {
			t.Fatalf("64bit set while transaction %d is live: %v, want %v", seq0, vs, revfs.KindLayoutChanged)
		}
		t.Log(vs[0])
		off, sb = r.journalSuperblockWith(first, seq0, func(b []byte) { binary.BigEndian.PutUint32(b[jsbROCompatOff:], 1) })
		if vs := r.e.CheckWrite(off, sb); !layoutChangedIn(vs) {
			t.Fatalf("an ro_compat feature set while transaction %d is live: %v, want %v", seq0, vs, revfs.KindLayoutChanged)
		}
	})

	// fast_commit moves the log's end, where a replay wraps round: set
	// under a live transaction, it is refused (set at mount on the empty
	// log, as the kernel does, it is not: TestKernelFastCommit).
	t.Run("fast_commit set under a live transaction", func(t *testing.T) {
		testenv.RequireCommand(t, "tune2fs")
		img := loadImage(t, "b4k-journal.img")
		runCmd(t, "tune2fs", "-O", "^has_journal", img)
		runCmd(t, "tune2fs", "-J", "size=5", img) // room for jbd2's smallest log beside the area
		r, first, seq0 := liveGrowth(t, img)
		off, sb := r.journalSuperblockWith(first, seq0, addIncompat(jbd2.FeatureIncompatFastCommit))
		if vs := r.e.CheckWrite(off, sb); !layoutChangedIn(vs) {
			t.Fatalf("fast_commit set while transaction %d is live: %v, want %v", seq0, vs, revfs.KindLayoutChanged)
		}
	})

	t.Run("csum v3 journal: checksums dropped or reseeded under a live transaction", func(t *testing.T) {
		const v3 = jbd2.FeatureIncompatCsumV3 | jbd2.FeatureIncompat64Bit
		r := openRig(t, mountedJournal(t, "b4k-journal.img", v3, 0), map[string]int64{p: 5000}, p)
		w := newCsumTx(r)
		first, seq0 := w.pos, w.seq
		if vs, _ := w.commit(w.log(homesOf(r))); len(vs) != 0 {
			t.Fatalf("growth: %v", vs)
		}
		for name, edit := range map[string]func([]byte){
			"csum v3 cleared": setIncompat(jbd2.FeatureIncompat64Bit),
			"csum v2":         setIncompat(jbd2.FeatureIncompatCsumV2 | jbd2.FeatureIncompat64Bit),
			"new uuid":        func(b []byte) { b[jsbUUIDOff] ^= 0xFF },
		} {
			off, sb := r.journalSuperblockWith(first, seq0, edit)
			if vs := r.e.CheckWrite(off, sb); !layoutChangedIn(vs) {
				t.Errorf("%s while transaction %d is live: %v, want %v", name, seq0, vs, revfs.KindLayoutChanged)
			}
		}
	})
}

// The feature changes the kernel makes are not refused: at mount on a clean
// log, the revoke feature set while the log is live, a clean superblock at
// unmount, a change that leaves the live transactions reading the same, or
// one made once no applied transaction is live.
func TestJournalFeatureChangesOfTheKernel(t *testing.T) {
	const p = "var/log/app.log"
	const v3 = jbd2.FeatureIncompatCsumV3 | jbd2.FeatureIncompat64Bit

	t.Run("csum v3 and 64bit with the first commit after a clean mount", func(t *testing.T) {
		r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
		start, seq := r.e.jnl.sb.ScanFrom()
		off, sb := r.journalSuperblockWith(start, seq, func(b []byte) {
			setIncompat(v3)(b)
			b[jsbCsumTypeOff] = jbd2.ChecksumTypeCRC32C
		})
		if vs := r.write(off, sb); len(vs) != 0 {
			t.Fatalf("mount's superblock: %v", vs)
		}
		// The log is read with the new features from then on.
		w := newCsumTx(r)
		home, blk := r.inodeBlockWith(p, setSizeTo(6000))
		if vs, _ := w.commit(w.log([]uint64{home}, [][]byte{blk})); len(vs) != 0 {
			t.Fatalf("growth: %v", vs)
		}
		if st := r.state(p); st.Size != 6000 {
			t.Fatalf("size %d after a csum v3 transaction, want 6000", st.Size)
		}
	})

	t.Run("revoke, checksum v1 and async_commit while transactions are live", func(t *testing.T) {
		r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
		w := newTxWriter(r)
		first, seq0, _, _ := w.mountAndGrow(p)
		if vs := r.write(r.journalSuperblockWith(first, seq0, addIncompat(jbd2.FeatureIncompatRevoke))); len(vs) != 0 {
			t.Fatalf("revoke set while transaction %d is live: %v", seq0, vs)
		}
		// Mounted with journal_checksum and journal_async_commit after a
		// crash: the commit blocks carry no CRC, which checksum v1 accepts.
		if vs := r.write(r.journalSuperblockWith(first, seq0, func(b []byte) {
			addIncompat(jbd2.FeatureIncompatAsyncCommit)(b)
			binary.BigEndian.PutUint32(b[jsbCompatOff:], uint32(jbd2.FeatureCompatChecksum))
		})); len(vs) != 0 {
			t.Fatalf("checksum v1 and async_commit set while transaction %d is live: %v", seq0, vs)
		}
		// The checkpoint moves the start past it: nothing applied is live,
		// and the unmount writes the log clean.
		if vs := r.write(r.journalSuperblockWith(w.pos, w.seq, setIncompat(jbd2.FeatureIncompat64Bit))); len(vs) != 0 {
			t.Fatalf("64bit set once no applied transaction is live: %v", vs)
		}
		if vs := r.write(r.journalSuperblockWith(0, w.seq+1, setIncompat(0))); len(vs) != 0 {
			t.Fatalf("clean superblock with other features: %v", vs)
		}
	})
}
