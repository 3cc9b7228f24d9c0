package ext4

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// loopMount attaches img to a loop device and mounts it with opts; both are
// undone at cleanup, even on failure.
type loopMount struct {
	t    testing.TB
	img  string
	dev  string
	dir  string
	opts string
	up   bool
}

func newLoopMount(t testing.TB, img, opts string) *loopMount {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "losetup")
	m := &loopMount{t: t, img: img, dir: filepath.Join(t.TempDir(), "mnt"), opts: opts}
	if err := os.Mkdir(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m.dev = testenv.AttachLoop(t, img)
	t.Cleanup(func() { // runs before the detach AttachLoop registered
		if m.up {
			exec.Command("umount", m.dir).Run()
		}
	})
	m.mount()
	return m
}

func (m *loopMount) mount() {
	args := []string{"-t", "ext4"}
	if m.opts != "" {
		args = append(args, "-o", m.opts)
	}
	runCmd(m.t, "mount", append(args, m.dev, m.dir)...)
	m.up = true
}

func (m *loopMount) unmount() {
	runCmd(m.t, "umount", m.dir)
	m.up = false
}

func (m *loopMount) sync() { runCmd(m.t, "sync", "-f", m.dir) }

// kernelRun drives one image through the real kernel and the engine.
type kernelRun struct {
	t        *testing.T
	m        *loopMount
	r        *rig
	rng      *rand.Rand
	files    []string // protected paths
	shuffle  bool
	verified map[string]int64
	real     map[string][]byte
	lastSize map[string]int64
	rounds   int
	fill     int
}

// round diffs the kernel's image against the engine's copy and feeds the
// changed blocks (block order, or shuffled with a flush only at the end).
// No violation may arise, and after every block the coherent prefix of
// every file must read back exactly what the kernel holds.
func (k *kernelRun) round() {
	k.t.Helper()
	k.rounds++
	if k.m.up {
		// Unmounted, the files keep what they held at the last round.
		k.real = map[string][]byte{}
		for _, p := range k.files {
			b, err := os.ReadFile(filepath.Join(k.m.dir, p))
			if err != nil {
				k.t.Fatal(err)
			}
			k.real[p] = b
		}
	}
	real := k.real
	next, err := os.ReadFile(k.m.img)
	if err != nil {
		k.t.Fatal(err)
	}
	order := changedBlocks(k.r.img.b, next, k.r.bs)
	if k.shuffle {
		k.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		// One order the shuffle keeps: at mount jbd2 writes the journal
		// superblock (which may switch on checksums and 64-bit tags)
		// with FUA before the first transaction.
		if j := k.r.e.jnl; j != nil {
			sbBlock, _ := j.physOf(0)
			for i, b := range order {
				if b == sbBlock {
					copy(order[1:i+1], order[:i])
					order[0] = sbBlock
					break
				}
			}
		}
	}
	// Mid-round (shuffled), the block that held last round's partial
	// tail may still be claimed with its previous version: the engine
	// only promises "written since allocation" for it (the device core's
	// quiescence window covers the rest). Every other byte must be exact,
	// and after the flush all of them.
	exempt := map[string]int64{}
	fed := map[uint64]bool{}
	for _, p := range k.files {
		exempt[p] = k.lastSize[p] / k.r.bs * k.r.bs
	}
	check := func(when string, final bool) {
		for _, p := range k.files {
			st := k.r.state(p)
			if st.Coherent > int64(len(real[p])) {
				k.t.Fatalf("round %d %s: %s coherent %d beyond the real size %d", k.rounds, when, p, st.Coherent, len(real[p]))
			}
			from := k.verified[p]
			if st.Coherent <= from {
				continue
			}
			got := make([]byte, st.Coherent-from)
			if err := k.r.e.ReadFile(st.ID, got, from); err != nil {
				k.t.Fatalf("round %d %s: ReadFile %s: %v", k.rounds, when, p, err)
			}
			f := k.r.e.byIno[uint64(st.ID)]
			for i := range got {
				at := from + int64(i)
				if !final {
					if k.r.e.jnl != nil {
						// With a journal, only the order the kernel
						// gives (data, flush, commit) makes a committed
						// size exact; a shuffle inside one flush interval
						// breaks it, so only the state after the flush is
						// held exact.
						break
					}
					// Blocks past last round's size that were not fed
					// yet this round hold what the host wrote before
					// (the old partial tail, or blocks ext4 zeroed past
					// the end of file): "written since allocation" is
					// all the engine promises for them between flushes.
					if at >= exempt[p] {
						m, _ := f.view.lookup(uint64(at / k.r.bs))
						if !fed[m.Physical+uint64(at/k.r.bs)-m.Logical] {
							continue
						}
					}
				}
				if got[i] != real[p][at] {
					k.t.Fatalf("round %d %s: %s coherent bytes [%d,%d) differ from the kernel's at %d\n%s", k.rounds, when, p, from, st.Coherent, at, explain(k.r, p))
				}
			}
			if final {
				k.verified[p] = st.Coherent
			}
		}
	}
	for _, b := range order {
		off := int64(b) * k.r.bs
		if os.Getenv("EXT4_DEBUG") != "" {
			jb, inj := uint32(0), false
			if k.r.e.jnl != nil {
				jb, inj = k.r.e.jnl.jblockOf(b)
			}
			k.t.Logf("feed block %d (seq %d) journal %v/%d overlay %d", b, k.r.e.seq+1, inj, jb, len(k.r.e.overlay))
		}
		fed[b] = true
		if vs := k.r.write(off, bytes.Clone(next[off:off+k.r.bs])); len(vs) > 0 {
			k.t.Logf("%s", explainJournal(k.r))
			k.t.Fatalf("round %d: block %d raised %v", k.rounds, b, vs)
		}
		if k.shuffle {
			check(fmt.Sprintf("after block %d", b), false)
		}
	}
	k.r.e.Flushed()
	check("after the flush", true)
	for _, p := range k.files {
		k.lastSize[p] = int64(len(real[p]))
	}
	for _, p := range k.files {
		st := k.r.state(p)
		k.t.Logf("round %d: %s real %d size %d coherent %d (%d blocks fed)", k.rounds, p, len(real[p]), st.Size, st.Coherent, len(order))
		if os.Getenv("EXT4_DEBUG") != "" {
			k.t.Logf("%s", explain(k.r, p))
		}
	}
	// Seal what is coherent: later rounds must keep it intact.
	for _, p := range k.files {
		st := k.r.state(p)
		k.r.e.SetCommitted(st.ID, st.Coherent)
	}
}

