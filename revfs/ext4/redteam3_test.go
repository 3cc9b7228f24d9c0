package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/audit"
	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// Third red-team round: the journal and the superblock, crafted blocks fed
// straight to the engine.

// rt3AuditSees reads file id from img (journal replayed as the kernel
// would: only with needs_recovery and a non-clean log).
func rt3AuditSees(t *testing.T, img []byte, id revfs.FileID) []byte {
	t.Helper()
	im, err := audit.OpenImage(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := im.OpenFile(uint64(id))
	if err != nil {
		t.Fatalf("audit: %v (notes %q)", err, im.Notes)
	}
	data, err := f.ReadAll()
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	return data
}

// rt3RevokeBlock builds a revoke block of tid seq for the journal of w
// (4-byte records, or 8-byte with 64bit; the csum v2/v3 tail when the log
// has one) naming homes.
func rt3RevokeBlock(w *csumTx, homes ...uint64) []byte {
	be := binary.BigEndian
	b := make([]byte, w.r.bs)
	be.PutUint32(b, jbd2.JournalMagic)
	be.PutUint32(b[4:], jbd2.BlockTypeRevoke)
	be.PutUint32(b[8:], w.seq)
	off := jbd2.RevokeHeaderSize
	for _, h := range homes {
		if w.sb.Has64Bit() {
			be.PutUint64(b[off:], h)
			off += 8
		} else {
			be.PutUint32(b[off:], uint32(h))
			off += 4
		}
	}
	be.PutUint32(b[jbd2.HeaderSize:], uint32(off)) // r_count: bytes used
	if w.sb.HasCsumV2V3() {
		w.tail(b)
	}
	return b
}

// TestRedTeam3RevokeCancelsAppliedInode: the host commits a legitimate
// growth of the protected file (T1: its inode-table block, size 5000 ->
// 6000; the data is written), the device follows and seals it. The
// attacker never writes the inode home; it commits T2, holding only a
// revoke record for the inode-table block (valid checksums), and marks the
// log clean or leaves it for a recovery. jbd2's recovery skips every copy
// of a block revoked by a later transaction (jbd2_journal_test_revoke), and
// a clean log is not replayed at all: the host's kernel reads the home
// inode, 5000 bytes, while the device sealed 6000. The kernel never revokes
// an inode-table block (they are never freed), so the record can only be
// an attack. Secure: an indicator (the revoke of a block the protected
// files depend on whose applied copy was never written home, like a start
// that passes it), or at least a model that follows the replay.
func TestRedTeam3RevokeCancelsAppliedInode(t *testing.T) {
	const p = "var/log/app.log"
	for _, tc := range []struct {
		name  string
		v3    bool
		clean bool // mark the log clean after T2 (else: crash, needs_recovery)
	}{
		{"no csum/crash", false, false},
		{"no csum/clean", false, true},
		{"csum v3/crash", true, false},
		{"csum v3/clean", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r *rig
			if tc.v3 {
				v3 := jbd2.FeatureIncompatRevoke | jbd2.FeatureIncompat64Bit | jbd2.FeatureIncompatCsumV3
				r = openRig(t, mountedJournal(t, "b4k-journal.img", v3, 0), map[string]int64{p: 5000}, p)
			} else {
				r = openRig(t, mountedJournal(t, "b4k-journal.img", jbd2.FeatureIncompatRevoke, 0), map[string]int64{p: 5000}, p)
			}
			var all []revfs.Violation
			w := newCsumTx(r)
			home, blk := r.inodeBlockWith(p, setSizeTo(6000))
			r.writeBlocks(p, 0, 1) // the data, written home by the host
			cpos := w.log([]uint64{home}, [][]byte{blk})
			r.e.Flushed()
			vs, _ := w.commit(cpos)
			if len(vs) != 0 {
				t.Fatalf("legit growth: %v", vs)
			}
			r.e.Flushed()
			if st := r.state(p); st.Size != 6000 {
				t.Fatalf("after T1: %+v", st)
			}
			r.e.SetCommitted(r.ids[p], 6000) // the device sealed the growth
			// T2: a revoke record for the inode-table block, then its
			// commit block.
			rb := rt3RevokeBlock(w, home)
			all = append(all, r.write(w.blockAt(w.pos), rb)...)
			r.e.Flushed()
			all = append(all, r.e.FlushViolations()...)
			cv, _ := w.commit(w.pos + 1)
			all = append(all, cv...)
			r.e.Flushed()
			all = append(all, r.e.FlushViolations()...)
			img := r.withNeedsRecovery(true)
			if tc.clean {
				// The start passes both transactions: the log is empty.
				all = append(all, r.write(rt3JSB(r, 0, w.seq))...)
				r.e.Flushed()
				all = append(all, r.e.FlushViolations()...)
				img = r.withNeedsRecovery(false)
				all = append(all, r.write(int64(r.e.sbBlock)*r.bs, bytes.Clone(img[int64(r.e.sbBlock)*r.bs:int64(r.e.sbBlock+1)*r.bs]))...)
				r.e.Flushed()
				all = append(all, r.e.FlushViolations()...)
			}
			seen := rt3AuditSees(t, img, r.ids[p])
			if kn, ok := rt3KernelSize(t, img, p); ok {
				t.Logf("the real kernel, mounting this image, shows %s as %d bytes", p, kn)
				seen = seen[:min(int64(len(seen)), kn)]
			}
			st := r.state(p)
			t.Logf("violations %v; engine size %d coherent %d; the host's next mount shows %d bytes", all, st.Size, st.Coherent, len(seen))
			if len(all) == 0 && int64(len(seen)) < 6000 {
				t.Fatalf("silent: the device sealed 6000 bytes (engine size %d), but after the revoke the host's kernel reads the home inode and shows %d bytes; no indicator", st.Size, len(seen))
			}
		})
	}
}

