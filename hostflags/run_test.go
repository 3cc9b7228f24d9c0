//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package hostflags

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// These tests audit or dry-run in a temporary directory: they read flags
// and change none, so they need neither root nor a scratch filesystem. On
// a filesystem without flags every read is an error, which the assertions
// below allow for where it matters.

// tempTree creates files below a new temporary directory and returns it.
func tempTree(t *testing.T, names ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, n := range names {
		p := filepath.Join(root, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func parseNative(t *testing.T, root, text string) *Config {
	t.Helper()
	c, err := Parse(strings.NewReader(strings.ReplaceAll(text, "@", root)), "run.conf", ParseOptions{Platform: Native()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type capture struct {
	out  bytes.Buffer
	logs []string
}

func runOpts(c *capture, opts Options) Options {
	opts.Out = &c.out
	opts.Logf = func(format string, a ...any) { c.logs = append(c.logs, fmt.Sprintf(format, a...)) }
	return opts
}

func selectors(t *testing.T, s string) []Selector {
	t.Helper()
	sels, err := ParseSelectors(s, Native())
	if err != nil {
		t.Fatal(err)
	}
	return sels
}

// immutableAndAppend are the native flags a test configuration uses.
func immutableAndAppend() (string, string) {
	if Native() == BSD {
		return "uchg", "uappnd"
	}
	return "+i", "+a"
}

// TestAuditWithAnEmptySelector: one -g selector that picks nothing must not
// hide the others. Before, "-a -q -g etc:+a,logs" exited 0 (consistent)
// without auditing logs at all.
func TestAuditWithAnEmptySelector(t *testing.T) {
	root := tempTree(t, "etc/a", "logs/syslog")
	imm, app := immutableAndAppend()
	c := parseNative(t, root, "group: etc\n@/etc/a\ngroup: "+app+" logs\n@/logs/syslog\n")
	var cp capture
	res, err := Run(context.Background(), c, runOpts(&cp, Options{Op: Lock, Audit: true, Quiet: true, Select: selectors(t, "etc:"+app+",logs")}))
	if err != nil || res.Consistent() || res.Entries != 1 || len(cp.logs) != 0 || cp.out.Len() != 0 {
		t.Fatalf("quiet audit: %+v, %v, %q %q", res, err, cp.logs, cp.out.String())
	}
	cp = capture{}
	res, err = Run(context.Background(), c, runOpts(&cp, Options{Op: Lock, Audit: true, Select: selectors(t, "etc:"+app+",logs")}))
	if err != nil || res.Consistent() || res.Entries != 1 {
		t.Fatalf("audit: %+v, %v", res, err)
	}
	if len(cp.logs) == 0 || cp.logs[0] != `warning: -g selects nothing: group "etc" has no entries managed with `+app {
		t.Errorf("logs: %q", cp.logs)
	}
	// Every selector empty: still the error syslock's quiet audit maps to 0.
	_, err = Run(context.Background(), c, runOpts(&capture{}, Options{Op: Lock, Audit: true, Select: selectors(t, "etc:"+app+",logs:"+imm)}))
	if !errors.Is(err, ErrEmptySelection) {
		t.Errorf("all selectors empty: %v", err)
	}
}

// TestLockAuditMissing: in a lock audit a configured file that does not
// exist is a mismatch (before, the audit said everything was in order); a
// glob matching nothing is not, and says so; an unlock audit is content.
func TestLockAuditMissing(t *testing.T) {
	root := tempTree(t, "logs/other")
	_, app := immutableAndAppend()
	c := parseNative(t, root, "group: "+app+" live\n@/logs/syslog\ngroup: rotated\n@/logs/syslog.[0-9]*\n@/gone/*.log\n")
	var cp capture
	res, err := Run(context.Background(), c, runOpts(&cp, Options{Op: Lock, Audit: true}))
	if err != nil {
		t.Fatal(err)
	}
	state := c.Entries[0].Flag.lockedState()
	if want := root + "/logs/syslog (should be " + state + ", missing)\n"; cp.out.String() != want {
		t.Errorf("output %q, want %q", cp.out.String(), want)
	}
	if res.Consistent() || res.Missing != 1 || res.Mismatched != 1 {
		t.Errorf("lock audit: %+v", res)
	}
	logs := strings.Join(cp.logs, "\n")
	if !strings.Contains(logs, "glob "+root+"/logs/syslog.[0-9]* matches no files (line 4)") ||
		!strings.Contains(logs, "glob "+root+"/gone/*.log matches no files: "+root+"/gone does not exist (line 5)") {
		t.Errorf("logs:\n%s", logs)
	}
	res, err = Run(context.Background(), c, runOpts(&capture{}, Options{Op: Lock, Audit: true, Quiet: true}))
	if err != nil || res.Consistent() {
		t.Errorf("quiet lock audit: %+v, %v", res, err)
	}
	cp = capture{}
	res, err = Run(context.Background(), c, runOpts(&cp, Options{Op: Unlock, Audit: true}))
	if err != nil || !res.Consistent() || cp.out.Len() != 0 || !strings.Contains(strings.Join(cp.logs, "\n"), root+"/logs/syslog does not exist; nothing to unlock") {
		t.Errorf("unlock audit: %+v, %v, %q %q", res, err, cp.out.String(), cp.logs)
	}
}

// countdownCtx is a context whose Err turns to Canceled after n calls.
type countdownCtx struct {
	context.Context
	n int
}

func (c *countdownCtx) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

// TestRunStopsWhenCancelled: SIGINT cancels the context; Run must notice
// between entries and between the files of a glob, not only inside
// directory walks.
func TestRunStopsWhenCancelled(t *testing.T) {
	root := tempTree(t, "logs/a", "logs/syslog.1", "logs/syslog.2", "logs/syslog.3")
	c := parseNative(t, root, "@/logs/a\n@/logs/syslog.*\n")
	handled := func(r *Result) int { return r.Unchanged + r.Mismatched + r.Errors }

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := Run(ctx, c, runOpts(&capture{}, Options{Op: Lock, Audit: true}))
	if !errors.Is(err, context.Canceled) || res == nil || res.Entries != 0 || handled(res) != 0 {
		t.Errorf("cancelled before the first entry: %+v, %v", res, err)
	}
	// Cancelled after the first entry and one more check: the glob stops
	// before its first file.
	res, err = Run(&countdownCtx{Context: context.Background(), n: 2}, c, runOpts(&capture{}, Options{Op: Lock, Audit: true}))
	if !errors.Is(err, context.Canceled) || res == nil || res.Entries != 2 || handled(res) != 1 {
		t.Errorf("cancelled inside the glob: %+v, %v", res, err)
	}
}

// TestVerboseQuotesNames: a file name holding a newline must not forge a
// line of verbose or dry-run output.
func TestVerboseQuotesNames(t *testing.T) {
	root := tempTree(t, "logs/log.1\nlocking FORGED", "d/x\nrecursively locking FORGED/y")
	c := parseNative(t, root, "@/logs/log.*\n")
	var cp capture
	if _, err := Run(context.Background(), c, runOpts(&cp, Options{Op: Lock, DryRun: true, Verbose: true})); err != nil {
		t.Fatal(err)
	}
	want := "locking \"" + root + "/logs/log.1\\nlocking FORGED\"\n"
	if !strings.HasPrefix(cp.out.String(), want) {
		t.Errorf("output %q, want it to start with %q", cp.out.String(), want)
	}
	for _, line := range strings.Split(cp.out.String(), "\n") {
		if strings.HasPrefix(line, "locking FORGED") {
			t.Errorf("forged line in %q", cp.out.String())
		}
	}
	if got := (&runner{opts: Options{Op: Lock}}).describe(root+"/d\nx", 0); got != "recursively locking \""+root+"/d\\nx\"" {
		t.Errorf("describe: %q", got)
	}
}

// TestReadNamesErrorNamesNoPath: readNames' errors carry no path, so the
// caller's quoted one is the only one in the message.
func TestReadNamesErrorNamesNoPath(t *testing.T) {
	root := tempTree(t, "f")
	f, err := os.Open(filepath.Join(root, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = readNames(int(f.Fd()))
	if err == nil || strings.Contains(err.Error(), root) {
		t.Errorf("readNames of a file: %v", err)
	}
}

// TestGlobResolution: a glob's directory is resolved like a literal path
// (a symbolic link to a directory is followed, as it is for a literal path
// through it), and a glob does not match hidden names unless its pattern
// starts with ".".
func TestGlobResolution(t *testing.T) {
	root := tempTree(t, "real/syslog", "real/syslog.1", "real/.x.log", "real/a.log", "real/.hidden.1")
	if err := os.Symlink("real", filepath.Join(root, "lnk")); err != nil {
		t.Fatal(err)
	}
	c := parseNative(t, root, "@/lnk/syslog\n@/lnk/syslog.*\n@/real/*.log\n@/real/.h*\n")
	var cp capture
	res, err := Run(context.Background(), c, runOpts(&cp, Options{Op: Lock, Audit: true}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Skipf("no flags on this filesystem: %q", cp.logs)
	}
	state := c.ImmutableFlag.lockedState()
	var want string
	for _, p := range []string{"lnk/syslog", "lnk/syslog.1", "real/a.log", "real/.hidden.1"} {
		want += fmt.Sprintf("%s/%s (should be %s, flags=", root, p, state)
	}
	got := cp.out.String()
	var gotPrefixes string
	for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		if i := strings.Index(line, "flags="); i >= 0 {
			gotPrefixes += line[:i+len("flags=")]
		}
	}
	if gotPrefixes != want || res.Mismatched != 4 || len(cp.logs) != 0 {
		t.Errorf("audit output:\n%s\nlogs %q, %+v", got, cp.logs, res)
	}
}
