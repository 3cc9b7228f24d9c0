package layout

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// dxQuery is one name to hash.
type dxQuery struct {
	version uint8
	seed    [4]uint32
	name    []byte
}

// debugfsHashes asks debugfs's dx_hash (e2fsprogs lib/ext2fs/dirhash.c)
// for the hashes of qs, all in one run of debugfs -f: the hash version by
// number (debugfs falls back to atoi when the name is not legacy, half_md4
// or tea), the seed as the UUID whose bytes are the seed words in this
// machine's byte order (debugfs parses it straight into its __u32[4]), the
// name quoted for debugfs's command parser (lib/ss/parse.c: "" inside
// quotes is a quote) after "--", so that a name starting with '-' is not
// an option. Names must not hold NUL, CR or LF, which end debugfs's line.
func debugfsHashes(t *testing.T, debugfs string, qs []dxQuery) [][2]uint32 {
	t.Helper()
	var cmds bytes.Buffer
	for _, q := range qs {
		var u [16]byte
		for i, w := range q.seed {
			binary.NativeEndian.PutUint32(u[4*i:], w)
		}
		h := fmt.Sprintf("%x", u)
		fmt.Fprintf(&cmds, "dx_hash -h %d -s %s-%s-%s-%s-%s -- \"%s\"\n", q.version,
			h[:8], h[8:12], h[12:16], h[16:20], h[20:], bytes.ReplaceAll(q.name, []byte(`"`), []byte(`""`)))
	}
	file := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(file, cmds.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(debugfs, "-f", file)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -f: %v\n%s", err, stderr.Bytes())
	}
	// debugfs echoes each command ("debugfs: dx_hash ...") and answers
	// "Hash of NAME is 0x... (minor 0x...)".
	var out [][2]uint32
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "Hash of ")
		if !ok {
			continue
		}
		if len(out) >= len(qs) {
			t.Fatalf("debugfs answered more than %d queries: %q", len(qs), line)
		}
		q := qs[len(out)]
		rest, ok := strings.CutPrefix(line, string(q.name)+" is ")
		var h [2]uint32
		if _, err := fmt.Sscanf(rest, "0x%x (minor 0x%x)", &h[0], &h[1]); !ok || err != nil {
			t.Fatalf("debugfs answer %d %q does not match query %q: %v", len(out), line, q.name, err)
		}
		out = append(out, h)
	}
	if len(out) != len(qs) {
		t.Fatalf("debugfs answered %d of %d queries; stderr:\n%s", len(out), len(qs), stderr.Bytes())
	}
	return out
}

// randomNames returns n distinct names of 1..255 bytes, other than "." and
// "..", drawn from the bytes ok allows; half the bytes are 0x80 or more,
// where signed and unsigned hashing differ.
func randomNames(rng *rand.Rand, n int, ok func(byte) bool) [][]byte {
	seen := map[string]bool{".": true, "..": true}
	var out [][]byte
	for len(out) < n {
		name := make([]byte, 1+rng.IntN(DirNameMax))
		for i := range name {
			for {
				b := byte(rng.IntN(128))
				if rng.IntN(2) == 0 {
					b += 128
				}
				if ok(b) {
					name[i] = b
					break
				}
			}
		}
		if !seen[string(name)] {
			seen[string(name)] = true
			out = append(out, name)
		}
	}
	return out
}

// newRand returns a generator seeded from the clock, logging the seed so a
// failure can be replayed.
func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed>>32))
}