// rt3JSB is journalSuperblockAt with the superblock checksum recomputed
// (csum v2/v3), as the kernel writes it.
func rt3JSB(r *rig, start, seq uint32) (int64, []byte) {
	off, b := r.journalSuperblockAt(start, seq)
	if b[0x50] == jbd2.ChecksumTypeCRC32C {
		var zero [4]byte
		binary.BigEndian.PutUint32(b[0xFC:], layout.Crc32c(layout.Crc32c(layout.Crc32c(^uint32(0), b[:0xFC]), zero[:]), b[0x100:jbd2.SuperblockSize]))
	}
	return off, b
}

// rt3KernelSize mounts a copy of img with the real kernel (when root: a
// recovery runs if the image needs one) and returns the size of p.
func rt3KernelSize(t *testing.T, img []byte, p string) (int64, bool) {
	t.Helper()
	if os.Geteuid() != 0 {
		return 0, false
	}
	path := filepath.Join(t.TempDir(), "k.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	m := newLoopMount(t, path, "")
	defer m.unmount()
	fi, err := os.Stat(filepath.Join(m.dir, p))
	if err != nil {
		t.Logf("kernel: %v", err)
		return 0, true
	}
	return fi.Size(), true
}

// TestRedTeam3RevokeCancelsAppliedDataCopy: data=journal. T1 logs the
// protected file's growth (inode, 5000 -> 6000) and the copy of its tail
// block holding the appended bytes; the device seals them at the commit,
// reading the copy from the journal. The attacker never writes the block
// home and commits T2, a revoke record for the tail block. A recovery
// replays T1's inode but not the revoked copy: the host reads, at
// [5000,6000), the block's stale home bytes, not what the device sealed.
// Secure: an indicator.
func TestRedTeam3RevokeCancelsAppliedDataCopy(t *testing.T) {
	const p = "var/log/app.log"
	v3 := jbd2.FeatureIncompatRevoke | jbd2.FeatureIncompat64Bit | jbd2.FeatureIncompatCsumV3
	for _, clean := range []bool{false, true} {
		name := "crash"
		if clean {
			name = "clean"
		}
		t.Run(name, func(t *testing.T) {
			r := openRig(t, mountedJournal(t, "b4k-journal.img", v3, 0), map[string]int64{p: 5000}, p)
			f := r.e.byIno[uint64(r.ids[p])]
			m, ok := f.view.lookup(1)
			if !ok {
				t.Fatal("block 1 not mapped")
			}
			tail := m.Physical + 1 - m.Logical
			r.writeBlocks(p, 0, 1)
			nb := bytes.Clone(r.img.b[int64(tail)*r.bs : int64(tail+1)*r.bs])
			appended := bytes.Repeat([]byte("APPENDED LINE\n"), 100)[:1000]
			copy(nb[5000-4096:], appended)
			var all []revfs.Violation
			w := newCsumTx(r)
			home, blk := r.inodeBlockWith(p, setSizeTo(6000))
			cpos := w.log([]uint64{home, tail}, [][]byte{blk, nb})
			r.e.Flushed()
			if vs, _ := w.commit(cpos); len(vs) != 0 {
				t.Fatalf("legit growth: %v", vs)
			}
			r.e.Flushed()
			st := r.state(p)
			if st.Coherent != 6000 {
				t.Fatalf("after T1: %+v", st)
			}
			got := r.readAll(p, 6000)
			if !bytes.Equal(got[5000:], appended) {
				t.Fatalf("the device would seal other bytes than the appended ones")
			}
			r.e.SetCommitted(r.ids[p], 6000)
			// The inode written home (a partial checkpoint), the data not.
			all = append(all, r.write(int64(home)*r.bs, blk)...)
			r.e.Flushed()
			all = append(all, r.e.FlushViolations()...)
			// T2: revoke the tail block.
			all = append(all, r.write(w.blockAt(w.pos), rt3RevokeBlock(w, tail))...)
			cv, _ := w.commit(w.pos + 1)
			all = append(all, cv...)
			r.e.Flushed()
			all = append(all, r.e.FlushViolations()...)
			img := r.withNeedsRecovery(true)
			if clean {
				all = append(all, r.write(rt3JSB(r, 0, w.seq))...)
				r.e.Flushed()
				all = append(all, r.e.FlushViolations()...)
				img = r.withNeedsRecovery(false)
				all = append(all, r.write(int64(r.e.sbBlock)*r.bs, bytes.Clone(img[int64(r.e.sbBlock)*r.bs:int64(r.e.sbBlock+1)*r.bs]))...)
				r.e.Flushed()
				all = append(all, r.e.FlushViolations()...)
			}
			seen := rt3AuditSees(t, img, r.ids[p])
			t.Logf("violations %v; audit reader shows %d bytes", all, len(seen))
			if kn, ok := rt3KernelRead(t, img, p); ok {
				t.Logf("the real kernel reads %d bytes", len(kn))
				seen = kn
			}
			if len(all) == 0 && !bytes.Equal(seen[:min(len(seen), 6000)], append(seqContent(5000), appended...)) {
				t.Fatalf("silent: the device sealed %q at [5000,6000); after the revoke the host reads %q there; no indicator",
					appended[:28], seen[5000:min(len(seen), 5028)])
			}
		})
	}
}

// rt3KernelRead is rt3KernelSize returning the file's bytes.
func rt3KernelRead(t *testing.T, img []byte, p string) ([]byte, bool) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil, false
	}
	path := filepath.Join(t.TempDir(), "k.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	m := newLoopMount(t, path, "")
	defer m.unmount()
	b, err := os.ReadFile(filepath.Join(m.dir, p))
	if err != nil {
		t.Logf("kernel: %v", err)
	}
	return b, true
}

