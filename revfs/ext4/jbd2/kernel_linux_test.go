package jbd2

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// kernelCase is one way of making and mounting an ext4 image.
type kernelCase struct {
	name    string   // also the fixture name in testdata/
	bs      int      // fs block size
	mkfs    []string // extra mkfs.ext4 arguments
	opts    string   // mount options
	journal bool     // data=journal: file data is journalled too
	want    FeatureIncompat
	compat  FeatureCompat
}

var kernelCases = []kernelCase{
	{name: "ordered-4k-csum3", bs: 4096, mkfs: []string{"-O", "metadata_csum,64bit"}, opts: "data=ordered",
		want: FeatureIncompatCsumV3 | FeatureIncompat64Bit},
	{name: "journal-4k-csum3", bs: 4096, mkfs: []string{"-O", "metadata_csum,64bit"}, opts: "data=journal", journal: true,
		want: FeatureIncompatCsumV3 | FeatureIncompat64Bit},
	{name: "writeback-4k-csum3", bs: 4096, mkfs: []string{"-O", "metadata_csum,64bit"}, opts: "data=writeback",
		want: FeatureIncompatCsumV3 | FeatureIncompat64Bit},
	{name: "journal-1k-csum3", bs: 1024, mkfs: []string{"-O", "metadata_csum,64bit"}, opts: "data=journal", journal: true,
		want: FeatureIncompatCsumV3 | FeatureIncompat64Bit},
	{name: "ordered-4k-nocsum", bs: 4096, mkfs: []string{"-O", "^metadata_csum,64bit"}, opts: "data=ordered",
		want: FeatureIncompat64Bit},
	{name: "journal-4k-csum1", bs: 4096, mkfs: []string{"-O", "^metadata_csum,^64bit"}, opts: "data=journal,journal_checksum", journal: true,
		compat: FeatureCompatChecksum},
}

// kernelImage is an ext4 image file attached to a loop device.
type kernelImage struct {
	t       *testing.T
	path    string
	bs      int
	loop    string
	mnt     string
	mounted bool
	jblocks []int64 // journal block i lives at fs block jblocks[i]
}

