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
		{Line: 13, Path: "/var/log/syslog", Groups: []string{"logs", "live"}, Flag: Append},
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
		sel   string
		want  []int
		err   string
		empty string // the selectors that pick nothing, when others do
	}{
		{sel: "etc", want: []int{0}},
		{sel: "logs", want: []int{1, 2}},
		{sel: "logs:+a", want: []int{1}},
		{sel: "logs:+i", want: []int{2}},
		{sel: "+a", want: []int{1}},
		{sel: "etc, live", want: []int{0, 1}},
		{sel: "nope", err: `group "nope" does not exist in test.conf (its groups: etc, configs, logs, live)`},
		{sel: "etc:+a", err: "has no entries managed with +a"},
		{sel: "etc:+a,configs:+a", err: `selection is empty: group "etc" has no entries managed with +a; group "configs" has no entries managed with +a`},
		// One empty selector does not hide the others.
		{sel: "etc:+a,logs", want: []int{1, 2}, empty: `group "etc" has no entries managed with +a`},
		{sel: "live,configs:+a", want: []int{1}, empty: `group "configs" has no entries managed with +a`},
		{sel: "etc:uchg", err: "is a bsd flag"},
		{sel: "etc:zz", err: "unknown flag"},
		{sel: "etc,,logs", err: "empty group name"},
		{sel: "+a:logs", err: "unknown flag"},
		{sel: "a;b", err: "group names use"},
	} {
		sels, err := ParseSelectors(tc.sel, Linux)
		var idx []int
		var empty []string
		if err == nil {
			idx, empty, err = c.Select(sels)
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("-g %s: err = %v, want %q", tc.sel, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(idx, tc.want) || strings.Join(empty, "; ") != tc.empty {
			t.Errorf("-g %s = %v, %q, %v; want %v, %q", tc.sel, idx, empty, err, tc.want, tc.empty)
		}
	}
	sels, _ := ParseSelectors("etc:+a", Linux)
	if _, _, err := c.Select(sels); !errors.Is(err, ErrEmptySelection) {
		t.Errorf("empty intersection: %v, want ErrEmptySelection", err)
	}
	c.Groups = nil
	if _, _, err := c.Select(sels); err == nil || !strings.Contains(err.Error(), "it defines no groups") {
		t.Errorf("no groups: %v", err)
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

// TestGlobOverlap checks the glob-against-glob test on hand-picked pairs,
// then against path.Match on every short name over a small alphabet.
func TestGlobOverlap(t *testing.T) {
	for _, tc := range []struct {
		p, q string
		want bool
	}{
		{"*.log", "a*", true},
		{"*.log", "*.gz", false},
		{"syslog.[0-9]*", "syslog.*", true},
		{"syslog.[0-9]*", "syslog.[a-z]*", false},
		{"syslog.[^0-9]", "syslog.[0-4]", false},
		{"syslog.[^0-9]", "syslog.?", true},
		{".*", "*", false}, // * leaves hidden names alone
		{".*", ".x*", true},
		{"*", "?", true},
		{"a\\*", "a[*]", true},
		{"a\\*", "ab", false},
		{"[\\]]x", "?x", true},
		{"[é-ê]", "ê", true},
		{"[\U0010ffff]", "[^a]", true},
		{"a/", "a?", false}, // no name holds "/"
		{"[", "*", false},   // malformed: path.Match refuses it too
	} {
		name, got := globOverlap(tc.p, tc.q)
		if got != tc.want {
			t.Errorf("globOverlap(%q, %q) = %q, %v; want %v", tc.p, tc.q, name, got, tc.want)
		}
		if got && (!globMatch(tc.p, name) || !globMatch(tc.q, name)) {
			t.Errorf("globOverlap(%q, %q): witness %q does not match both", tc.p, tc.q, name)
		}
	}

	// Exhaustive: every pair of patterns from pieces, against every name
	// of up to four runes over the alphabet the pieces use.
	pieces := []string{"a", "b", ".", "*", "?", "[ab]", "[^a]", "[.-b]"}
	var pats []string
	for _, x := range pieces {
		for _, y := range pieces {
			pats = append(pats, x+y)
			for _, z := range []string{"a", "*", "[^b]"} {
				pats = append(pats, x+y+z)
			}
		}
	}
	alphabet := []string{"a", "b", "c", "."}
	names := []string{""}
	for l, prev := 0, []string{""}; l < 4; l++ {
		var next []string
		for _, n := range prev {
			for _, c := range alphabet {
				next = append(next, n+c)
			}
		}
		names, prev = append(names, next...), next
	}
	names = names[1:]
	for _, p := range pats {
		for _, q := range pats {
			witness, got := globOverlap(p, q)
			want := false
			for _, n := range names {
				if globMatch(p, n) && globMatch(q, n) {
					want = true
					break
				}
			}
			// A witness may need five or more runes (or one outside the
			// alphabet); then it must still match both.
			if got && (!globMatch(p, witness) || !globMatch(q, witness)) {
				t.Fatalf("globOverlap(%q, %q): witness %q does not match both", p, q, witness)
			}
			if want && !got {
				t.Fatalf("globOverlap(%q, %q) = false, but a name matches both", p, q)
			}
		}
	}
}

// TestCheckConflictsGlobs: two globs in one directory with different flags
// conflict when a name can match both, as the documentation says.
func TestCheckConflictsGlobs(t *testing.T) {
	c, err := parseString(t, `group: +a live
/var/log/*.log
group: rotated
/var/log/*.gz
/var/log/a*
/var/log/.a*
/other/a*
`, Linux)
	if err != nil {
		t.Fatal(err)
	}
	c.CheckConflicts(nil)
	if len(c.Warnings) != 1 || c.Warnings[0].Error() != "test.conf:5: conflicting flags: /var/log/a* is managed with +i here, but /var/log/*.log on line 2 can match the same names with +a; the entry processed last wins" {
		t.Errorf("warnings: %v", c.Warnings)
	}
}

// TestCheckConflictsWorkCounted: every ancestor looked up counts towards
// the bound (the configuration's size limit keeps that walk under about
// half a million steps, but the bound is documented as covering it).
func TestCheckConflictsWorkCounted(t *testing.T) {
	var b strings.Builder
	deep := strings.Repeat("/d", 2000)
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, "%s/f%d\n", deep, i)
	}
	c, err := parseString(t, b.String(), Linux)
	if err != nil {
		t.Fatal(err)
	}
	if work := c.checkConflicts(nil); work < 50*2000 || len(c.Warnings) != 0 {
		t.Errorf("%d steps, warnings %v", work, c.Warnings)
	}
}

// TestCheckConflictsSmallWork: globs and paths with the same flag are not
// compared at all (before, each path looked at every glob of its directory
// without counting it), so the largest configuration of that kind, 32768
// globs and 32768 paths in one directory (2.2 s before), takes a few steps
// per entry and raises no warning.
func TestCheckConflictsSmallWork(t *testing.T) {
	var b strings.Builder
	b.WriteString("group: +a x\n")
	for i := 0; i < MaxEntries/2; i++ {
		fmt.Fprintf(&b, "/l/x%d*\n", i)
	}
	for i := 0; i < MaxEntries/2; i++ {
		fmt.Fprintf(&b, "/l/g%d\n", i)
	}
	c, err := parseString(t, b.String(), Linux)
	if err != nil {
		t.Fatal(err)
	}
	work := c.checkConflicts(nil)
	if len(c.Warnings) != 0 || work > 10*len(c.Entries) || work > maxConflictWork {
		t.Errorf("%d steps for %d entries, warnings %v", work, len(c.Entries), c.Warnings)
	}
}