// rt3SuperWith returns the primary superblock's block with edit applied to
// the 1024-byte superblock and its checksum recomputed.
func rt3SuperWith(r *rig, edit func(sb []byte)) (int64, []byte) {
	off := int64(r.e.sbBlock) * r.bs
	b := bytes.Clone(r.img.b[off : off+r.bs])
	sb := b[r.e.sbOff : r.e.sbOff+layout.SuperBlockSize]
	edit(sb)
	if r.e.sb.HasMetadataCsum() {
		binary.LittleEndian.PutUint32(sb[0x3FC:], layout.SuperBlockChecksum(sb))
	}
	return off, b
}

// TestRedTeam3SuperblockFields: superblock fields outside the engine's
// layout check that change how the kernel finds or treats the protected
// file at its next mount.
//
//   - s_hash_seed (and the signed/unsigned hash flag): dx_probe hashes a
//     name with the superblock's seed; with another seed the lookup of the
//     protected name in an htree directory goes to the wrong leaf, and
//     ext4_find_entry does not fall back to a linear search on a miss:
//     the path gives ENOENT (TestRedTeam3HashSeedKernel shows it).
//   - s_first_ino above the protected inode: __ext4_iget refuses an inode
//     below it ("iget: illegal inode #"): the file cannot be opened.
//
// Secure: a layout-changed indicator for each.
func TestRedTeam3SuperblockFields(t *testing.T) {
	const p = "var/log/app.log"
	le := binary.LittleEndian
	for _, img := range []string{"b4k-journal.img", "b4k-nojournal.img"} {
		for _, tc := range []struct {
			name string
			edit func(r *rig, sb []byte)
		}{
			{"s_hash_seed", func(r *rig, sb []byte) { sb[0xEC] ^= 0x5A }},
			{"s_flags hash signedness", func(r *rig, sb []byte) { le.PutUint32(sb[0x160:], le.Uint32(sb[0x160:])^3) }},
			{"s_first_ino past the protected inode", func(r *rig, sb []byte) { le.PutUint32(sb[0x54:], uint32(r.ids[p])+1) }},
		} {
			t.Run(img+"/"+tc.name, func(t *testing.T) {
				r := openRig(t, loadImage(t, img), map[string]int64{p: 5000}, p)
				vs := r.write(rt3SuperWith(r, func(sb []byte) { tc.edit(r, sb) }))
				r.e.Flushed()
				vs = append(vs, r.e.FlushViolations()...)
				if b, ok := rt3KernelRead(t, bytes.Clone(r.img.b), p); ok {
					t.Logf("the kernel then reads %d bytes of %s", len(b), p)
				}
				if len(vs) == 0 {
					t.Fatalf("superblock %s changed: no indicator", tc.name)
				}
				t.Logf("raised %s: %s", kinds(vs), vs[0].Detail)
			})
		}
	}
}