// TestDirHashMatchesDebugfs compares DirHash with e2fsprogs' debugfs for
// every version 0..5 and random names of 1..255 bytes, under the zero seed
// (which selects the default seed) and random seeds.
func TestDirHashMatchesDebugfs(t *testing.T) {
	debugfs := testenv.RequireCommand(t, "debugfs")
	rng := newRand(t)
	names := randomNames(rng, 600, func(b byte) bool { return b != 0 && b != '\n' && b != '\r' })
	names = append(names, []byte("eof-8T#&A"), []byte("-h"), []byte(`"`), []byte(" a b "))
	seeds := [][4]uint32{{}, {rng.Uint32(), rng.Uint32(), rng.Uint32(), rng.Uint32()}, {rng.Uint32(), 0, 0, 0}}
	var qs []dxQuery
	for _, seed := range seeds {
		for v := uint8(0); v <= HashTeaUnsigned; v++ {
			for _, n := range names {
				qs = append(qs, dxQuery{v, seed, n})
			}
		}
	}
	start := time.Now()
	want := debugfsHashes(t, debugfs, qs)
	t.Logf("debugfs hashed %d names in %v", len(qs), time.Since(start))
	bad := 0
	for i, q := range qs {
		major, minor, err := DirHash(q.version, q.seed, q.name)
		if err != nil {
			t.Fatalf("DirHash(%d, %x, %q): %v", q.version, q.seed, q.name, err)
		}
		if want[i][0] == dxHashEOF<<1 && major == (dxHashEOF-1)<<1 && minor == want[i][1] {
			continue // the kernel's exception, which e2fsprogs lacks
		}
		if major != want[i][0] || minor != want[i][1] {
			if bad++; bad <= 10 {
				t.Errorf("DirHash(%d, %08x, %q) = %08x/%08x; debugfs says %08x/%08x",
					q.version, q.seed, q.name, major, minor, want[i][0], want[i][1])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d hashes differ from debugfs", bad, len(qs))
	}
}

// checkHtree walks the htree of directory dir in the image at path with
// this package's parsers and checks that every name in a leaf hashes into
// the range the index gives that leaf, so that the kernel's lookup
// (dx_probe: the last entry whose hash is at most the name's) reaches it.
// An entry's low hash bit marks a leaf that continues a run of equal hashes
// from the one before (fs/ext4/namei.c, do_split and
// ext4_htree_next_block): a leaf holds hashes h with lo&^1 <= h < hi&^1,
// and h == hi&^1 too when the next entry has the bit set. It returns the
// names it checked and the root's indirect levels.
func checkHtree(t *testing.T, path, dir string) (names, levels int) {
	t.Helper()
	im := openImageFile(t, path)
	ino, err := im.Lookup(dir)
	if err != nil {
		t.Fatal(err)
	}
	in, _, err := im.ReadInode(ino)
	if err != nil {
		t.Fatal(err)
	}
	if in.Flags&InodeFlagIndex == 0 || im.SB.FeatureCompat&CompatDirIndex == 0 {
		t.Fatalf("%s is not an htree (inode flags %v, features %v)", dir, in.Flags, im.SB.Features())
	}
	maps, _, err := im.FileMap(in)
	if err != nil {
		t.Fatal(err)
	}
	read := func(lb uint32) []byte {
		t.Helper()
		for _, m := range maps {
			if uint64(lb) >= m.Logical && uint64(lb) < m.Logical+m.Len {
				b, err := im.ReadBlock(m.Physical + uint64(lb) - m.Logical)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
		t.Fatalf("%s: logical block %d is not mapped", dir, lb)
		return nil
	}
	root, err := ParseDxRoot(read(0))
	if err != nil {
		t.Fatal(err)
	}
	version, err := im.SB.DirHashVersion(root.Info.HashVersion)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: root hash version %d, s_flags %#x: hashing with version %d, seed %08x, %d indirect levels",
		dir, root.Info.HashVersion, im.SB.Flags, version, im.SB.HashSeed, root.Info.IndirectLevels)
	seen := map[uint32]bool{0: true}
	var walk func(block0 uint32, entries []DxEntry, depth int, lo, hi uint64)
	walk = func(block0 uint32, entries []DxEntry, depth int, lo, hi uint64) {
		for i := -1; i < len(entries); i++ {
			clo, chi, blk := lo, hi, block0
			if i >= 0 {
				clo, blk = uint64(entries[i].Hash), entries[i].Block
			}
			if i+1 < len(entries) {
				chi = uint64(entries[i+1].Hash)
			}
			if seen[blk] {
				t.Fatalf("%s: block %d reached twice", dir, blk)
			}
			seen[blk] = true
			b := read(blk)
			if depth > 0 {
				_, b0, es, err := ParseDxNode(b)
				if err != nil {
					t.Fatalf("%s: dx node at logical block %d: %v", dir, blk, err)
				}
				walk(b0, es, depth-1, clo, chi)
				continue
			}
			des, err := ParseDirBlock(b)
			if err != nil {
				t.Fatalf("%s: leaf at logical block %d: %v", dir, blk, err)
			}
			for _, e := range LiveEntries(des) {
				names++
				major, _, err := DirHash(version, im.SB.HashSeed, []byte(e.Name))
				if err != nil {
					t.Fatal(err)
				}
				h := uint64(major)
				if h < clo&^1 || h > chi&^1 || (h == chi&^1 && chi&1 == 0) {
					t.Errorf("%s: %q in leaf %d hashes to %08x, outside [%08x, %08x) its index entry gives it", dir, e.Name, blk, h, clo, chi)
				}
			}
		}
	}
	walk(root.Block0, root.Entries, int(root.Info.IndirectLevels), 0, 1<<32)
	return names, int(root.Info.IndirectLevels)
}

// htreeCase is a filesystem configuration the htree tests cover.
type htreeCase struct {
	hashAlg  string // s_def_hash_version, the version new roots get
	unsigned bool   // EXT2_FLAGS_UNSIGNED_HASH instead of _SIGNED_HASH
	zeroSeed bool   // s_hash_seed all zero: the default seed applies
}

func (c htreeCase) String() string {
	s := c.hashAlg + "/signed"
	if c.unsigned {
		s = c.hashAlg + "/unsigned"
	}
	if c.zeroSeed {
		s += "/zero-seed"
	}
	return s
}

// How many names the htree tests put in their directory: in 1 KiB blocks,
// with names averaging 128 bytes, enough leaves that the root (123 entries
// with metadata_csum) needs a level of index nodes below it. e2fsck packs
// leaves full, the kernel splits them in halves; mke2fs -d links each name
// by scanning the directory so far, and would take 5 s for 3000.
const (
	e2fsckNameCount = 1500
	kernelNameCount = 3000
)

// requireImageTools skips (or fails, under CI) before any subtest runs
// when makeHashImage cannot: a test whose subtests all skipped would
// otherwise report that no htree was deep enough.
func requireImageTools(t *testing.T) {
	t.Helper()
	for _, c := range []string{"mkfs.ext4", "tune2fs", "debugfs"} {
		testenv.RequireCommand(t, c)
	}
}

// makeHashImage formats a 32 MiB ext4 image with 1 KiB blocks from src
// (mke2fs -d, "" for none) and sets its hash algorithm, hash flag and seed
// as c says.
func makeHashImage(t *testing.T, c htreeCase, src string) string {
	t.Helper()
	mkfs := testenv.RequireCommand(t, "mkfs.ext4")
	tune2fs := testenv.RequireCommand(t, "tune2fs")
	debugfs := testenv.RequireCommand(t, "debugfs")
	img := filepath.Join(t.TempDir(), "fs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(32 << 20)
	f.Close()
	args := []string{"-q", "-F", "-b", "1024", "-O", "dir_index", "-E", "lazy_itable_init=1"}
	if src != "" {
		args = append(args, "-d", src)
	}
	testenv.Run(t, mkfs, append(args, img)...)
	testenv.Run(t, tune2fs, "-E", "hash_alg="+c.hashAlg, img)
	flags := SbFlagSignedHash
	if c.unsigned {
		flags = SbFlagUnsignedHash
	}
	set := fmt.Sprintf("ssv flags %d\n", flags)
	if c.zeroSeed {
		set += "ssv hash_seed null\n"
	}
	cmds := filepath.Join(t.TempDir(), "set")
	if err := os.WriteFile(cmds, []byte(set), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, debugfs, "-w", "-f", cmds, img)
	return img
}

// checkHashImage checks the htree of /d, which holds count names, and that
// the superblock says what c asked for.
func checkHashImage(t *testing.T, c htreeCase, img string, count int) (levels int) {
	t.Helper()
	names, levels := checkHtree(t, img, "/d")
	if names != count {
		t.Errorf("the htree's leaves hold %d names, the directory %d", names, count)
	}
	im := openImageFile(t, img)
	if c.zeroSeed != (im.SB.HashSeed == [4]uint32{}) {
		t.Errorf("s_hash_seed %08x, want zero %v", im.SB.HashSeed, c.zeroSeed)
	}
	if got := im.SB.Flags & (SbFlagSignedHash | SbFlagUnsignedHash); c.unsigned != (got == SbFlagUnsignedHash) {
		t.Errorf("s_flags %#x, want unsigned %v", im.SB.Flags, c.unsigned)
	}
	return levels
}

// TestDirHashE2fsckHtree checks DirHash against htrees that e2fsck -D
// builds (e2fsck/rehash.c hashes with s_def_hash_version, plus 3 with the
// unsigned flag) from a directory of random names that mke2fs -d copied
// in: each hash algorithm, signed and unsigned, with random seeds and the
// zero seed.
func TestDirHashE2fsckHtree(t *testing.T) {
	requireImageTools(t)
	e2fsck := testenv.RequireCommand(t, "e2fsck")
	rng := newRand(t)
	var deepest atomic.Int32
	t.Run("group", func(t *testing.T) {
		for _, c := range []htreeCase{
			{"legacy", false, false},
			{"legacy", true, false},
			{"half_md4", false, false},
			{"half_md4", true, true},
			{"tea", false, true},
			{"tea", true, false},
		} {
			names := randomNames(rng, e2fsckNameCount, func(b byte) bool { return b != 0 && b != '/' })
			t.Run(c.String(), func(t *testing.T) {
				t.Parallel() // mke2fs -d takes most of the time, on one CPU
				src := t.TempDir()
				d := filepath.Join(src, "d")
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				for _, n := range names {
					if err := os.WriteFile(filepath.Join(d, string(n)), nil, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				img := makeHashImage(t, c, src)
				// Exit status 1 means e2fsck changed the filesystem, as -D does.
				if out, err := exec.Command(e2fsck, "-f", "-y", "-D", img).CombinedOutput(); err != nil {
					if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
						t.Fatalf("e2fsck -fyD: %v\n%s", err, out)
					}
				}
				if checkHashImage(t, c, img, e2fsckNameCount) > 0 {
					deepest.Store(1)
				}
			})
		}
	})
	if !t.Failed() && deepest.Load() == 0 {
		t.Errorf("no htree had an index node below its root: the test no longer covers ParseDxNode")
	}
}

// TestDirHashKernelHtree checks DirHash against htrees the kernel builds:
// the directory grows into an htree while the kernel's ext4 driver, on a
// loop device, creates random names in it one by one, splitting leaves as
// they fill.
func TestDirHashKernelHtree(t *testing.T) {
	testenv.RequireRoot(t)
	requireImageTools(t)
	testenv.RequireCommand(t, "losetup")
	mount := testenv.RequireCommand(t, "mount")
	umount := testenv.RequireCommand(t, "umount")
	rng := newRand(t)
	deepest := 0
	for _, c := range []htreeCase{
		{"half_md4", false, false},
		{"half_md4", true, true},
		{"tea", true, false},
		{"legacy", false, true},
	} {
		t.Run(c.String(), func(t *testing.T) {
			img := makeHashImage(t, c, "")
			loop := testenv.AttachLoop(t, img)
			mnt := t.TempDir()
			testenv.Run(t, mount, "-t", "ext4", loop, mnt)
			mounted := true
			t.Cleanup(func() {
				if mounted {
					exec.Command(umount, mnt).Run()
				}
			})
			d := filepath.Join(mnt, "d")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, n := range randomNames(rng, kernelNameCount, func(b byte) bool { return b != 0 && b != '/' }) {
				if err := os.WriteFile(filepath.Join(d, string(n)), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			testenv.Run(t, umount, mnt)
			mounted = false
			deepest = max(deepest, checkHashImage(t, c, img, kernelNameCount))
		})
	}
	if !t.Failed() && deepest == 0 {
		t.Errorf("no htree had an index node below its root: the test no longer covers ParseDxNode")
	}
}
