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
group: sys
/sbin/init
`), "bsd.conf", ParseOptions{Platform: BSD})
	if err != nil {
		t.Fatal(err)
	}
	all := []int{0, 1, 2, 3, 4}
	const (
		lockNotice   = "System securelevel is 1; syslock of schg/sappnd files requires -f or securelevel < 1.\n"
		unlockNotice = "System securelevel is 1; sysunlock of schg/sappnd files requires securelevel < 1.\n"
	)
	for _, tc := range []struct {
		name  string
		level int
		opts  Options
		sel   string
		want  []int
		err   string
		out   string // the whole output
	}{
		{name: "securelevel 0 touches everything", level: 0, opts: Options{Op: Unlock}, want: all},
		{name: "lock skips system flags", level: 1, opts: Options{Op: Lock}, want: []int{1, 2}},
		{name: "lock -f sets them", level: 2, opts: Options{Op: Lock, Force: true}, want: all},
		{name: "unlock skips them", level: 1, opts: Options{Op: Unlock, Force: true}, want: []int{1, 2}},
		{name: "naming schg is an error", level: 1, opts: Options{Op: Lock}, sel: "etc:schg", err: "syslock of schg/sappnd requires -f or securelevel < 1"},
		{name: "naming sappnd for unlock is an error", level: 1, opts: Options{Op: Unlock}, sel: "sappnd", err: "sysunlock of schg/sappnd requires securelevel < 1"},
		{name: "naming both system flags is an error", level: 1, opts: Options{Op: Unlock}, sel: "etc:schg,logs:sappnd", err: "sysunlock of schg/sappnd requires securelevel < 1"},
		// A group holding only system entries, not named by flag: they
		// are skipped, and then nothing is left to do.
		{name: "nothing left is an error", level: 1, opts: Options{Op: Unlock}, sel: "sys", err: "requires securelevel < 1, and nothing else is selected"},
		{name: "nothing left to lock is an error", level: 1, opts: Options{Op: Lock}, sel: "sys", err: "syslock of schg/sappnd requires -f or securelevel < 1, and nothing else is selected"},
		{name: "verbose says what is skipped", level: 1, opts: Options{Op: Lock, Verbose: true}, sel: "etc", want: []int{1},
			out: "System securelevel is 1; skipping 1 schg/sappnd entries (syslock requires -f or securelevel < 1).\n"},
		{name: "audit checks everything", level: 1, opts: Options{Op: Lock, Audit: true}, want: all, out: lockNotice},
		{name: "audit of a system-only group", level: 1, opts: Options{Op: Unlock, Audit: true, Operational: true}, sel: "sys", want: nil, out: unlockNotice},
		{name: "audit -o checks what can change", level: 1, opts: Options{Op: Unlock, Audit: true, Operational: true}, want: []int{1, 2}, out: unlockNotice},
		{name: "audit -o with schg named", level: 1, opts: Options{Op: Lock, Audit: true, Operational: true}, sel: "schg", want: all,
			out: lockNotice + "Overriding -o to audit schg/sappnd files as explicitly requested.\n"},
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
			idx, _, err := c.Select(tc.opts.Select)
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
			if out.String() != tc.out {
				t.Errorf("output %q, want %q", out.String(), tc.out)
			}
		})
	}
}