func newKernelImage(t *testing.T, c kernelCase) *kernelImage {
	t.Helper()
	dir := t.TempDir()
	k := &kernelImage{t: t, path: filepath.Join(dir, "fs.img"), bs: c.bs, mnt: filepath.Join(dir, "mnt")}
	if err := os.Mkdir(k.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(k.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(128 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := append([]string{"-q", "-F", "-b", strconv.Itoa(c.bs)}, c.mkfs...)
	testenv.Run(t, "mkfs.ext4", append(args, k.path)...)
	k.jblocks = journalBlocks(t, k.path)
	k.loop = testenv.AttachLoop(t, k.path)
	t.Cleanup(func() { // runs before the detach AttachLoop registered
		if k.mounted {
			if out, err := exec.Command("umount", k.mnt).CombinedOutput(); err != nil {
				t.Errorf("cleanup umount: %v %s", err, out)
			}
		}
	})
	return k
}

// journalBlocks lists the fs blocks of the journal inode, in logical order.
func journalBlocks(t *testing.T, img string) []int64 {
	t.Helper()
	out := testenv.Run(t, "debugfs", "-R", "blocks <8>", img)
	var bl []int64
	for _, f := range strings.Fields(out) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			continue // debugfs banner
		}
		bl = append(bl, n)
	}
	if len(bl) < MinJournalBlocks {
		t.Fatalf("journal inode has %d blocks:\n%s", len(bl), out)
	}
	return bl
}

func (k *kernelImage) mount(opts string) {
	k.t.Helper()
	testenv.Run(k.t, "mount", "-t", "ext4", "-o", opts, k.loop, k.mnt)
	k.mounted = true
}

func (k *kernelImage) umount() {
	k.t.Helper()
	testenv.Run(k.t, "umount", k.mnt)
	k.mounted = false
}

// snapshot reads the whole journal from the image file. The loop device
// writes through the file's page cache, so this sees what the kernel has
// written to the journal even before any checkpoint.
func (k *kernelImage) snapshot() [][]byte {
	k.t.Helper()
	f, err := os.Open(k.path)
	if err != nil {
		k.t.Fatal(err)
	}
	defer f.Close()
	snap := make([][]byte, len(k.jblocks))
	for i, fb := range k.jblocks {
		b := make([]byte, k.bs)
		if _, err := f.ReadAt(b, fb*int64(k.bs)); err != nil {
			k.t.Fatalf("read journal block %d (fs block %d): %v", i, fb, err)
		}
		snap[i] = b
	}
	return snap
}

var (
	imapRe = regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`)
	numRe  = regexp.MustCompile(`(?m)^\s*(\d+)\s*$`)
)

// inodeLocation asks debugfs where inode ino lies: inode-table block and
// byte offset in it (from the group descriptors, which never move).
func inodeLocation(t *testing.T, img string, ino uint64) (block uint64, off int) {
	t.Helper()
	out := testenv.Run(t, "debugfs", "-R", fmt.Sprintf("imap <%d>", ino), img)
	m := imapRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs imap: %s", out)
	}
	block, _ = strconv.ParseUint(m[1], 10, 64)
	o, _ := strconv.ParseUint(m[2], 16, 32)
	return block, int(o)
}

// dataBlock asks debugfs for the fs block holding file block 0 of ino.
func dataBlock(t *testing.T, img string, ino uint64) uint64 {
	t.Helper()
	out := testenv.Run(t, "debugfs", "-R", fmt.Sprintf("bmap <%d> 0", ino), img)
	m := numRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs bmap: %s", out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// appendLines appends to path the way a logger does, syncing after each.
func appendLines(t *testing.T, path string, lines []string) {
	t.Helper()
	for _, l := range lines {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(l); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		syscall.Sync()
	}
}

// TestKernelJournal mounts real ext4 images in each journal mode, appends,
// syncs, and scans the journal the kernel wrote. With JBD2_FIXTURES=dir it
// also saves each journal's used prefix and facts there (testdata/make.sh).
func TestKernelJournal(t *testing.T) {
	testenv.RequireRoot(t)
	for _, cmd := range []string{"mkfs.ext4", "debugfs", "losetup", "mount", "umount"} {
		testenv.RequireCommand(t, cmd)
	}
	for _, c := range kernelCases {
		t.Run(c.name, func(t *testing.T) {
			k := newKernelImage(t, c)
			before := k.snapshot()
			sb0, err := ParseSuperblock(before[0])
			if err != nil {
				t.Fatalf("mkfs journal superblock: %v", err)
			}
			if !sb0.Clean() || sb0.Incompat()&(FeatureIncompatCsumV3|FeatureIncompatCsumV2) != 0 {
				t.Logf("note: mkfs journal superblock %v", sb0)
			}

			k.mount(c.opts)
			// Finding: on a clean journal the kernel does not write the
			// journal superblock at mount (journal_reset defers it).
			if afterMount := k.snapshot(); !bytes.Equal(afterMount[0], before[0]) {
				t.Errorf("journal superblock rewritten at mount:\n%v\nnow\n%v", sb0, mustSB(t, afterMount[0]))
			}

			file := filepath.Join(k.mnt, "log.txt")
			lines := []string{"line 1 hello journal\n", "line 2 second append\n", strings.Repeat("x", 5000) + "\n"}
			appendLines(t, file, lines)
			var st syscall.Stat_t
			if err := syscall.Stat(file, &st); err != nil {
				t.Fatal(err)
			}
			snap := k.snapshot()
			k.umount()
			after := k.snapshot()

			facts := kernelFacts{Inode: st.Ino, Size: uint64(st.Size), DataPrefix: lines[0], Journal: c.journal}
			facts.ITable, facts.ITableOff = inodeLocation(t, k.path, st.Ino)
			facts.Data = dataBlock(t, k.path, st.Ino)

			sb, txs, next, nextSeq := checkJournal(t, snap, facts)
			// Finding: the first transaction after a clean mount starts at
			// s_first with tid s_sequence+1, and the kernel wrote the
			// superblock saying so (with its feature set) before it.
			if sb.Start() != sb0.First() || sb.Sequence() != sb0.Sequence()+1 {
				t.Errorf("first transaction after mount: start %d seq %d; want %d, %d", sb.Start(), sb.Sequence(), sb0.First(), sb0.Sequence()+1)
			}
			if sb.Incompat()&^FeatureIncompatRevoke != c.want || sb.Compat() != c.compat {
				t.Errorf("features in use %s / %s, want %s / %s", sb.Incompat(), sb.Compat(), c.want, c.compat)
			}
			t.Logf("%v: %d transactions, blocks %d..%d, next %d/%d", sb, len(txs), txs[0].Start, txs[len(txs)-1].End, next, nextSeq)

			// After a clean unmount: s_start 0, s_head the block after the
			// last commit, s_sequence past the last committed tid (ext4
			// allocates a tid at unmount that it never commits, so there is
			// a gap).
			sbu := mustSB(t, after[0])
			all, _, allNext, err := Scan(sbu, sbu.First(), sb0.Sequence()+1, readerOf(after), len(after))
			if err != nil || len(all) < len(txs) {
				t.Fatalf("rescan after umount: %d txs, %v", len(all), err)
			}
			if !sbu.Clean() || sbu.Sequence() < allNext || sbu.Head() != all[len(all)-1].End+1 {
				t.Errorf("after umount: %v head %d; log ends at %d before tid %d", sbu, sbu.Head(), all[len(all)-1].End, allNext)
			}
			if start, seq := sbu.ScanFrom(); start != sbu.Head() || seq != sbu.Sequence()+1 {
				t.Errorf("ScanFrom on a clean journal: %d/%d", start, seq)
			}

			// The second mount goes on at s_head (ext4 always sets
			// JBD2_CYCLE_RECORD since Linux 6.4) with tid s_sequence+1, and
			// writes the superblock saying so before its first descriptor.
			k.mount(c.opts)
			appendLines(t, file, []string{"line 4 after remount\n"})
			snap2 := k.snapshot()
			k.umount()
			sb2 := mustSB(t, snap2[0])
			wantStart, wantSeq := sbu.ScanFrom()
			if sb2.Start() != wantStart || sb2.Sequence() != wantSeq {
				t.Errorf("after remount: start %d seq %d; want %d, %d", sb2.Start(), sb2.Sequence(), wantStart, wantSeq)
			}
			if txs2, _, _, err := Scan(sb2, sb2.Start(), sb2.Sequence(), readerOf(snap2), len(snap2)); err != nil || len(txs2) == 0 {
				t.Errorf("scan after remount: %d txs, %v", len(txs2), err)
			}

			if dir := os.Getenv("JBD2_FIXTURES"); dir != "" {
				writeFixture(t, dir, c.name, snap[:next+1], facts)
			}
		})
	}
}

func mustSB(t *testing.T, b []byte) *Superblock {
	t.Helper()
	sb, err := ParseSuperblock(b)
	if err != nil {
		t.Fatalf("journal superblock: %v", err)
	}
	return sb
}

// TestKernelRevoke deletes a directory whose block sits in the log: the
// kernel must revoke it, so recovery does not write the stale copy over a
// block that may be reused (data=journal never revokes, ext4_forget; other
// modes revoke freed metadata). Every revoked block must be one the log
// carried, and ReplayPlan must leave it out.
func TestKernelRevoke(t *testing.T) {
	testenv.RequireRoot(t)
	for _, cmd := range []string{"mkfs.ext4", "debugfs", "losetup", "mount", "umount"} {
		testenv.RequireCommand(t, cmd)
	}
	c := kernelCase{name: "revoke", bs: 4096, mkfs: []string{"-O", "metadata_csum,64bit"}}
	k := newKernelImage(t, c)
	k.mount("data=ordered")
	dir := filepath.Join(k.mnt, "doomed")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	appendLines(t, filepath.Join(dir, "x"), []string{"x\n"})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	syscall.Sync()
	snap := k.snapshot()
	k.umount()

	sb := mustSB(t, snap[0])
	txs, _, _, err := Scan(sb, sb.Start(), sb.Sequence(), readerOf(snap), len(snap))
	if err != nil {
		t.Fatal(err)
	}
	logged := map[uint64]uint32{} // home block -> tid of its last copy
	var revoked []uint64
	for _, tx := range txs {
		for _, r := range tx.Revoked {
			if tid, ok := logged[r]; !ok || tid > tx.Sequence {
				t.Errorf("tx %d revokes block %d, which no earlier transaction logged", tx.Sequence, r)
			}
			revoked = append(revoked, r)
		}
		for _, lb := range tx.Blocks {
			logged[lb.Home] = tx.Sequence
		}
	}
	// The superblock on disk need not have the revoke feature yet: the
	// kernel sets it in memory at the first revoke and writes it later.
	if len(revoked) == 0 {
		t.Fatalf("deleting a directory revoked nothing; %d transactions", len(txs))
	}
	plan := ReplayPlan(txs)
	for _, r := range revoked {
		if lb, ok := plan[r]; ok {
			t.Errorf("revoked block %d still replayed from journal block %d", r, lb.JBlock)
		}
	}
	t.Logf("%d transactions, revoked %v", len(txs), revoked)
}