// appendOnce appends n bytes to p with one of the ways programs append.
// remount unmounts and mounts the image again, a round after each.
func (k *kernelRun) remount() {
	k.m.unmount()
	k.round()
	k.m.mount()
	k.round()
}

// unmountCoherent unmounts (the kernel checkpoints and cleans the
// journal), runs a last round, and checks every file became coherent.
func (k *kernelRun) unmountCoherent() {
	k.t.Helper()
	k.m.unmount()
	k.round()
	for _, p := range k.files {
		if st := k.r.state(p); st.Coherent != st.Size {
			k.t.Errorf("%s: %+v", p, st)
		}
	}
}

func (k *kernelRun) appendOnce(p string, n int) {
	k.t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte('a' + k.rng.IntN(26))
		if k.rng.IntN(40) == 0 {
			data[i] = '\n'
		}
	}
	path := filepath.Join(k.m.dir, p)
	switch k.rng.IntN(4) {
	case 0: // shell >>
		cmd := exec.Command("sh", "-c", `cat >> "$0"`, path)
		cmd.Stdin = bytes.NewReader(data)
		if out, err := cmd.CombinedOutput(); err != nil {
			k.t.Fatalf("sh append: %v %s", err, out)
		}
	case 1, 2: // O_APPEND, fsync or not
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			k.t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			k.t.Fatal(err)
		}
		if k.rng.IntN(2) == 0 {
			f.Sync()
		}
		f.Close()
	default: // seek to the end
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			k.t.Fatal(err)
		}
		if _, err := f.Seek(0, 2); err != nil {
			k.t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			k.t.Fatal(err)
		}
		f.Close()
	}
}

// otherAllocation allocates blocks for an unprotected file between
// appends, so the protected files fragment into many extents.
func (k *kernelRun) otherAllocation() {
	k.fill++
	path := filepath.Join(k.m.dir, fmt.Sprintf("fill%d", k.fill))
	f, err := os.Create(path)
	if err != nil {
		k.t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte{'z'}, 3*int(k.r.bs)))
	f.Sync()
	f.Close()
}

