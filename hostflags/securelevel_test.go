//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package hostflags

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestSecurelevelRules checks syslock's securelevel decisions for BSD
// system flags. They are pure decisions about which entries run, so they
// are tested here on any system with a BSD configuration.
func TestSecurelevelRules(t *testing.T) {
	c, err := Parse(strings.NewReader(`immutable-flag: schg
group: etc
/etc/rc
group: uchg etc
/etc/pf.conf
group: uappnd logs
/var/log/messages
group: sappnd logs
/var/log/authlog
`), "bsd.conf", ParseOptions{Platform: BSD})
	if err != nil {
		t.Fatal(err)
	}
	all := []int{0, 1, 2, 3}
	for _, tc := range []struct {
		name  string
		level int
		opts  Options
		sel   string
		want  []int
		err   string
		out   string
	}{
		{name: "securelevel 0 touches everything", level: 0, opts: Options{Op: Unlock}, want: all},
		{name: "lock skips system flags", level: 1, opts: Options{Op: Lock}, want: []int{1, 2}},
		{name: "lock -f sets them", level: 2, opts: Options{Op: Lock, Force: true}, want: all},
		{name: "unlock skips them", level: 1, opts: Options{Op: Unlock, Force: true}, want: []int{1, 2}},
		{name: "naming schg is an error", level: 1, opts: Options{Op: Lock}, sel: "etc:schg", err: "syslock of schg/sappnd requires -f or securelevel < 1"},
		{name: "naming sappnd for unlock is an error", level: 1, opts: Options{Op: Unlock}, sel: "sappnd", err: "sysunlock of schg/sappnd requires securelevel < 1"},
		{name: "nothing left is an error", level: 1, opts: Options{Op: Unlock}, sel: "etc:schg,logs:sappnd", err: "requires securelevel < 1"},
		{name: "audit checks everything", level: 1, opts: Options{Op: Lock, Audit: true}, want: all, out: "System securelevel is 1; syslock of schg/sappnd files requires -f or securelevel < 1.\n"},
		{name: "audit -o checks what can change", level: 1, opts: Options{Op: Unlock, Audit: true, Operational: true}, want: []int{1, 2}},
		{name: "audit -o with schg named", level: 1, opts: Options{Op: Lock, Audit: true, Operational: true}, sel: "schg", want: all, out: "Overriding -o"},
		{name: "quiet audit prints nothing", level: 1, opts: Options{Op: Lock, Audit: true, Quiet: true}, want: all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			tc.opts.Out = &out
			if tc.sel != "" {
				if tc.opts.Select, err = ParseSelectors(tc.sel, BSD); err != nil {
					t.Fatal(err)
				}
			}
			idx, err := c.Select(tc.opts.Select)
			if err != nil {
				t.Fatal(err)
			}
			r := &runner{opts: tc.opts, res: &Result{Securelevel: tc.level, HaveSecurelevel: true}}
			got, err := r.applySecurelevel(c, idx)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The selection applies first, then the securelevel.
			var want []int
			for _, i := range tc.want {
				for _, j := range idx {
					if i == j {
						want = append(want, i)
					}
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("entries = %v, want %v", got, want)
			}
			if !strings.Contains(out.String(), tc.out) || (tc.opts.Quiet && out.Len() > 0) {
				t.Errorf("output %q, want %q", out.String(), tc.out)
			}
		})
	}
}