// TestRedTeam3SuperblockHarmless: superblock changes that the engine lets
// through and the kernel's next mount does not turn against the protected
// file (documented here so that a later change keeps it so): the orphan
// list naming the protected inode (nlink > 0: orphan cleanup truncates it
// to i_size, which frees nothing committed), dir_index cleared (lookups go
// linear and still find the name).
func TestRedTeam3SuperblockHarmless(t *testing.T) {
	const p = "var/log/app.log"
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		edit func(r *rig, sb []byte)
	}{
		{"s_last_orphan = protected inode", func(r *rig, sb []byte) { le.PutUint32(sb[0xE8:], uint32(r.ids[p])) }},
		{"dir_index cleared", func(r *rig, sb []byte) { le.PutUint32(sb[0x5C:], le.Uint32(sb[0x5C:])&^0x20) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
			vs := r.write(rt3SuperWith(r, func(sb []byte) { tc.edit(r, sb) }))
			t.Logf("engine: %v", vs)
			img := bytes.Clone(r.img.b)
			b, ok := rt3KernelRead(t, img, p)
			if !ok {
				t.Skip("not root")
			}
			if !bytes.Equal(b[:min(len(b), 5000)], seqContent(5000)) || len(b) < 5000 {
				if len(vs) == 0 {
					t.Fatalf("silent: after the kernel's mount the file reads %d bytes, not the 5000 sealed", len(b))
				}
			}
			// Mounted again: orphan cleanup has run once.
			b, _ = rt3KernelRead(t, img, p)
			t.Logf("kernel reads %d bytes", len(b))
		})
	}
}

