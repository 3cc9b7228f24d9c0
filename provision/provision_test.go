package provision

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/worm"
)

func TestCreateMakesCheckedImage(t *testing.T) {
	testenv.RequireCommand(t, "mkfs.ext4")
	e2fsck := testenv.RequireCommand(t, "e2fsck")
	dumpe2fs := testenv.RequireCommand(t, "dumpe2fs")
	for _, mode := range []string{"none", "ordered", "writeback", "journal"} {
		t.Run(mode, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "dev")
			res, err := Create(Options{
				Dir: dir, Size: 32 << 20, Journal: mode, BlockSize: 4096,
				Logs:   []string{"var/log/app.log", "/var/log/audit/audit.log", "top.log"},
				Config: worm.DefaultConfig(),
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Config.Protected) != 3 {
				t.Fatalf("protected: %+v", res.Config.Protected)
			}
			inodes := map[uint64]bool{}
			for _, p := range res.Config.Protected {
				if p.Inode < 11 || inodes[p.Inode] {
					t.Fatalf("bad inode for %s: %d", p.Path, p.Inode)
				}
				inodes[p.Inode] = true
			}
			if out, err := exec.Command(e2fsck, "-fn", res.ImagePath).CombinedOutput(); err != nil {
				t.Fatalf("e2fsck: %v\n%s", err, out)
			}
			out, _ := exec.Command(dumpe2fs, "-h", res.ImagePath).CombinedOutput()
			s := string(out)
			if !strings.Contains(s, "Errors behavior:          Remount read-only") {
				t.Errorf("errors behaviour not remount-ro:\n%s", s)
			}
			if mode == "none" && strings.Contains(s, "has_journal") {
				t.Errorf("no-journal image has a journal")
			}
			if mode == "journal" && !strings.Contains(s, "journal_data") {
				t.Errorf("data=journal not a default mount option")
			}
			cfg, err := worm.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Journal != mode || cfg.Protected[1].Path != "var/log/audit/audit.log" {
				t.Errorf("config round trip: %+v", cfg)
			}
		})
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	base := t.TempDir()
	cases := []Options{
		{Dir: filepath.Join(base, "a"), Size: 1 << 20, Journal: "ordered", Logs: []string{"x"}},
		{Dir: filepath.Join(base, "b"), Size: 32 << 20, Journal: "sometimes", Logs: []string{"x"}},
		{Dir: filepath.Join(base, "c"), Size: 32 << 20, Journal: "ordered"},
		{Dir: filepath.Join(base, "d"), Size: 32 << 20, Journal: "ordered", Logs: []string{"x", "/x"}},
		{Dir: filepath.Join(base, "e"), Size: 32 << 20, Journal: "ordered", Logs: []string{"../.."}},
	}
	for i, o := range cases {
		o.Config = worm.DefaultConfig()
		if _, err := Create(o); err == nil {
			t.Errorf("case %d: accepted %+v", i, o)
		}
	}
	// An existing non-empty directory is never overwritten.
	dir := filepath.Join(base, "full")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o600)
	if _, err := Create(Options{Dir: dir, Size: 32 << 20, Journal: "ordered", Logs: []string{"x"}, Config: worm.DefaultConfig()}); err == nil {
		t.Error("overwrote a non-empty directory")
	}
}
