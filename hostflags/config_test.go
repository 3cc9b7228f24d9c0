package hostflags

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func parseString(t *testing.T, text string, p Platform) (*Config, error) {
	t.Helper()
	return Parse(strings.NewReader(text), "test.conf", ParseOptions{Platform: p})
}

func TestParseEntries(t *testing.T) {
	c, err := parseString(t, `
# comment
   # indented comment
/before/any/group
group: etc configs
/etc/fstab
+/etc/ssh
-/etc/ssl/
=/boot//grub
!/usr/lib
!-/usr/share/relink
group: +a logs   live
/var/log/syslog
group: logs rotated
/var/log/syslog.[0-9]*
`, Linux)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Line: 4, Path: "/before/any/group", Flag: Immutable},
		{Line: 6, Path: "/etc/fstab", Groups: []string{"etc", "configs"}, Flag: Immutable},
		{Line: 7, Path: "/etc/ssh", Prefix: NoRecurse, Groups: []string{"etc", "configs"}, Flag: Immutable},
		{Line: 8, Path: "/etc/ssl", Prefix: ContentsOnly, Groups: []string{"etc", "configs"}, Flag: Immutable},
		{Line: 9, Path: "/boot/grub", Prefix: FilesOnly, Groups: []string{"etc", "configs"}, Flag: Immutable},
		{Line: 10, Path: "/usr/lib", Prefix: KARL, Groups: []string{"etc", "configs"}, Flag: Immutable},
		{Line: 11, Path: "/usr/share/relink", Prefix: KARL | ContentsOnly, Groups: []string{"etc", "configs"}, Flag: Immutable},
		{Line: 13, Path: "/var/log/syslog", Groups: []string{"logs", "live"}, Flag: Append, Explicit: true},
		{Line: 15, Path: "/var/log/syslog.[0-9]*", Glob: true, Groups: []string{"logs", "rotated"}, Flag: Immutable},
	}
	if !reflect.DeepEqual(c.Entries, want) {
		t.Errorf("entries:\n got %+v\nwant %+v", c.Entries, want)
	}
	if g := strings.Join(c.Groups, " "); g != "etc configs logs live rotated" {
		t.Errorf("groups = %q", g)
	}
	if c.ImmutableFlag != Immutable {
		t.Errorf("immutable flag = %v", c.ImmutableFlag)
	}
}