func TestKernelAppends(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mount")
	for _, tc := range []struct {
		name, img, opts string
		shuffle         bool
	}{
		{"ordered-4k", "b4k-journal.img", "data=ordered", false},
		{"ordered-4k-shuffled", "b4k-journal.img", "data=ordered", true},
		{"journal-4k", "b4k-journal-data.img", "data=journal", false},
		{"journal-4k-shuffled", "b4k-journal-data.img", "data=journal", true},
		{"writeback-4k", "b4k-journal.img", "data=writeback", false},
		{"nojournal-4k", "b4k-nojournal.img", "", false},
		{"nojournal-4k-shuffled", "b4k-nojournal.img", "", true},
		{"ordered-1k", "b1k-journal.img", "data=ordered", false},
		{"journal-1k", "b1k-journal.img", "data=journal", false},
		{"nojournal-1k-shuffled", "b1k-nojournal.img", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := loadImage(t, tc.img)
			files := []string{"var/log/empty.log", "var/log/app.log"}
			r := openRig(t, img, map[string]int64{"var/log/app.log": 5000}, files...)
			seed := uint64(time.Now().UnixNano())
			if s := os.Getenv("EXT4_SEED"); s != "" {
				fmt.Sscan(s, &seed)
			}
			t.Logf("seed %d", seed)
			k := &kernelRun{t: t, r: r, rng: rand.New(rand.NewPCG(seed, 1)), files: files, shuffle: tc.shuffle,
				verified: map[string]int64{"var/log/app.log": 5000}, lastSize: map[string]int64{"var/log/app.log": 5000}}
			k.m = newLoopMount(t, img, tc.opts)
			sizes := []int{1, 7, 100, 511, 4095, 4096, 4097, 1000, 30000, 65536, 9000, 123457}
			total := 0
			for round := 0; total < 1<<20 && round < 40; round++ {
				for _, p := range files {
					n := sizes[k.rng.IntN(len(sizes))]
					if tc.img[:3] == "b1k" {
						n = min(n, 20000) // the 8 MiB image
					}
					total += n
					k.appendOnce(p, n)
				}
				if round%2 == 0 {
					k.otherAllocation()
				}
				k.m.sync()
				k.round()
			}
			// Unmount (checkpoint, clean journal): everything becomes coherent.
			k.m.unmount()
			k.round()
			for _, p := range files {
				st := r.state(p)
				if st.Coherent != st.Size || st.Size != k.verified[p] {
					t.Errorf("%s after unmount: %+v (verified %d)\n%s", p, st, k.verified[p], explain(r, p))
				}
				f := r.e.byIno[uint64(st.ID)]
				t.Logf("%s: %d bytes in %d extents, tree depth %d, journalled %v data-journalled %v",
					p, st.Size, len(f.view.maps), depth(f), st.Journalled, st.DataJournalled)
			}
			// A restart: a new engine on the same image and written set,
			// with the sealed watermarks, resumes where the old one was.
			committed := map[revfs.FileID]int64{}
			var pf []revfs.ProtectedFile
			for _, p := range files {
				committed[r.ids[p]] = k.verified[p]
				pf = append(pf, revfs.ProtectedFile{ID: r.ids[p], Path: p})
			}
			e2, err := Open(r.img, int64(len(r.img.b)), pf, r.written, Options{Committed: committed})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			for _, st := range e2.Files() {
				if st.Coherent != committed[st.ID] || st.Size != committed[st.ID] {
					t.Errorf("after restart: %+v, committed %d", st, committed[st.ID])
				}
			}
			// The long file must have outgrown the inode's 4 extents.
			if f := r.e.byIno[uint64(r.ids["var/log/empty.log"])]; len(f.view.tree) == 0 {
				t.Logf("note: no extent tree block was needed (%d extents)", len(f.view.maps))
			}
		})
	}
}

func depth(f *tracked) int {
	if f.view.inode == nil {
		return -1
	}
	return int(uint16(f.view.inode.Block[6]) | uint16(f.view.inode.Block[7])<<8)
}

