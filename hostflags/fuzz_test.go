package hostflags

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParse feeds arbitrary configurations to Parse, seeded with the sample
// configurations, and checks that whatever it accepts is well formed.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../examples/syslock/*.conf")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, strings.Contains(name, "bsd") || strings.Contains(name, "macos"), false)
	}
	f.Add([]byte("group: +a a\n!=/x/y*\n-+/z\n"), false, false)
	f.Add([]byte("immutable-flag: uchg\ngroup: schg k\n/bsd\n"), true, true)
	f.Fuzz(func(t *testing.T, data []byte, bsd, nonRoot bool) {
		p := Linux
		if bsd {
			p = BSD
		}
		c, err := Parse(strings.NewReader(string(data)), "fuzz.conf", ParseOptions{Platform: p, NonRoot: nonRoot})
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		if len(c.Entries) > MaxEntries {
			t.Fatalf("%d entries", len(c.Entries))
		}
		for _, e := range c.Entries {
			if e.Flag == 0 || e.Flag.Platform() != p {
				t.Fatalf("line %d: flag %v on %v", e.Line, e.Flag, p)
			}
			if nonRoot && bsd && e.Flag.IsSystem() {
				t.Fatalf("line %d: system flag for a non-root user", e.Line)
			}
			if !strings.HasPrefix(e.Path, "/") || path.Clean(e.Path) != e.Path {
				t.Fatalf("line %d: path %q not absolute and clean", e.Line, e.Path)
			}
			for _, el := range strings.Split(e.Path, "/") {
				if el == ".." {
					t.Fatalf("line %d: path %q has ..", e.Line, e.Path)
				}
			}
			if e.Prefix&FilesOnly != 0 && e.Prefix&(NoRecurse|ContentsOnly) != 0 {
				t.Fatalf("line %d: prefix %v", e.Line, e.Prefix)
			}
			if e.Glob != strings.ContainsAny(path.Base(e.Path), "*?[") || strings.ContainsAny(path.Dir(e.Path), "*?[") {
				t.Fatalf("line %d: glob %v for %q", e.Line, e.Glob, e.Path)
			}
		}
		c.CheckConflicts(nil)
		for i, g := range c.Groups {
			if i == 64 {
				break // Select is linear; the CLI caps -g at MaxSelectors
			}
			sels, err := ParseSelectors(g, p)
			if err != nil {
				t.Fatalf("group %q from the config is not a valid selector: %v", g, err)
			}
			if _, _, err := c.Select(sels); err != nil {
				t.Fatalf("selecting group %q: %v", g, err)
			}
		}
	})
}

// FuzzParseSelectors checks that -g values never panic and round-trip.
func FuzzParseSelectors(f *testing.F) {
	for _, s := range []string{"etc", "logs:+a", "+a", "a,b:uchg", "schg", "x:", ":y", ",,"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, bsd bool) {
		p := Linux
		if bsd {
			p = BSD
		}
		sels, err := ParseSelectors(s, p)
		if err != nil {
			return
		}
		var parts []string
		for _, sel := range sels {
			parts = append(parts, sel.String())
		}
		again, err := ParseSelectors(strings.Join(parts, ","), p)
		if err != nil || len(again) != len(sels) {
			t.Fatalf("%q -> %v -> %v, %v", s, sels, again, err)
		}
		for i := range sels {
			if sels[i] != again[i] {
				t.Fatalf("%q: %v != %v", s, sels[i], again[i])
			}
		}
	})
}

// FuzzGlobOverlap checks the glob-against-glob conflict test against
// path.Match: a name both patterns match means they overlap, and the
// witness of an overlap matches both.
func FuzzGlobOverlap(f *testing.F) {
	for _, s := range [][3]string{
		{"*.log", "a*", "a.log"}, {"syslog.[0-9]*", "syslog.[^0-9]", "syslog.1"},
		{".*", "*", ".x"}, {"a\\*", "[\\]]x", "]x"}, {"[é-ê]*", "?", "é"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, p, q, name string) {
		if len(p) > 64 || len(q) > 64 {
			return
		}
		if _, err := path.Match(p, ""); err != nil {
			return
		}
		if _, err := path.Match(q, ""); err != nil {
			return
		}
		witness, ok := globOverlap(p, q)
		if ok && (!globMatch(p, witness) || !globMatch(q, witness)) {
			t.Fatalf("globOverlap(%q, %q): witness %q does not match both", p, q, witness)
		}
		valid := name != "" && utf8.ValidString(name) && utf8.ValidString(p) && utf8.ValidString(q) && !strings.ContainsAny(name, "/\x00")
		if valid && !ok && globMatch(p, name) && globMatch(q, name) {
			t.Fatalf("globOverlap(%q, %q) = false, but %q matches both", p, q, name)
		}
	})
}