func TestParseBSDFlags(t *testing.T) {
	c, err := parseString(t, `immutable-flag: uchg
group: etc
/etc/rc.conf
group: schg kernel
/bsd
group: uappnd acct
/var/account/acct
group: sappnd acct
/var/log/authlog
group: uchg acct
/var/account/acct.*
`, BSD)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Flag{}
	for _, e := range c.Entries {
		got[e.Path] = e.Flag
	}
	want := map[string]Flag{"/etc/rc.conf": UserImmutable, "/bsd": SysImmutable,
		"/var/account/acct": UserAppend, "/var/log/authlog": SysAppend, "/var/account/acct.*": UserImmutable}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flags = %v, want %v", got, want)
	}
	// The default on BSD is schg, and uchg for non-root users.
	c, err = parseString(t, "/etc/rc\n", BSD)
	if err != nil || c.Entries[0].Flag != SysImmutable {
		t.Errorf("BSD default: %v, %v", c, err)
	}
	c, err = Parse(strings.NewReader("/etc/rc\n"), "x", ParseOptions{Platform: BSD, NonRoot: true})
	if err != nil || c.Entries[0].Flag != UserImmutable {
		t.Errorf("BSD non-root default: %v, %v", c, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		platform   Platform
		nonRoot    bool
		line       int
		msg        string
	}{
		{"relative", "group: a\netc/fstab\n", Linux, false, 2, "expected an absolute path"},
		{"relative after prefix", "+etc\n", Linux, false, 1, "not absolute"},
		{"dotdot", "/etc/../shadow\n", Linux, false, 1, `".." element`},
		{"dot", "/etc/./x\n", Linux, false, 1, `"." element`},
		{"glob in dir", "/var/*/log\n", Linux, false, 1, "only in the last element"},
		{"bare star", "/var/log/*\n", Linux, false, 1, "bare *"},
		{"bad glob", "/var/log/[a\n", Linux, false, 1, "bad glob"},
		{"empty group", "group:\n", Linux, false, 1, "names no groups"},
		{"bad group char", "group: a;b\n", Linux, false, 1, "group names use"},
		{"bsd tag on linux", "group: uappnd logs\n", Linux, false, 1, "uappnd is a bsd flag"},
		{"linux tag on bsd", "group: +a logs\n", BSD, false, 1, "use sappnd or uappnd"},
		{"uchg with schg", "group: uchg schg x\n", BSD, false, 1, "cannot combine uchg and schg"},
		{"uappnd with uchg", "group: uappnd uchg x\n", BSD, false, 1, "cannot combine"},
		{"sappnd with uappnd", "group: sappnd uappnd x\n", BSD, false, 1, "cannot combine"},
		{"+a with +i", "group: +a +i x\n", Linux, false, 1, "cannot combine +a and +i"},
		{"append immutable-flag", "immutable-flag: uappnd\n", BSD, false, 1, "may not be the immutable-flag"},
		{"unknown immutable-flag", "immutable-flag: zzz\n", Linux, false, 1, "unknown immutable-flag"},
		{"bsd immutable-flag on linux", "immutable-flag: schg\n", Linux, false, 1, "use +i"},
		{"empty immutable-flag", "immutable-flag:\n", Linux, false, 1, "needs a value"},
		{"contradicting immutable-flag", "immutable-flag: schg\nimmutable-flag: uchg\n", BSD, false, 2, "contradicts schg set on line 1"},
		{"nonroot schg", "group: schg x\n", BSD, true, 1, "needs root"},
		{"nonroot immutable schg", "immutable-flag: schg\n", BSD, true, 1, "needs root"},
		{"double prefix", "++/etc\n", Linux, false, 1, "given twice"},
		{"= with +", "=+/etc\n", Linux, false, 1, "cannot be combined"},
		{"control char", "/etc/a\x1bb\n", Linux, false, 1, "control character"},
		{"garbage", "groups: a\n", Linux, false, 1, "expected an absolute path"},
		{"long line", "/" + strings.Repeat("a", MaxLineLen+1) + "\n", Linux, false, 1, "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.text), "t.conf", ParseOptions{Platform: tc.platform, NonRoot: tc.nonRoot})
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConfigError", err)
			}
			if ce.Line != tc.line || !strings.Contains(ce.Msg, tc.msg) {
				t.Errorf("err = %v, want line %d and %q", err, tc.line, tc.msg)
			}
			if !strings.HasPrefix(err.Error(), "t.conf:") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestParseReportsEveryBadLine(t *testing.T) {
	_, err := parseString(t, "/ok\nbad1\n/ok2\nbad2\ngroup: x;y\n", Linux)
	var lines []int
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *ConfigError
		if errors.As(e, &ce) {
			lines = append(lines, ce.Line)
		}
	}
	if !reflect.DeepEqual(lines, []int{2, 4, 5}) {
		t.Errorf("error lines = %v (%v)", lines, err)
	}
}

func TestParseLimits(t *testing.T) {
	big := strings.Repeat("# padding padding padding padding padding padding\n", MaxConfigSize/40)
	if _, err := parseString(t, big, Linux); !errors.Is(err, ErrConfigTooLarge) {
		t.Errorf("oversized config: %v", err)
	}
	many := "group: " + strings.Repeat("g ", MaxGroupsPerLine+1)
	if _, err := parseString(t, many, Linux); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("too many groups: %v", err)
	}
	bad := strings.Repeat("bad\n", 100)
	_, err := parseString(t, bad, Linux)
	if err == nil || !strings.Contains(err.Error(), "too many errors") {
		t.Errorf("many bad lines: %v", err)
	}
}

