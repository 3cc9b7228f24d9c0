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
	m.dev = strings.TrimSpace(runCmd(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() {
		if m.up {
			exec.Command("umount", m.dir).Run()
		}
		exec.Command("losetup", "-d", m.dev).Run()
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
	}
	check := func(when string) {
		for _, p := range k.files {
			st := k.r.state(p)
			if st.Coherent > int64(len(real[p])) {
				k.t.Fatalf("round %d %s: %s coherent %d beyond the real size %d", k.rounds, when, p, st.Coherent, len(real[p]))
			}
			from := k.verified[p]
			if st.Coherent > from {
				got := make([]byte, st.Coherent-from)
				if err := k.r.e.ReadFile(st.ID, got, from); err != nil {
					k.t.Fatalf("round %d %s: ReadFile %s: %v", k.rounds, when, p, err)
				}
				if !bytes.Equal(got, real[p][from:st.Coherent]) {
					i := 0
					for i < len(got) && got[i] == real[p][from+int64(i)] {
						i++
					}
					k.t.Fatalf("round %d %s: %s coherent bytes [%d,%d) differ from the kernel's at %d", k.rounds, when, p, from, st.Coherent, from+int64(i))
				}
				k.verified[p] = st.Coherent
			}
		}
	}
	for _, b := range order {
		off := int64(b) * k.r.bs
		if vs := k.r.write(off, bytes.Clone(next[off:off+k.r.bs])); len(vs) > 0 {
			k.t.Fatalf("round %d: block %d raised %v", k.rounds, b, vs)
		}
		if k.shuffle {
			check(fmt.Sprintf("after block %d", b))
		}
	}
	k.r.e.Flushed()
	check("after the flush")
	// Seal what is coherent: later rounds must keep it intact.
	for _, p := range k.files {
		st := k.r.state(p)
		k.r.e.SetCommitted(st.ID, st.Coherent)
	}
}

// appendOnce appends n bytes to p with one of the ways programs append.
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
			t.Logf("seed %d", seed)
			k := &kernelRun{t: t, r: r, rng: rand.New(rand.NewPCG(seed, 1)), files: files, shuffle: tc.shuffle,
				verified: map[string]int64{"var/log/app.log": 5000}}
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
					t.Errorf("%s after unmount: %+v (verified %d)", p, st, k.verified[p])
				}
				f := r.e.byIno[uint64(st.ID)]
				t.Logf("%s: %d bytes in %d extents, tree depth %d, journalled %v data-journalled %v",
					p, st.Size, len(f.view.maps), depth(f), st.Journalled, st.DataJournalled)
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
				verified: map[string]int64{"var/log/app.log": 5000, "var/log/big.log": 70000}}
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
				k.appendOnce("var/log/app.log", 100+round)
				k.m.sync()
				k.round()
				if round == 4 {
					k.m.unmount()
					k.round()
					k.m.mount()
					k.round()
				}
			}
			k.m.unmount()
			k.round()
			for _, p := range files {
				if st := r.state(p); st.Coherent != st.Size {
					t.Errorf("%s: %+v", p, st)
				}
			}
		})
	}
}

var _ = revfs.KindDataChanged
