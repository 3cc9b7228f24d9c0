package cli

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/hostflags"
	"github.com/indelible-worm/indelible/internal/testenv"
)

func TestSplitGetopt(t *testing.T) {
	fs := flag.NewFlagSet("syslock", flag.ContinueOnError)
	lockFlags(fs, hostflags.Lock)
	for _, tc := range []struct{ in, want []string }{
		{[]string{"-swf"}, []string{"-s", "-w", "-f"}},
		{[]string{"-a", "-q", "-o", "-g", "local"}, []string{"-a", "-q", "-o", "-g", "local"}},
		{[]string{"-aqo", "-glocal"}, []string{"-a", "-q", "-o", "-g", "local"}},
		{[]string{"-aqg", "logs:+a"}, []string{"-a", "-q", "-g", "logs:+a"}},
		{[]string{"-c", "-odd-name.conf", "-v"}, []string{"-c", "-odd-name.conf", "-v"}},
		{[]string{"-vc", "-x.conf"}, []string{"-v", "-c", "-x.conf"}},
		{[]string{"-g=a,b", "--help"}, []string{"-g=a,b", "--help"}},
		{[]string{"-sz"}, []string{"-sz"}}, // unknown letter: left for the flag package to report
		{[]string{"-v", "extra", "-aq"}, []string{"-v", "extra", "-a", "-q"}},
		{[]string{"--", "-aq"}, []string{"--", "-aq"}},
	} {
		if got := splitGetopt(fs, tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitGetopt(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSyslockOnExt4 runs the command as "syslock" and "sysunlock" (argv[0]
// dispatch) against a real ext4 filesystem on a loop device and checks the
// result with the real lsattr.
func TestSyslockOnExt4(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "mkfs.ext4")
	testenv.RequireCommand(t, "lsattr")
	testenv.RequireCommand(t, "losetup")
	dir := t.TempDir()
	img := filepath.Join(dir, "ext4.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "mkfs.ext4", "-q", "-F", img)
	loop := testenv.AttachLoop(t, img)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "mount", "-t", "ext4", loop, mnt)
	t.Cleanup(func() {
		for i := 0; i < 50; i++ {
			if exec.Command("umount", mnt).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("could not unmount %s", mnt)
		exec.Command("umount", "-l", mnt).Run()
	})
	for _, f := range []string{"logs/syslog", "logs/syslog.1"} {
		p := filepath.Join(mnt, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "syslock.conf")
	text := "group: +a logs\n" + mnt + "/logs/syslog\ngroup: logs\n" + mnt + "/logs/syslog.[0-9]*\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	runCmd := func(args ...string) (int, string, string) {
		var out, errb strings.Builder
		code := Main(args, &Env{Stdout: &out, Stderr: &errb, Getenv: os.Getenv})
		return code, out.String(), errb.String()
	}
	attrs := func() string {
		out := testenv.Run(t, "lsattr", filepath.Join(mnt, "logs/syslog"), filepath.Join(mnt, "logs/syslog.1"))
		var s []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			s = append(s, strings.Trim(f[0], "-e")+" "+filepath.Base(f[1]))
		}
		return strings.Join(s, ", ")
	}
	defer exec.Command("chattr", "-R", "-i", "-a", mnt).Run()

	if code, _, stderr := runCmd("/usr/local/bin/syslock", "-a", "-q", "-c", conf); code != 1 || stderr != "" {
		t.Errorf("audit before lock: exit %d, stderr %q", code, stderr)
	}
	if code, out, stderr := runCmd("/usr/local/bin/syslock", "-v", "-c", conf); code != 0 || !strings.Contains(out, "2 paths changed") {
		t.Errorf("syslock: exit %d\n%s%s", code, out, stderr)
	}
	if got := attrs(); got != "a syslog, i syslog.1" {
		t.Errorf("after syslock, lsattr shows %q", got)
	}
	if code, out, _ := runCmd("syslock", "-a", "-c", conf); code != 0 || !strings.Contains(out, "Audit complete: all files are in the expected state.") {
		t.Errorf("audit after lock: exit %d\n%s", code, out)
	}
	if code, out, stderr := runCmd("sysunlock", "-c", conf, "-g", "logs:+a"); code != 0 {
		t.Errorf("sysunlock -g logs:+a: exit %d\n%s%s", code, out, stderr)
	}
	if got := attrs(); got != " syslog, i syslog.1" {
		t.Errorf("after sysunlock -g logs:+a, lsattr shows %q", got)
	}
	if code, _, _ := runCmd("indelible", "unlock", "-c", conf); code != 0 {
		t.Errorf("indelible unlock: exit %d", code)
	}
	if code, _, _ := runCmd("sysunlock", "-a", "-q", "-c", conf); code != 0 {
		t.Errorf("unlock audit after unlock: exit %d", code)
	}
}