func TestCheckConflicts(t *testing.T) {
	c, err := parseString(t, `group: rotated
/var/log
group: +a live
/var/log/syslog
group: other
/var/log/syslog
group: +a live
/var/log/kern.log
group: rotated
/var/log/kern.log*
group: +a deep
=/srv
/srv/sub/file
/srv/top
group: x
/srv/top
/srv/sub
+/data
group: +a x
/data/a/b
`, Linux)
	if err != nil {
		t.Fatal(err)
	}
	c.CheckConflicts(func(p string) bool { return p == "/srv/sub" })
	var got []string
	for _, w := range c.Warnings {
		got = append(got, w.Error())
	}
	if len(got) == 0 || got[0] != "test.conf:4: conflicting flags: /var/log/syslog is managed with +a here, but /var/log on line 2 reaches it with +i; the entry processed last wins" {
		t.Errorf("first warning: %q", got)
	}
	// Check the set of (line, other line) pairs rather than every word.
	pairs := map[string]bool{}
	for _, w := range c.Warnings {
		pairs[w.Error()[:strings.Index(w.Error(), ": conflicting")]+" "+between(w.Msg, " on line ", " ")] = true
	}
	wantPairs := []string{"test.conf:4 2", "test.conf:6 4", "test.conf:8 10", "test.conf:8 2", "test.conf:13 17", "test.conf:16 14", "test.conf:16 12"}
	for _, p := range wantPairs {
		if !pairs[p] {
			t.Errorf("missing warning %q in:\n%s", p, strings.Join(got, "\n"))
		}
	}
	if len(pairs) != len(wantPairs) {
		t.Errorf("got %d warnings, want %d:\n%s", len(pairs), len(wantPairs), strings.Join(got, "\n"))
	}
}

// TestCheckConflictsBounded: a configuration built to make the check
// quadratic (thousands of globs and paths in one directory, never matching)
// stops early with a warning instead of running for minutes.
func TestCheckConflictsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("group: +a x\n")
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&b, "/d/x%d*\n", i)
	}
	b.WriteString("group: y\n")
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&b, "/d/g%d\n", i)
	}
	c, err := parseString(t, b.String(), Linux)
	if err != nil {
		t.Fatal(err)
	}
	c.CheckConflicts(nil)
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].Msg, "stopped checking for conflicting flags") {
		t.Errorf("warnings: %v", c.Warnings)
	}
}

func between(s, a, b string) string {
	i := strings.Index(s, a)
	if i < 0 {
		return ""
	}
	s = s[i+len(a):]
	if j := strings.Index(s, b); j >= 0 {
		return s[:j]
	}
	return s
}

func TestSelectors(t *testing.T) {
	c, err := parseString(t, `group: etc configs
/etc/a
group: +a logs live
/var/log/syslog
group: logs
/var/log/old
`, Linux)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sel  string
		want []int
		err  string
	}{
		{"etc", []int{0}, ""},
		{"logs", []int{1, 2}, ""},
		{"logs:+a", []int{1}, ""},
		{"logs:+i", []int{2}, ""},
		{"+a", []int{1}, ""},
		{"etc, live", []int{0, 1}, ""},
		{"nope", nil, `group "nope" does not exist`},
		{"etc:+a", nil, "has no entries managed with +a"},
		{"etc:uchg", nil, "is a bsd flag"},
		{"etc:zz", nil, "unknown flag"},
		{"etc,,logs", nil, "empty group name"},
		{"+a:logs", nil, "unknown flag"},
		{"a;b", nil, "group names use"},
	} {
		sels, err := ParseSelectors(tc.sel, Linux)
		var idx []int
		if err == nil {
			idx, err = c.Select(sels)
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("-g %s: err = %v, want %q", tc.sel, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(idx, tc.want) {
			t.Errorf("-g %s = %v, %v; want %v", tc.sel, idx, err, tc.want)
		}
	}
	sels, _ := ParseSelectors("etc:+a", Linux)
	if _, err := c.Select(sels); !errors.Is(err, ErrEmptySelection) {
		t.Errorf("empty intersection: %v, want ErrEmptySelection", err)
	}
}

// TestExampleConfigs parses every sample shipped in examples/syslock with
// its platform's vocabulary.
func TestExampleConfigs(t *testing.T) {
	files, _ := filepath.Glob("../examples/syslock/*.conf")
	if len(files) < 4 {
		t.Fatalf("found %d example configs", len(files))
	}
	for _, f := range files {
		p := Linux
		if strings.Contains(f, "openbsd") || strings.Contains(f, "macos") {
			p = BSD
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Parse(strings.NewReader(string(data)), f, ParseOptions{Platform: p})
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		c.CheckConflicts(nil)
		if len(c.Entries) < 5 || len(c.Warnings) != 0 {
			t.Errorf("%s: %d entries, warnings %v", f, len(c.Entries), c.Warnings)
		}
	}
}
