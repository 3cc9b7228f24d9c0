package provision

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/seal"
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
				if p.Generation == nil {
					t.Fatalf("no generation recorded for %s", p.Path)
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
			if cfg.Journal != mode || cfg.Protected[1].Path != "var/log/audit/audit.log" || cfg.Protected[1].Generation == nil {
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

// tree lists every path under root with its size and mode, so that a test
// can tell whether a call wrote or removed anything.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%v %d", fi.Mode(), fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range after {
		if w, ok := before[p]; !ok {
			t.Errorf("%s: left %s behind", what, p)
		} else if w != v {
			t.Errorf("%s: changed %s: %s, was %s", what, p, v, w)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s: removed %s, which it did not make", what, p)
		}
	}
}

func sealStore(store, devKey, audKey string, kb int64) error {
	return seal.Create(store, devKey, audKey, kb, seal.CreateOptions{})
}

// goodOptions describes a small device in base/parent/dev whose auditor key
// goes to base/keys/auditor.key, outside the device directory.
func goodOptions(base string) Options {
	return Options{
		Dir: filepath.Join(base, "parent", "dev"), Size: 32 << 20, Journal: "ordered",
		Logs: []string{"var/log/app.log"}, AuditorKey: filepath.Join(base, "keys", "auditor.key"),
		KeyBytes: 1 << 20, Config: worm.DefaultConfig(), CreateStore: sealStore,
	}
}

// retry checks that the same device directory and auditor key path take a
// good Create after a failed one.
func retry(t *testing.T, o Options) {
	t.Helper()
	good := goodOptions("")
	o.Logs, o.Journal, o.Config, o.CreateStore = good.Logs, good.Journal, good.Config, good.CreateStore
	if _, err := Create(o); err != nil {
		t.Fatalf("retry after the failure: %v", err)
	}
	if _, err := worm.LoadConfig(o.Dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(o.AuditorKey); err != nil {
		t.Fatal(err)
	}
}

// Inputs that only a late step used to reject (debugfs, cfg.Validate, the
// seal store's O_EXCL open of the auditor key) are refused before anything
// is written, into a new directory or an empty one.
func TestCreateChecksBeforeWriting(t *testing.T) {
	testenv.RequireCommand(t, "mkfs.ext4")
	testenv.RequireCommand(t, "debugfs")
	cases := []struct {
		name string
		mod  func(o *Options)
		want string
	}{
		{"nested", func(o *Options) { o.Logs = []string{"a", "a/b"} }, `"a/b" is inside protected file "a"`},
		{"nested-deeper-first", func(o *Options) { o.Logs = []string{"a/b/c", "x", "/a/b"} }, `"a/b/c" is inside protected file "a/b"`},
		{"lost+found", func(o *Options) { o.Logs = []string{"lost+found"} }, "lost+found"},
		{"long-name", func(o *Options) { o.Logs = []string{"d/" + strings.Repeat("x", 256)} }, "255 bytes"},
		{"on-violation", func(o *Options) { o.Config.OnViolation = "bogus" }, `on_violation "bogus"`},
		{"empty-journal", func(o *Options) { o.Journal = "" }, `journal mode ""`},
		{"image-outside", func(o *Options) { o.Config.Image = "../image.ext4" }, "inside the device directory"},
		{"store-is-image", func(o *Options) { o.Config.Store = "image.ext4" }, "also the image"},
		{"auditor-key-exists", func(o *Options) {
			os.MkdirAll(filepath.Dir(o.AuditorKey), 0o700)
			os.WriteFile(o.AuditorKey, []byte("precious"), 0o600)
		}, "already exists"},
		{"auditor-key-is-device-key", func(o *Options) { o.AuditorKey = filepath.Join(o.Dir, "device.key") }, "device key"},
		{"auditor-key-under-a-file", func(o *Options) {
			os.WriteFile(filepath.Join(filepath.Dir(filepath.Dir(o.AuditorKey)), "file"), nil, 0o600)
			o.AuditorKey = filepath.Join(filepath.Dir(filepath.Dir(o.AuditorKey)), "file", "auditor.key")
		}, "not a directory"},
		{"no-auditor-key", func(o *Options) { o.AuditorKey = "" }, "auditor key"},
	}
	for _, c := range cases {
		for _, pre := range []string{"new", "empty"} {
			t.Run(c.name+"/"+pre, func(t *testing.T) {
				base := t.TempDir()
				o := goodOptions(base)
				if pre == "empty" {
					os.MkdirAll(o.Dir, 0o700)
				}
				called := false
				c.mod(&o)
				store := o.CreateStore
				o.CreateStore = func(s, d, a string, kb int64) error { called = true; return store(s, d, a, kb) }
				before := tree(t, base)
				_, err := Create(o)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("got error %v, want one saying %q", err, c.want)
				}
				if called {
					t.Error("the seal store was created before the options were checked")
				}
				sameTree(t, "failed Create", before, tree(t, base))
				if c.name == "auditor-key-exists" {
					if b, _ := os.ReadFile(o.AuditorKey); string(b) != "precious" {
						t.Errorf("the existing auditor key now holds %q", b)
					}
					return
				}
				if o.AuditorKey == "" || strings.HasSuffix(c.name, "-file") || strings.HasSuffix(c.name, "device-key") {
					o.AuditorKey = goodOptions(base).AuditorKey
				}
				retry(t, Options{Dir: o.Dir, Size: o.Size, AuditorKey: o.AuditorKey, KeyBytes: o.KeyBytes})
			})
		}
	}
}