// TestKernelJournalledCopiesCount: in data=journal the commit block is the
// point of coherence, so an append the host has fsynced is coherent from
// its copies in the journal alone, whenever the kernel writes the file's
// blocks home. Each round feeds the engine the blocks the kernel wrote into
// the journal, then a FLUSH, and only then the home blocks.
// TestKernelAppends cannot show this: it feeds every changed block, home
// ones included, and reaches coherence from those too.
func TestKernelJournalledCopiesCount(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mount")
	img := loadImage(t, "b4k-journal-data.img")
	const p = "var/log/app.log"
	r := openRig(t, img, map[string]int64{p: 5000}, p)
	m := newLoopMount(t, img, "data=journal")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for round := range 4 {
		data := make([]byte, 3*4096+123*(round+1))
		for i := range data {
			data[i] = byte('a' + rng.IntN(26))
		}
		f, err := os.OpenFile(filepath.Join(m.dir, p), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		real, err := os.ReadFile(filepath.Join(m.dir, p))
		if err != nil {
			t.Fatal(err)
		}
		next, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		var home, logged []uint64
		for _, b := range changedBlocks(r.img.b, next, r.bs) {
			if _, in := r.e.jnl.jblockOf(b); in {
				logged = append(logged, b)
				continue
			}
			if olderCheckpoint(t, r, p, next, b, len(real)) {
				// The kernel wrote it before this round's commit: fed
				// first, as it came.
				if vs := r.write(int64(b)*r.bs, bytes.Clone(next[int64(b)*r.bs:int64(b+1)*r.bs])); len(vs) > 0 {
					t.Fatalf("round %d: older checkpoint of block %d raised %v", round, b, vs)
				}
				continue
			}
			home = append(home, b)
		}
		inJournal := len(logged)
		for _, b := range logged {
			if vs := r.write(int64(b)*r.bs, bytes.Clone(next[int64(b)*r.bs:int64(b+1)*r.bs])); len(vs) > 0 {
				t.Fatalf("round %d: journal block %d raised %v", round, b, vs)
			}
		}
		r.e.Flushed()
		st := r.state(p)
		t.Logf("round %d: %d journal blocks fed, %d home blocks held back; size %d coherent %d of %d",
			round, inJournal, len(home), st.Size, st.Coherent, len(real))
		if st.Coherent != int64(len(real)) {
			t.Fatalf("round %d: with the transaction committed in the journal, coherent %d of %d bytes: the journalled copies did not count\n%s",
				round, st.Coherent, len(real), explainJournal(r))
		}
		got := make([]byte, len(real))
		if err := r.e.ReadFile(st.ID, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, real) {
			t.Fatalf("round %d: the coherent bytes, read from the journal's copies, differ from the file", round)
		}
		r.e.SetCommitted(st.ID, st.Coherent)
		for _, b := range home {
			if vs := r.write(int64(b)*r.bs, bytes.Clone(next[int64(b)*r.bs:int64(b+1)*r.bs])); len(vs) > 0 {
				t.Fatalf("round %d: home block %d raised %v", round, b, vs)
			}
		}
		r.e.Flushed()
		if st := r.state(p); st.Coherent != int64(len(real)) {
			t.Fatalf("round %d: after the home writes, coherent %d of %d", round, st.Coherent, len(real))
		}
	}
}

// olderCheckpoint reports whether home block b of image next holds p's
// inode with a size below n, the file's size after this round: a
// checkpoint of an earlier round's transaction, which the kernel wrote
// while this round's was running, before its commit. Held back to after
// the commit, it would be fed as newer than the commit (a size going
// back), an order the kernel never produces.
func olderCheckpoint(t *testing.T, r *rig, p string, next []byte, b uint64, n int) bool {
	f := r.e.byIno[uint64(r.ids[p])]
	if b != f.inoBlock {
		return false
	}
	raw := next[int64(b)*r.bs+int64(f.inoOff):]
	in, err := layout.ParseInode(raw[:r.e.sb.InodeSizeBytes()])
	if err != nil {
		t.Fatalf("inode of %s in block %d: %v", p, b, err)
	}
	return in.Size() < uint64(n)
}

// TestKernelNoFalsePositives runs a mixed workload on unprotected files
// (create, rewrite, delete, a large copy, unmount and mount again) next to
// protected ones and expects nothing raised.
func TestKernelNoFalsePositives(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ name, img, opts string }{
		{"ordered", "b4k-journal.img", ""},
		{"journal", "b4k-journal-data.img", "data=journal"},
		{"nojournal-1k", "b1k-nojournal.img", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := loadImage(t, tc.img)
			files := []string{"var/log/app.log", "var/log/big.log"}
			r := openRig(t, img, map[string]int64{"var/log/app.log": 5000, "var/log/big.log": 70000}, files...)
			k := &kernelRun{t: t, r: r, rng: rand.New(rand.NewPCG(1, 2)), files: files,
				verified: map[string]int64{"var/log/app.log": 5000, "var/log/big.log": 70000}, lastSize: map[string]int64{}}
			k.m = newLoopMount(t, img, tc.opts)
			dir := k.m.dir
			for round := 0; round < 8; round++ {
				name := filepath.Join(dir, fmt.Sprintf("other%d", round))
				os.WriteFile(name, bytes.Repeat([]byte("rewrite me "), 1000+round*500), 0o644)
				os.WriteFile(filepath.Join(dir, "var/log", fmt.Sprintf("neighbour%d.log", round)), []byte("next to the protected files\n"), 0o644)
				if round > 0 {
					os.WriteFile(filepath.Join(dir, fmt.Sprintf("other%d", round-1)), []byte("shorter"), 0o644)
					os.Remove(filepath.Join(dir, "var/log", fmt.Sprintf("neighbour%d.log", round-1)))
				}
				if round == 3 {
					big := make([]byte, 2<<20)
					for i := range big {
						big[i] = byte(i * 7)
					}
					os.WriteFile(filepath.Join(dir, "copy.bin"), big, 0o644)
				}
				if round == 5 {
					os.Remove(filepath.Join(dir, "copy.bin"))
					os.Mkdir(filepath.Join(dir, "var/log/rotated"), 0o755)
				}
				if round == 1 {
					// Enough entries to turn the log directory into an
					// htree (blocks split, entries move between blocks).
					for i := 0; i < 400; i++ {
						os.WriteFile(filepath.Join(dir, "var/log", fmt.Sprintf("service-with-a-long-name-%04d.log", i)), []byte("x"), 0o644)
					}
				}
				if round == 6 {
					for i := 0; i < 400; i += 2 {
						os.Remove(filepath.Join(dir, "var/log", fmt.Sprintf("service-with-a-long-name-%04d.log", i)))
					}
					// Rotation by rename of an unprotected file next to the
					// protected ones (a protected one's is an indicator:
					// TestRenameWatched).
					os.Rename(filepath.Join(dir, "var/log/service-with-a-long-name-0001.log"), filepath.Join(dir, "var/log/service-with-a-long-name-0001.log.1"))
					os.WriteFile(filepath.Join(dir, "var/log/service-with-a-long-name-0001.log"), []byte("new file under the old name\n"), 0o644)
				}
				k.appendOnce("var/log/app.log", 100+round)
				k.m.sync()
				k.round()
				if round == 4 {
					k.remount()
				}
			}
			k.unmountCoherent()
		})
	}
}