// rt3HtreeImage returns a copy of testdata image name whose var/log (the
// protected file's directory) the real kernel has grown into an htree of
// several leaves.
func rt3HtreeImage(t *testing.T, name string) string {
	t.Helper()
	path := loadImage(t, name)
	m := newLoopMount(t, path, "")
	for i := 0; i < 1500; i++ {
		f := filepath.Join(m.dir, "var/log", "rotated-"+string(rune('a'+i%26))+"-"+itoa(i)+".log.gz")
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.unmount()
	return path
}

func itoa(i int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}

// TestRedTeam3HashSeedKernel: the protected file's directory is an htree
// (a log directory with many rotated files). The attacker changes the
// superblock's s_hash_seed (checksum recomputed), or the hash version in
// the directory's dx_root (dx_tail checksum recomputed). The engine reads
// every directory block linearly and still finds the name; the kernel's
// dx_probe hashes the name with the new seed/version, descends to another
// leaf, and ext4_find_entry returns ENOENT without a linear fallback: the
// protected path is gone for the host (the log daemon then creates a new,
// unprotected file of the same name). Secure: an indicator.
func TestRedTeam3HashSeedKernel(t *testing.T) {
	const p = "var/log/app.log"
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	le := binary.LittleEndian
	path := rt3HtreeImage(t, "b4k-journal.img")
	for _, tc := range []struct {
		name string
		do   func(r *rig) []revfs.Violation
	}{
		{"s_hash_seed", func(r *rig) []revfs.Violation {
			return r.write(rt3SuperWith(r, func(sb []byte) { le.PutUint32(sb[0xEC:], le.Uint32(sb[0xEC:])+1) }))
		}},
		{"dx_root hash version", func(r *rig) []revfs.Violation {
			return rt3EditDxRoot(t, r, p, func(b []byte) {
				if b[0x1C] == 1 {
					b[0x1C] = 2 // half_md4 -> tea
				} else {
					b[0x1C] = 1
				}
			})
		}},
		// The index's leaf pointers rotated by one (block0 and each
		// entry's block): every lookup lands in the leaf beside the
		// right one, while every entry stays where it was.
		{"dx_root leaf pointers", func(r *rig) []revfs.Violation {
			return rt3EditDxRoot(t, r, p, func(b []byte) {
				count := int(le.Uint16(b[0x22:]))
				first := le.Uint32(b[0x24:])
				for i := 0; i < count-1; i++ {
					le.PutUint32(b[0x24+8*i:], le.Uint32(b[0x24+8*(i+1):]))
				}
				le.PutUint32(b[0x24+8*(count-1)+4:], first)
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openRig(t, path, map[string]int64{p: 5000}, p)
			if b, _ := rt3KernelRead(t, bytes.Clone(r.img.b), p); len(b) != 5000 {
				t.Fatalf("before: the kernel reads %d bytes", len(b))
			}
			vs := tc.do(r)
			r.e.Flushed()
			vs = append(vs, r.e.FlushViolations()...)
			b, _ := rt3KernelRead(t, bytes.Clone(r.img.b), p)
			t.Logf("engine: %v; the kernel then reads %d bytes of %s", vs, len(b), p)
			if len(vs) == 0 && len(b) != 5000 {
				t.Fatalf("silent: the kernel no longer finds %s (reads %d bytes); no indicator", p, len(b))
			}
			// indelible diff looks the path up as the kernel does.
			_, err := layout.LookupPath(bytes.NewReader(r.img.b), p)
			if kernelMisses := len(b) != 5000; kernelMisses != errors.Is(err, layout.ErrNotFound) {
				t.Fatalf("the kernel reads %d bytes of %s, layout.LookupPath says %v", len(b), p, err)
			}
		})
	}
}

// rt3EditDxRoot has the host write the dx_root of p's directory edited by
// edit, its dx_tail checksum made again.
func rt3EditDxRoot(t *testing.T, r *rig, p string, edit func(b []byte)) []revfs.Violation {
	le := binary.LittleEndian
	f := r.e.byIno[uint64(r.ids[p])]
	d := f.parent
	if d == nil {
		t.Fatal("no parent tracked")
	}
	m := d.view.maps[0]
	off := int64(m.Physical) * r.bs
	b := bytes.Clone(r.img.b[off : off+r.bs])
	if b[0x1D] != 8 {
		t.Fatalf("block 0 of %s is no dx_root (info_length %d)", filepath.Dir(p), b[0x1D])
	}
	t.Logf("dx_root hash version %d, levels %d, count %d", b[0x1C], b[0x1E], le.Uint16(b[0x22:]))
	edit(b)
	if r.e.sb.HasMetadataCsum() {
		limit, count := int(le.Uint16(b[0x20:])), int(le.Uint16(b[0x22:]))
		tail := 0x20 + limit*8
		in := d.view.inode
		seed := layout.InodeSeed(r.e.fsSeed, uint32(d.ino), in.Generation)
		c := layout.Crc32c(seed, b[:0x20+count*8])
		c = layout.Crc32c(c, b[tail:tail+4])
		c = layout.Crc32c(c, []byte{0, 0, 0, 0})
		le.PutUint32(b[tail+4:], c)
	}
	return r.write(off, b)
}

// TestRedTeam3GroupDescFlags: the protected inode's group descriptor
// rewritten with bg_flags INODE_UNINIT, or bg_itable_unused covering the
// protected inode (debugfs set_bg, descriptor checksum recomputed). The
// engine checks only where a descriptor puts the bitmaps and the inode
// table. What the kernel does at its next mount decides: if it no longer
// reads the file as sealed, an indicator is due.
func TestRedTeam3GroupDescFlags(t *testing.T) {
	const p = "var/log/app.log"
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tc := range []struct {
		name string
		cmds func(r *rig) []string
	}{
		{"INODE_UNINIT", func(r *rig) []string { return []string{"set_bg 0 flags 0x5", "set_bg 0 checksum calc"} }},
		{"itable_unused over the inode", func(r *rig) []string {
			ipg := r.e.sb.InodesPerGroup
			return []string{"set_bg 0 itable_unused " + itoa(int(ipg)-int(r.ids[p])+1), "set_bg 0 checksum calc"}
		}},
		{"BLOCK_UNINIT", func(r *rig) []string { return []string{"set_bg 0 flags 0x6", "set_bg 0 checksum calc"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
			next := r.debugfs(tc.cmds(r)...)
			vs := r.feed(next, changedBlocks(r.img.b, next, r.bs))
			r.e.Flushed()
			vs = append(vs, r.e.FlushViolations()...)
			b, _ := rt3KernelRead(t, bytes.Clone(r.img.b), p)
			t.Logf("engine: %v; the kernel reads %d bytes", vs, len(b))
			if len(vs) == 0 && !bytes.Equal(b, seqContent(5000)) {
				t.Fatalf("silent: the kernel reads %d bytes of %s, not the 5000 sealed; no indicator", len(b), p)
			}
		})
	}
}

// TestRedTeam3TidJumpAtHead: the attacker writes the journal superblock
// with s_head (unused while the log is live) pointing far ahead in the log,
// and there a transaction of tid S+1000, valid checksums, growing the
// protected file (its data written home). The engine finds it by s_head
// (journal.find's candidates) and applies it; the kernel's recovery walks
// from s_start, tid by tid, and never reaches it (tid gap): the host keeps
// the smaller size while the device follows, and may seal, the forged
// growth. Worse, the engine now expects tid S+1001, so every real commit
// of the kernel (tids S+1, S+2, ...) is taken for an old commit block
// rewritten and ignored (journal.process: tidBefore(c.seq, j.seq)).
// Secure: an indicator, or the forged transaction not applied and the
// kernel's next commit followed.
func TestRedTeam3TidJumpAtHead(t *testing.T) {
	const p = "var/log/app.log"
	v3 := jbd2.FeatureIncompatRevoke | jbd2.FeatureIncompat64Bit | jbd2.FeatureIncompatCsumV3
	r := openRig(t, mountedJournal(t, "b4k-journal.img", v3, 0), map[string]int64{p: 5000}, p)
	r.writeBlocks(p, 0, 1)
	w := newCsumTx(r)
	s0 := w.seq
	home, blk := r.inodeBlockWith(p, setSizeTo(6000))
	cpos := w.log([]uint64{home}, [][]byte{blk})
	r.e.Flushed()
	if vs, _ := w.commit(cpos); len(vs) != 0 {
		t.Fatalf("legit growth: %v", vs)
	}
	r.e.Flushed()
	kpos, kseq := w.pos, w.seq // where the kernel writes its next transaction
	var all []revfs.Violation
	// The journal superblock: same start and tid, s_head far ahead.
	far := kpos + 100
	off, jsb := rt3JSB(r, r.e.jnl.sb.Start(), s0)
	binary.BigEndian.PutUint32(jsb[0x58:], far) // s_head
	if jsb[0x50] == jbd2.ChecksumTypeCRC32C {
		var zero [4]byte
		binary.BigEndian.PutUint32(jsb[0xFC:], layout.Crc32c(layout.Crc32c(layout.Crc32c(^uint32(0), jsb[:0xFC]), zero[:]), jsb[0x100:jbd2.SuperblockSize]))
	}
	all = append(all, r.write(off, jsb)...)
	r.e.Flushed()
	all = append(all, r.e.FlushViolations()...)
	// The forged transaction at s_head.
	fw := &csumTx{r: r, sb: w.sb, seed: w.seed, pos: far, seq: s0 + 1000}
	_, fblk := r.inodeBlockWith(p, setSizeTo(8000))
	fpos := fw.log([]uint64{home}, [][]byte{fblk})
	r.e.Flushed()
	cv, _ := fw.commit(fpos)
	all = append(all, cv...)
	r.e.Flushed()
	all = append(all, r.e.FlushViolations()...)
	afterForged := r.state(p)
	img := r.withNeedsRecovery(true)
	seen := rt3AuditSees(t, img, r.ids[p])
	if kb, ok := rt3KernelRead(t, img, p); ok {
		seen = kb
	}
	t.Logf("after the forged transaction: violations %v; engine size %d; the host's kernel (recovery) shows %d bytes", all, afterForged.Size, len(seen))
	// The kernel's own next transaction, tid S+1 where it expects it:
	// a growth to 7000.
	kw := &csumTx{r: r, sb: w.sb, seed: w.seed, pos: kpos, seq: kseq}
	_, kblk := r.inodeBlockWith(p, func(raw []byte) {
		binary.LittleEndian.PutUint32(raw[4:], 7000)
	})
	// inodeBlockWith reads the image's home block (size 5000 there): this is
	// what the kernel logs.
	kcpos := kw.log([]uint64{home}, [][]byte{kblk})
	r.e.Flushed()
	kv, _ := kw.commit(kcpos)
	all = append(all, kv...)
	r.e.Flushed()
	all = append(all, r.e.FlushViolations()...)
	st := r.state(p)
	t.Logf("after the kernel's next commit (size 7000): violations %v; engine size %d", all, st.Size)
	// And a truncation below the sealed 5000 bytes, committed through the
	// journal: judged at its commit block before the jump.
	_, tblk := r.inodeBlockWith(p, setSizeTo(100))
	tcpos := kw.log([]uint64{home}, [][]byte{tblk})
	r.e.Flushed()
	tv, _ := kw.commit(tcpos)
	r.e.Flushed()
	tv = append(tv, r.e.FlushViolations()...)
	t.Logf("a truncation to 100 bytes committed by tid %d: violations %v", kseq+1, tv)
	all = append(all, tv...)
	if len(all) == 0 && (afterForged.Size != int64(len(seen)) || st.Size != 7000) {
		t.Fatalf("silent: the engine took the forged tid %d (size %d) that the kernel never replays (it shows %d bytes), and then ignored the kernel's own commit (engine size %d, want 7000)",
			s0+1000, afterForged.Size, len(seen), st.Size)
	}
}

// TestRedTeam3DirentFileType: the protected file's directory entry gets
// file_type 2 (directory), its dirent tail checksum recomputed. The kernel
// takes the type of an opened file from its inode, so open and read still
// work, but readdir reports DT_DIR: tools that trust d_type (Go's
// os.ReadDir IsDir, shippers walking the directory by type) see a
// directory, and descending into it fails with ENOTDIR (GNU find stats it
// and still lists it). Low impact, but the entry that defines the
// protected path changed with no indicator. Secure: an indicator.
func TestRedTeam3DirentFileType(t *testing.T) {
	const p = "var/log/app.log"
	le := binary.LittleEndian
	r := openRig(t, loadImage(t, "b4k-journal.img"), map[string]int64{p: 5000}, p)
	f := r.e.byIno[uint64(r.ids[p])]
	d := f.parent
	blk := d.view.entryBlock[uint32(f.ino)]
	off := int64(blk) * r.bs
	b := bytes.Clone(r.img.b[off : off+r.bs])
	found := false
	for at := 0; at+8 <= len(b); {
		ino, rl, nl := le.Uint32(b[at:]), int(le.Uint16(b[at+4:])), int(b[at+6])
		if ino == uint32(f.ino) && string(b[at+8:at+8+nl]) == "app.log" {
			if b[at+7] != layout.FileTypeRegular {
				t.Fatalf("file_type %d", b[at+7])
			}
			b[at+7] = layout.FileTypeDir
			found = true
			break
		}
		if rl < 8 {
			break
		}
		at += rl
	}
	if !found {
		t.Fatal("entry not found")
	}
	if layout.HasDirTail(b) {
		n := len(b) - layout.DirTailSize
		seed := layout.InodeSeed(r.e.fsSeed, uint32(d.ino), d.view.inode.Generation)
		le.PutUint32(b[n+8:], layout.TailChecksum(seed, b, n))
	}
	vs := r.write(off, b)
	r.e.Flushed()
	vs = append(vs, r.e.FlushViolations()...)
	if os.Geteuid() == 0 {
		path := filepath.Join(t.TempDir(), "k.img")
		if err := os.WriteFile(path, r.img.b, 0o644); err != nil {
			t.Fatal(err)
		}
		m := newLoopMount(t, path, "")
		out := runCmd(t, "find", filepath.Join(m.dir, "var/log"), "-type", "f")
		ents, _ := os.ReadDir(filepath.Join(m.dir, "var/log"))
		for _, e := range ents {
			if e.Name() == "app.log" {
				t.Logf("readdir: app.log is a directory: %v", e.IsDir())
			}
		}
		t.Logf("find -type f: %q", out)
		m.unmount()
	}
	if len(vs) == 0 {
		t.Fatalf("silent: the protected file's entry now says directory; no indicator")
	}
	t.Logf("raised %s", kinds(vs))
}

// A revoke record naming a protected file's extent leaf whose applied copy
// was never written home, while the inode still uses it: a recovery would
// read the leaf's old home bytes (zeroes here: the host gets EIO). Found
// by a review; raised by checkRevokes.
func TestRedTeam3RevokeExtentLeafStillUsed(t *testing.T) {
	const p = "var/log/app.log"
	le := binary.LittleEndian
	v3 := jbd2.FeatureIncompatRevoke | jbd2.FeatureIncompat64Bit | jbd2.FeatureIncompatCsumV3
	r := openRig(t, mountedJournal(t, "b4k-journal.img", v3, 0), map[string]int64{p: 5000}, p)
	f := r.e.byIno[uint64(r.ids[p])]
	xs := rt2RootExtents(t, r, p)
	L := r.e.blocks - 7
	for _, c := range r.img.b[int64(L)*r.bs : int64(L+1)*r.bs] {
		if c != 0 {
			t.Fatalf("block %d not free-looking", L)
		}
	}
	gen := le.Uint32(r.img.b[int64(f.inoBlock)*r.bs+int64(f.inoOff)+0x64:])
	leaf := make([]byte, r.bs)
	max := uint16((r.bs - 12) / 12)
	le.PutUint16(leaf[0:], layout.ExtentMagic)
	le.PutUint16(leaf[2:], uint16(len(xs)))
	le.PutUint16(leaf[4:], max)
	for i, x := range xs {
		e := leaf[12+12*i:]
		le.PutUint32(e[0:], x.Block)
		le.PutUint16(e[4:], x.Len)
		le.PutUint16(e[6:], x.StartHi)
		le.PutUint32(e[8:], x.StartLo)
	}
	if r.e.sb.HasMetadataCsum() {
		off := layout.ExtentTailOffset(max)
		le.PutUint32(leaf[off:], layout.TailChecksum(layout.InodeSeed(r.e.fsSeed, uint32(f.ino), gen), leaf, off))
	}
	home, blk := r.inodeBlockWith(p, func(raw []byte) {
		le.PutUint32(raw[4:], 6000)
		ib := raw[0x28 : 0x28+60]
		clear(ib)
		le.PutUint16(ib[0:], layout.ExtentMagic)
		le.PutUint16(ib[2:], 1)
		le.PutUint16(ib[4:], 4)
		le.PutUint16(ib[6:], 1)
		le.PutUint32(ib[12:], 0)
		le.PutUint32(ib[16:], uint32(L))
		le.PutUint16(ib[20:], uint16(L>>32))
	})
	r.writeBlocks(p, 0, 1)
	w := newCsumTx(r)
	cpos := w.log([]uint64{home, L}, [][]byte{blk, leaf})
	r.e.Flushed()
	if vs, _ := w.commit(cpos); len(vs) != 0 {
		t.Fatalf("T1: %v", vs)
	}
	r.e.Flushed()
	st := r.state(p)
	t.Logf("after T1: %+v tree %v", st, r.e.byIno[f.ino].view.tree)
	r.e.SetCommitted(r.ids[p], 6000)
	var all []revfs.Violation
	all = append(all, r.write(w.blockAt(w.pos), rt3RevokeBlock(w, L))...)
	cv, _ := w.commit(w.pos + 1)
	all = append(all, cv...)
	r.e.Flushed()
	all = append(all, r.e.FlushViolations()...)
	img := r.withNeedsRecovery(true)
	if kb, ok := rt3KernelRead(t, img, p); ok {
		t.Logf("kernel reads %d bytes", len(kb))
	}
	t.Logf("violations after revoking the leaf: %v", all)
	raised := false
	for _, v := range all {
		raised = raised || v.Kind == revfs.KindLayoutChanged && strings.Contains(v.Detail, "still uses")
	}
	if !raised {
		t.Fatalf("a revoke of a leaf the inode still uses, never written home: %v, want %v", all, revfs.KindLayoutChanged)
	}
}
