package hostflags

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// mountImage makes a small filesystem image with mkfs (mkfs.ext4 or
// mkfs.exfat), attaches it to a loop device and mounts it in a temporary
// directory. Unmounting and detaching happen at cleanup, even on failure.
func mountImage(t *testing.T, fstype string) string {
	t.Helper()
	testenv.RequireRoot(t)
	mkfs := testenv.RequireCommand(t, "mkfs."+fstype)
	testenv.RequireCommand(t, "losetup")
	dir := t.TempDir()
	img := filepath.Join(dir, fstype+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	args := []string{img}
	if fstype == "ext4" {
		args = []string{"-q", "-F", img}
	}
	testenv.Run(t, mkfs, args...)
	loop := testenv.AttachLoop(t, img)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "mount", "-t", fstype, loop, mnt)
	t.Cleanup(func() {
		var out []byte
		var err error
		for i := 0; i < 50; i++ {
			if out, err = exec.Command("umount", mnt).CombinedOutput(); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("umount %s: %v\n%s", mnt, err, out)
		exec.Command("umount", "-l", mnt).Run()
	})
	return mnt
}

// makeTree creates files (ending without /) and directories (ending in /)
// below root.
func makeTree(t *testing.T, root string, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(root, n)
		var err error
		if strings.HasSuffix(n, "/") {
			err = os.MkdirAll(p, 0o755)
		} else if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			err = os.WriteFile(p, []byte("log line\n"), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// lsattr returns the locking letters ("i", "a", "ia" or "") that the real
// lsattr(1) shows for p.
func lsattr(t *testing.T, p string) string {
	t.Helper()
	out := testenv.Run(t, testenv.RequireCommand(t, "lsattr"), "-d", p)
	f := strings.Fields(out)
	if len(f) < 2 {
		t.Fatalf("lsattr -d %s: %q", p, out)
	}
	var got string
	for _, c := range "ia" {
		if strings.ContainsRune(f[0], c) {
			got += string(c)
		}
	}
	return got
}

func checkAttrs(t *testing.T, root string, want map[string]string) {
	t.Helper()
	for name, w := range want {
		if got := lsattr(t, filepath.Join(root, name)); got != w {
			t.Errorf("lsattr %s = %q, want %q", name, got, w)
		}
	}
}

// unlockAll clears every flag below root so that cleanup can remove files
// even when a test fails half-way (the image is thrown away anyway, but the
// test's own later steps may need to write).
func unlockAll(t *testing.T, root string) {
	exec.Command("chattr", "-R", "-i", "-a", root).Run()
}

type runLog struct {
	out  bytes.Buffer
	logs []string
}

func (l *runLog) logf(format string, a ...any) { l.logs = append(l.logs, fmt.Sprintf(format, a...)) }

func run(t *testing.T, c *Config, opts Options) (*Result, *runLog) {
	t.Helper()
	l := &runLog{}
	opts.Out = &l.out
	opts.Logf = l.logf
	res, err := Run(context.Background(), c, opts)
	if err != nil {
		t.Fatalf("Run(%+v): %v", opts, err)
	}
	return res, l
}

func parseAt(t *testing.T, root, text string) *Config {
	t.Helper()
	c, err := Parse(strings.NewReader(strings.ReplaceAll(text, "@", root)), "ext4.conf", ParseOptions{Platform: Linux})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const treeConfig = `group: etc configs
@/etc
group: +a logs live
@/logs/syslog
group: logs rotated
@/logs/syslog.[0-9]*
group: prefixes
+@/plus
-@/minus
=@/eq
group: karl
!@/karl
`

var tree = []string{
	"etc/a.conf", "etc/sub/b.conf",
	"logs/syslog", "logs/syslog.1", "logs/syslog.2", "logs/other",
	"plus/f", "plus/d/g", "minus/f", "minus/d/g", "eq/f", "eq/d/g",
	"karl/f",
}

// lockedTree is what lsattr shows after locking all of treeConfig.
var lockedTree = map[string]string{
	"etc": "i", "etc/a.conf": "i", "etc/sub": "i", "etc/sub/b.conf": "i",
	"logs": "", "logs/syslog": "a", "logs/syslog.1": "i", "logs/syslog.2": "i", "logs/other": "",
	"plus": "i", "plus/f": "i", "plus/d": "i", "plus/d/g": "",
	"minus": "", "minus/f": "i", "minus/d": "i", "minus/d/g": "i",
	"eq": "i", "eq/f": "i", "eq/d": "", "eq/d/g": "",
	"karl": "i", "karl/f": "i",
}

func unlockedTree() map[string]string {
	m := map[string]string{}
	for k := range lockedTree {
		m[k] = ""
	}
	return m
}

func TestLockUnlockExt4(t *testing.T) {
	root := mountImage(t, "ext4")
	makeTree(t, root, tree...)
	defer unlockAll(t, root)
	c := parseAt(t, root, treeConfig)

	res, l := run(t, c, Options{Op: Lock, Verbose: true})
	if res.Errors != 0 || len(l.logs) != 0 {
		t.Fatalf("lock: %+v, logs %q", res, l.logs)
	}
	// etc: 4, logs: 3, plus: 3, minus: 3, eq: 2, karl: 2.
	if res.Changed != 17 || res.Unchanged != 0 {
		t.Errorf("lock changed %d, unchanged %d; want 17, 0", res.Changed, res.Unchanged)
	}
	for _, want := range []string{
		"recursively locking " + root + "/etc\n", "locking " + root + "/logs/syslog\n",
		"locking " + root + "/logs/syslog.1\n", "locking " + root + "/plus/*\n",
		"recursively locking " + root + "/minus/*\n", "locking " + root + "/eq (files only)\n",
	} {
		if !strings.Contains(l.out.String(), want) {
			t.Errorf("verbose output lacks %q:\n%s", want, l.out.String())
		}
	}
	checkAttrs(t, root, lockedTree)

	// Idempotent: nothing left to change, and the audit agrees.
	res, _ = run(t, c, Options{Op: Lock})
	if res.Changed != 0 || res.Unchanged != 17 {
		t.Errorf("second lock: %+v", res)
	}
	res, l = run(t, c, Options{Op: Lock, Audit: true})
	if !res.Consistent() || l.out.Len() != 0 {
		t.Errorf("lock audit after lock: %+v\n%s", res, l.out.String())
	}
	res, l = run(t, c, Options{Op: Unlock, Audit: true})
	if res.Consistent() || res.Mismatched != 17 {
		t.Errorf("unlock audit after lock: %+v", res)
	}
	if !strings.Contains(l.out.String(), root+"/logs/syslog (should be not append-only, flags=ae)\n") {
		t.Errorf("unlock audit output:\n%s", l.out.String())
	}

	res, _ = run(t, c, Options{Op: Unlock})
	if res.Changed != 17 || res.Errors != 0 {
		t.Errorf("unlock: %+v", res)
	}
	checkAttrs(t, root, unlockedTree())
	res, _ = run(t, c, Options{Op: Unlock})
	if res.Changed != 0 {
		t.Errorf("second unlock changed %d", res.Changed)
	}
	res, _ = run(t, c, Options{Op: Unlock, Audit: true})
	if !res.Consistent() {
		t.Errorf("unlock audit after unlock: %+v", res)
	}
}

func TestSelectGroupsExt4(t *testing.T) {
	root := mountImage(t, "ext4")
	makeTree(t, root, tree...)
	defer unlockAll(t, root)
	c := parseAt(t, root, treeConfig)
	sel := func(s string) []Selector {
		sels, err := ParseSelectors(s, Linux)
		if err != nil {
			t.Fatal(err)
		}
		return sels
	}

	run(t, c, Options{Op: Lock, Select: sel("logs:+a")})
	want := unlockedTree()
	want["logs/syslog"] = "a"
	checkAttrs(t, root, want)

	run(t, c, Options{Op: Lock, Select: sel("rotated,karl")})
	want["logs/syslog.1"], want["logs/syslog.2"], want["karl"], want["karl/f"] = "i", "i", "i", "i"
	checkAttrs(t, root, want)

	// The audit of a group covers only that group.
	if res, _ := run(t, c, Options{Op: Lock, Audit: true, Select: sel("logs")}); !res.Consistent() {
		t.Errorf("audit -g logs: %+v", res)
	}
	if res, _ := run(t, c, Options{Op: Lock, Audit: true, Quiet: true, Select: sel("etc")}); res.Consistent() || res.Mismatched != 1 {
		t.Errorf("quiet audit -g etc should stop at the first mismatch: %+v", res)
	}

	// Unlocking the +a subset of logs leaves the rotated files locked.
	run(t, c, Options{Op: Unlock, Select: sel("logs:+a")})
	want["logs/syslog"] = ""
	checkAttrs(t, root, want)

	// -s handles only "!" entries.
	run(t, c, Options{Op: Unlock, KARLOnly: true})
	want["karl"], want["karl/f"] = "", ""
	checkAttrs(t, root, want)

	// -d reports and changes nothing.
	res, l := run(t, c, Options{Op: Lock, DryRun: true, Select: sel("etc")})
	if res.Changed != 4 || !strings.Contains(l.out.String(), "would set flags of "+root+"/etc/a.conf: e -> ie") {
		t.Errorf("dry run: %+v\n%s", res, l.out.String())
	}
	checkAttrs(t, root, want)
}

// TestLockedFilesRefuseChanges shows the flags doing their job in the real
// kernel: an immutable file refuses every change, an append-only file
// accepts appends and nothing else.
func TestLockedFilesRefuseChanges(t *testing.T) {
	root := mountImage(t, "ext4")
	makeTree(t, root, "logs/syslog", "logs/syslog.1")
	defer unlockAll(t, root)
	c := parseAt(t, root, "group: +a live\n@/logs/syslog\ngroup: rotated\n@/logs/syslog.1\n")
	if res, l := run(t, c, Options{Op: Lock}); res.Changed != 2 {
		t.Fatalf("lock: %+v %q", res, l.logs)
	}
	live, rotated := filepath.Join(root, "logs/syslog"), filepath.Join(root, "logs/syslog.1")

	mustEPERM := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: err = %v, want EPERM", what, err)
		}
	}
	openErr := func(p string, flag int) error {
		f, err := os.OpenFile(p, flag, 0)
		if err == nil {
			f.Close()
		}
		return err
	}
	for _, p := range []string{live, rotated} {
		mustEPERM("truncate "+p, os.Truncate(p, 0))
		mustEPERM("unlink "+p, os.Remove(p))
		mustEPERM("rename "+p, os.Rename(p, p+".moved"))
		mustEPERM("link "+p, os.Link(p, p+".link"))
		mustEPERM("chmod "+p, os.Chmod(p, 0o600))
		mustEPERM("open O_WRONLY "+p, openErr(p, os.O_WRONLY))
		mustEPERM("open O_TRUNC "+p, openErr(p, os.O_WRONLY|os.O_APPEND|os.O_TRUNC))
	}
	mustEPERM("append to immutable", openErr(rotated, os.O_WRONLY|os.O_APPEND))

	f, err := os.OpenFile(live, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("append-only file refuses O_APPEND: %v", err)
	}
	if _, err := f.WriteString("appended\n"); err != nil {
		t.Errorf("append: %v", err)
	}
	f.Close()
	if got, _ := os.ReadFile(live); string(got) != "log line\nappended\n" {
		t.Errorf("append-only file holds %q", got)
	}
	// The directory stays writable: only the listed files are locked.
	if err := os.WriteFile(filepath.Join(root, "logs/new"), nil, 0o644); err != nil {
		t.Errorf("creating a file next to them: %v", err)
	}

	if res, _ := run(t, c, Options{Op: Unlock}); res.Changed != 2 {
		t.Fatalf("unlock: %+v", res)
	}
	if err := os.Truncate(rotated, 0); err != nil {
		t.Errorf("truncate after unlock: %v", err)
	}
}

func TestAuditOutputExt4(t *testing.T) {
	root := mountImage(t, "ext4")
	makeTree(t, root, "etc/a", "etc/b", "etc/sub/c", "logs/syslog", "plus/f", "plus/d/g")
	defer unlockAll(t, root)
	c := parseAt(t, root, "group: etc\n@/etc\n+@/plus\ngroup: +a logs\n@/logs/syslog\n@/missing\n")
	// Lock one file by hand so the audit has something right and
	// something wrong; put +a where +i belongs.
	testenv.Run(t, "chattr", "+i", filepath.Join(root, "etc/a"))
	testenv.Run(t, "chattr", "+a", filepath.Join(root, "etc/sub/c"))

	res, l := run(t, c, Options{Op: Lock, Audit: true})
	want := fmt.Sprintf(`%[1]s/etc (should be locked, flags=e)
In %[1]s/etc/:
   b (should be locked, flags=e)
   %[1]s/etc/sub (should be locked, flags=e)
   In %[1]s/etc/sub/:
      c (should be locked, flags=ae)
%[1]s/plus (should be locked, flags=e)
In %[1]s/plus/:
   d (should be locked, flags=e)
   f (should be locked, flags=e)
%[1]s/logs/syslog (should be append-only, flags=e)
%[1]s/missing (should be append-only, missing)
`, root)
	if l.out.String() != want {
		t.Errorf("audit output:\n%s\nwant:\n%s", l.out.String(), want)
	}
	// The missing +a file is a mismatch: what should be locked is not there.
	if res.Consistent() || res.Mismatched != 9 || res.Unchanged != 1 || res.Missing != 1 {
		t.Errorf("audit result %+v", res)
	}
	if len(l.logs) != 0 {
		t.Errorf("logs: %q", l.logs)
	}
	// Quiet: no output at all, and the first mismatch decides.
	res, l = run(t, c, Options{Op: Lock, Audit: true, Quiet: true})
	if res.Consistent() || l.out.Len() != 0 || len(l.logs) != 0 {
		t.Errorf("quiet audit: %+v %q %q", res, l.out.String(), l.logs)
	}
}

// TestFlagsStringMatchesLsattr compares the audit's flags= rendering with
// what lsattr prints for the same file.
func TestFlagsStringMatchesLsattr(t *testing.T) {
	root := mountImage(t, "ext4")
	makeTree(t, root, "f")
	p := filepath.Join(root, "f")
	defer unlockAll(t, root)
	testenv.Run(t, "chattr", "+dAia", p)
	out := strings.Fields(testenv.Run(t, "lsattr", "-d", p))[0]
	fd, err := syscall.Open(p, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	v, err := getFlags(fd)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := formatFlags(v), strings.ReplaceAll(out, "-", ""); got != want {
		t.Errorf("formatFlags = %q, lsattr shows %q", got, want)
	}
}

func TestPreservesOtherFlags(t *testing.T) {
	root := mountImage(t, "ext4")
	makeTree(t, root, "f")
	defer unlockAll(t, root)
	p := filepath.Join(root, "f")
	testenv.Run(t, "chattr", "+dA", p)
	c := parseAt(t, root, "@/f\n")
	run(t, c, Options{Op: Lock})
	if got := strings.Fields(testenv.Run(t, "lsattr", "-d", p))[0]; !strings.ContainsAny(got, "i") || !strings.Contains(got, "d") || !strings.Contains(got, "A") {
		t.Errorf("after lock: %s", got)
	}
	run(t, c, Options{Op: Unlock})
	if got := strings.Fields(testenv.Run(t, "lsattr", "-d", p))[0]; strings.Contains(got, "i") || !strings.Contains(got, "d") || !strings.Contains(got, "A") {
		t.Errorf("after unlock: %s", got)
	}
	// A file locked with the other flag is switched, not left with both.
	testenv.Run(t, "chattr", "+a", p)
	run(t, c, Options{Op: Lock})
	if got := lsattr(t, p); got != "i" {
		t.Errorf("+a file locked +i shows %q", got)
	}
}

// TestSymlinksNotFollowed: a link inside a configured directory pointing
// out of it, and a configured path that is itself a link, are left alone.
func TestSymlinksNotFollowed(t *testing.T) {
	root := mountImage(t, "ext4")
	makeTree(t, root, "conf/a", "outside/secret", "outside/dir/x")
	defer unlockAll(t, root)
	for _, l := range [][2]string{
		{"../outside/secret", "conf/link"},
		{"../outside/dir", "conf/dirlink"},
		{"outside/secret", "configured-link"},
	} {
		if err := os.Symlink(l[0], filepath.Join(root, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(root, "conf/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := parseAt(t, root, "@/conf\n@/configured-link\n@/conf/glob*\n")
	res, l := run(t, c, Options{Op: Lock})
	if res.Changed != 2 || res.Errors != 0 {
		t.Errorf("lock: %+v %q", res, l.logs)
	}
	checkAttrs(t, root, map[string]string{"conf": "i", "conf/a": "i", "outside/secret": "", "outside/dir": "", "outside/dir/x": ""})
	joined := strings.Join(l.logs, "\n")
	if !strings.Contains(joined, root+"/configured-link is a symbolic link; not followed (line 2)") ||
		!strings.Contains(joined, "glob "+root+"/conf/glob* matches no files (line 3)") {
		t.Errorf("logs:\n%s", joined)
	}
}

// TestUnsupportedFilesystem: ramfs has no inode flags at all (the kernel
// here has no FAT or exFAT driver, which would show the same); the message
// says so and names the filesystem.
func TestUnsupportedFilesystem(t *testing.T) {
	testenv.RequireRoot(t)
	root := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "mount", "-t", "ramfs", "ramfs", root)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", root).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", root, err, out)
		}
	})
	makeTree(t, root, "logs/syslog", "logs/sub/x")
	c := parseAt(t, root, "@/logs\n")
	res, l := run(t, c, Options{Op: Lock})
	// One message for the directory; the walk does not descend into it.
	if res.Errors != 1 || len(l.logs) != 1 || !strings.Contains(l.logs[0], "filesystem does not support immutable/append-only flags (ramfs") {
		t.Errorf("lock on ramfs: %+v %q", res, l.logs)
	}
	// An unlock, and its audit, count such files as unlocked: logrotate's
	// "unlock -g rotate" must not fail on a flagless filesystem.
	res, l = run(t, c, Options{Op: Unlock})
	if res.Errors != 0 || res.Unchanged != 1 || len(l.logs) != 1 || !strings.Contains(l.logs[0], "warning: "+root+"/logs: filesystem does not support") || !strings.Contains(l.logs[0], "counted as unlocked") {
		t.Errorf("unlock on ramfs: %+v %q", res, l.logs)
	}
	res, _ = run(t, c, Options{Op: Unlock, Audit: true})
	if !res.Consistent() || res.Unchanged != 1 {
		t.Errorf("unlock audit on ramfs: %+v", res)
	}
	res, _ = run(t, c, Options{Op: Lock, Audit: true})
	if res.Consistent() {
		t.Errorf("lock audit on ramfs should fail: %+v", res)
	}
}

// TestHostileNamesQuoted: a file name holding a newline cannot forge a line
// of audit output; it is printed Go-quoted.
func TestHostileNamesQuoted(t *testing.T) {
	root := mountImage(t, "ext4")
	makeTree(t, root, "d/")
	evil := "x (should be locked, flags=i)\nforged"
	if err := os.WriteFile(filepath.Join(root, "d", evil), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "chattr", "+i", filepath.Join(root, "d"))
	defer unlockAll(t, root)
	c := parseAt(t, root, "@/d\n")
	res, l := run(t, c, Options{Op: Lock, Audit: true})
	want := "In " + root + "/d/:\n   \"x (should be locked, flags=i)\\nforged\" (should be locked, flags=e)\n"
	if l.out.String() != want || res.Mismatched != 1 {
		t.Errorf("audit output %q, want %q (%+v)", l.out.String(), want, res)
	}
}