// explain describes what the engine knows of a file, for failures.
func explain(r *rig, p string) string {
	f := r.e.byIno[uint64(r.ids[p])]
	var b strings.Builder
	fmt.Fprintf(&b, "size %d coherent %d committed %d grew %d seq %d\n", f.view.inode.Size(), f.coherent, f.committed, f.grew, r.e.seq)
	fmt.Fprintf(&b, "unknown %v tree %v err %v\n", f.view.unknown, f.view.tree, f.view.err)
	for _, m := range f.view.maps {
		missing := []uint64{}
		for i := uint64(0); i < m.Len; i++ {
			if !r.written[m.Physical+i] {
				missing = append(missing, m.Logical+i)
			}
		}
		first, _ := r.e.lastWrite.get(m.Physical)
		fmt.Fprintf(&b, "  %+v unwritten-by-host logical %v lastWrite(first)=%v\n", m, missing, first)
	}
	return b.String()
}

// TestKernelDirtyJournalAtOpen opens the engine on an image whose journal
// holds committed transactions the kernel has not checkpointed yet (the
// image copied while mounted, as after a power cut): the new size is only
// in the journal, and Open must replay it logically.
func TestKernelDirtyJournalAtOpen(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ name, img, opts string }{
		{"ordered", "b4k-journal.img", "data=ordered"},
		{"journal", "b4k-journal-data.img", "data=journal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := loadImage(t, tc.img)
			m := newLoopMount(t, img, tc.opts)
			const p = "var/log/empty.log"
			data := bytes.Repeat([]byte("appended while mounted\n"), 300)
			f, err := os.OpenFile(filepath.Join(m.dir, p), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(data)
			f.Sync() // commits the transaction; no checkpoint yet
			f.Close()
			snap, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			im, err := layout.OpenImage(bytes.NewReader(snap))
			if err != nil {
				t.Fatal(err)
			}
			ino, _ := im.Lookup(p)
			home, _, _ := im.ReadInode(ino)
			if home.Size() == uint64(len(data)) {
				t.Skip("the kernel checkpointed before the copy; nothing to replay")
			}
			written := blockSet{}
			e, err := Open(bytes.NewReader(snap), int64(len(snap)), []revfs.ProtectedFile{{ID: revfs.FileID(ino), Path: p}}, written, Options{})
			if err != nil {
				t.Fatal(err)
			}
			st := e.Files()[0]
			if st.Size != int64(len(data)) {
				t.Fatalf("size %d after replay (home inode says %d), want %d", st.Size, home.Size(), len(data))
			}
			if tc.name == "journal" {
				// The data copies are in the journal: they count as written
				// and read back from there.
				if st.Coherent != int64(len(data)) || !st.DataJournalled {
					t.Fatalf("data=journal replay: %+v", st)
				}
				got := make([]byte, len(data))
				if err := e.ReadFile(st.ID, got, 0); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("ReadFile from the journal: %v", err)
				}
			} else if st.Coherent != 0 {
				// Nothing was written since the (fresh) written set began.
				t.Fatalf("ordered replay on a fresh written set: %+v", st)
			}
			// A device that had sealed all of it restarts: the bytes the
			// recovery shows where only the journal maps them are
			// compared with the sealed ones, and are the same.
			var compared int
			sealed := func(id revfs.FileID, p []byte, off int64) error {
				compared += len(p)
				copy(p, data[off:])
				return nil
			}
			e2, err := Open(bytes.NewReader(snap), int64(len(snap)), []revfs.ProtectedFile{{ID: revfs.FileID(ino), Path: p}}, blockSet{},
				Options{Committed: map[revfs.FileID]int64{revfs.FileID(ino): int64(len(data))}, Sealed: sealed})
			if err != nil {
				t.Fatal(err)
			}
			e2.Flushed()
			if vs := e2.FlushViolations(); len(vs) != 0 || e2.Files()[0].Size != int64(len(data)) {
				t.Fatalf("honest recovery of a sealed file: %v, size %d", vs, e2.Files()[0].Size)
			}
			if compared == 0 {
				t.Fatal("no sealed byte was compared: the file's map was only in the journal")
			}
			t.Logf("compared %d sealed bytes with the recovery's", compared)
		})
	}
}