// A step that fails after files were made (here: the seal store, after it
// wrote its files, as when its last fsync fails) takes back exactly what
// Create made: the device directory's contents, the directory itself and
// its parents if Create made them, the auditor key and its directories.
func TestCreateRemovesWhatItMade(t *testing.T) {
	testenv.RequireCommand(t, "mkfs.ext4")
	testenv.RequireCommand(t, "debugfs")
	late := errors.New("disk on fire")
	cases := []struct {
		name string
		mod  func(base string, o *Options)
	}{
		{"new-dir", func(string, *Options) {}},
		{"empty-dir", func(_ string, o *Options) { os.MkdirAll(o.Dir, 0o700) }},
		{"key-inside", func(_ string, o *Options) { o.AuditorKey = filepath.Join(o.Dir, "keys", "auditor.key") }},
		{"key-beside-others", func(base string, o *Options) {
			os.MkdirAll(filepath.Join(base, "keys"), 0o700)
			os.WriteFile(filepath.Join(base, "keys", "other.key"), []byte("other"), 0o600)
		}},
		{"relative", func(base string, o *Options) {
			wd, _ := os.Getwd()
			t.Cleanup(func() { os.Chdir(wd) })
			os.Chdir(base)
			o.Dir, o.AuditorKey = filepath.Join("parent", "dev"), filepath.Join("keys", "new", "auditor.key")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			o := goodOptions(base)
			c.mod(base, &o)
			o.CreateStore = func(s, d, a string, kb int64) error {
				if err := sealStore(s, d, a, kb); err != nil {
					t.Fatal(err)
				}
				return late
			}
			before := tree(t, base)
			if _, err := Create(o); !errors.Is(err, late) {
				t.Fatalf("got %v, want %v", err, late)
			} else if strings.Contains(err.Error(), "left") {
				t.Errorf("cleanup reported leftovers: %v", err)
			}
			sameTree(t, "failed Create", before, tree(t, base))
			retry(t, o)
		})
	}
}

// When another process makes the auditor key between Create's check and the
// seal store's O_EXCL open, Create fails and leaves that file alone.
func TestCreateKeepsAuditorKeyItDidNotMake(t *testing.T) {
	testenv.RequireCommand(t, "mkfs.ext4")
	testenv.RequireCommand(t, "debugfs")
	base := t.TempDir()
	o := goodOptions(base)
	o.CreateStore = func(s, d, a string, kb int64) error {
		os.MkdirAll(filepath.Dir(a), 0o700)
		if err := os.WriteFile(a, []byte("theirs"), 0o600); err != nil {
			t.Fatal(err)
		}
		return sealStore(s, d, a, kb)
	}
	if _, err := Create(o); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("got %v, want the seal store's refusal to overwrite the key", err)
	}
	if b, err := os.ReadFile(o.AuditorKey); string(b) != "theirs" {
		t.Errorf("the other process's key: %q, %v", b, err)
	}
	if _, err := os.Stat(o.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("device directory left behind: %v", err)
	}
}

// stick makes p impossible to remove: immutable for root, a read-only
// parent directory for anyone else. It skips the test where neither works.
func stick(t *testing.T, p string) {
	t.Helper()
	dir := filepath.Dir(p)
	if os.Geteuid() == 0 {
		chattr, err := exec.LookPath("chattr")
		if err != nil {
			t.Skip("chattr not found: cannot make an unremovable file as root")
		}
		if out, err := exec.Command(chattr, "+i", p).CombinedOutput(); err != nil {
			t.Skipf("chattr +i: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command(chattr, "-i", p).Run() })
	} else {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
	}
}

// What Create cannot remove, its error names, with where it is.
func TestCreateNamesWhatItCouldNotRemove(t *testing.T) {
	testenv.RequireCommand(t, "mkfs.ext4")
	testenv.RequireCommand(t, "debugfs")
	base := t.TempDir()
	o := goodOptions(base)
	var stuck string
	o.CreateStore = func(s, d, a string, kb int64) error {
		if err := sealStore(s, d, a, kb); err != nil {
			t.Fatal(err)
		}
		stuck = filepath.Join(s, "stuck")
		if err := os.WriteFile(stuck, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		stick(t, stuck)
		return errors.New("disk on fire")
	}
	_, err := Create(o)
	if err == nil {
		t.Fatal("Create succeeded")
	}
	t.Log(err)
	for _, want := range []string{"disk on fire", "left behind", filepath.Join(o.Dir, "store"), o.Dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q", want)
		}
	}
	// Everything else went: the image, the keys, the auditor key and its directory.
	for _, p := range []string{filepath.Join(o.Dir, "image.ext4"), filepath.Join(o.Dir, "device.key"), o.AuditorKey, filepath.Dir(o.AuditorKey)} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}
