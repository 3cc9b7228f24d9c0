package layout

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// TestSystemZoneMatchesDumpe2fs builds filesystems with mke2fs in the
// layouts the zone depends on (sparse_super backups, none, sparse_super2,
// 1 KiB blocks with a first data block of 1) and checks the zone holds
// exactly the metadata dumpe2fs lists: every superblock copy, descriptor
// and reserved descriptor block, bitmap and inode table block, and
// nothing else.
func TestSystemZoneMatchesDumpe2fs(t *testing.T) {
	testenv.RequireCommand(t, "mkfs.ext4")
	testenv.RequireCommand(t, "dumpe2fs")
	for _, tc := range []struct {
		name string
		args []string
		size int64
	}{
		{"4k sparse_super", []string{"-b", "4096"}, 700 << 20},
		{"1k sparse_super", []string{"-b", "1024"}, 80 << 20},
		{"4k no sparse_super", []string{"-b", "4096", "-O", "^sparse_super,^resize_inode"}, 300 << 20},
		{"4k sparse_super2", []string{"-b", "4096", "-O", "sparse_super2"}, 700 << 20},
		{"4k no flex_bg", []string{"-b", "4096", "-O", "^flex_bg"}, 300 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "fs.img")
			f, err := os.Create(img)
			if err != nil {
				t.Fatal(err)
			}
			f.Truncate(tc.size)
			f.Close()
			args := append([]string{"-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=1"}, tc.args...)
			if out, err := exec.Command("mkfs.ext4", append(args, img)...).CombinedOutput(); err != nil {
				t.Fatalf("mkfs.ext4: %v\n%s", err, out)
			}
			out, err := exec.Command("dumpe2fs", img).Output()
			if err != nil {
				t.Fatalf("dumpe2fs: %v", err)
			}
			want := map[uint64]bool{}
			runs := regexp.MustCompile(`(?:superblock at|Group descriptors at|Reserved GDT blocks at|bitmap at|Inode table at) (\d+)(?:-(\d+))?`)
			for _, m := range runs.FindAllStringSubmatch(string(out), -1) {
				a, _ := strconv.ParseUint(m[1], 10, 64)
				b := a
				if m[2] != "" {
					b, _ = strconv.ParseUint(m[2], 10, 64)
				}
				for x := a; x <= b; x++ {
					want[x] = true
				}
			}
			im := openImageFile(t, img)
			z := SystemZone(im.SB, im.Groups, nil)
			got := map[uint64]bool{}
			for _, s := range z {
				for x := s.Start; x < s.End; x++ {
					got[x] = true
				}
			}
			for x := range want {
				if !got[x] {
					t.Errorf("block %d is metadata (dumpe2fs) but not in the zone", x)
				}
			}
			for x := range got {
				if !want[x] {
					t.Errorf("block %d is in the zone but not metadata (dumpe2fs)", x)
				}
			}
			if len(im.Groups) < 3 {
				t.Fatalf("only %d groups: the test needs backups", len(im.Groups))
			}
		})
	}
}

func TestZoneOverlap(t *testing.T) {
	z := Zone{{10, 20}, {30, 31}}
	for _, tc := range []struct {
		start, n uint64
		want     Span
		ok       bool
	}{
		{0, 10, Span{}, false},
		{0, 11, Span{10, 11}, true},
		{15, 100, Span{15, 20}, true},
		{20, 10, Span{}, false},
		{20, 11, Span{30, 30 + 1}, true},
		{31, 5, Span{}, false},
		{30, 0, Span{30, 31}, true},              // empty: its first block
		{^uint64(0) - 1, 5, Span{}, false},       // wraps: its first block
		{19, ^uint64(0) - 5, Span{19, 20}, true}, // wraps
	} {
		got, ok := z.Overlap(tc.start, tc.n)
		if ok != tc.ok || got != tc.want {
			t.Errorf("Overlap(%d, %d) = %v, %v; want %v, %v", tc.start, tc.n, got, ok, tc.want, tc.ok)
		}
	}
	// A descriptor placing its inode table at the end of the block numbers
	// must not wrap the span around to block 0.
	if s := run(^uint64(0)-2, 10); s.End != ^uint64(0) || s.Start != ^uint64(0)-2 {
		t.Errorf("run at the end: %v", s)
	}
}