// explainJournal describes the log as the engine sees it, for failures.
func explainJournal(r *rig) string {
	j := r.e.jnl
	if j == nil {
		return "no journal"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "journal sb start %d seq %d first %d; expect %v pos %d seq %d\n", j.sb.Start(), j.sb.Sequence(), j.sb.First(), j.expect, j.pos, j.seq)
	for jb := uint32(0); jb < 24; jb++ {
		blk, _ := j.readJ(jb, nil)
		_, wrote := j.wroteAt(jb)
		fmt.Fprintf(&b, "  jblock %d wrote %v: %x\n", jb, wrote, blk[:16])
	}
	return b.String()
}

// An image with fast_commit: at mount the kernel sets the journal's
// fast-commit feature, which moves the end of the log (the fast-commit area
// takes the journal's last blocks), and clears it at unmount. Both happen
// with no transaction of the engine's live, and are no layout change.
func TestKernelFastCommit(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "tune2fs")
	img := loadImage(t, "b4k-journal.img")
	// A journal large enough for a fast-commit area beside jbd2's
	// minimum log (the image's own is that minimum: 1024 blocks, and
	// the fast-commit area takes 256 more by default).
	runCmd(t, "tune2fs", "-O", "^has_journal", img)
	runCmd(t, "tune2fs", "-J", "size=5", img)
	runCmd(t, "tune2fs", "-O", "fast_commit", img)
	files := []string{"var/log/app.log"}
	r := openRig(t, img, map[string]int64{"var/log/app.log": 5000}, files...)
	k := &kernelRun{t: t, r: r, rng: rand.New(rand.NewPCG(3, 4)), files: files,
		verified: map[string]int64{"var/log/app.log": 5000}, lastSize: map[string]int64{}}
	k.m = newLoopMount(t, img, "")
	for round := range 6 {
		k.appendOnce("var/log/app.log", 200+round)
		if round%2 == 0 {
			// fsync: a fast commit, where the kernel can make one
			f, err := os.OpenFile(filepath.Join(k.m.dir, "var/log/app.log"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Sync()
			f.Close()
		}
		k.m.sync()
		k.round()
		if round == 2 {
			k.remount()
		}
	}
	k.unmountCoherent()
}
