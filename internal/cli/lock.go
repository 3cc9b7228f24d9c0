package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/indelible-worm/indelible/hostflags"
)

func init() {
	register(&Command{
		Name:           "lock",
		WatchesContext: true,
		Args:           "[-a [-q] [-o]] [-f] [-s] [-w] [-v] [-d] [-c FILE] [-g GROUP[:FLAG],...]",
		Short:          "make groups of host files immutable or append-only (syslock)",
		Long:           lockHelp,
		Flags:          func(fs *flag.FlagSet) { lockFlags(fs, hostflags.Lock) },
		Run:            func(env *Env, fs *flag.FlagSet, args []string) error { return runLock(env, fs, args, hostflags.Lock) },
		Aliases:        []string{"syslock"},
		Getopt:         true,
	})
	register(&Command{
		Name:           "unlock",
		WatchesContext: true,
		Args:           "[-a [-q] [-o]] [-s] [-v] [-d] [-c FILE] [-g GROUP[:FLAG],...]",
		Short:          "remove the flags lock set (sysunlock)",
		Long:           unlockHelp,
		Flags:          func(fs *flag.FlagSet) { lockFlags(fs, hostflags.Unlock) },
		Run:            func(env *Env, fs *flag.FlagSet, args []string) error { return runLock(env, fs, args, hostflags.Unlock) },
		Aliases:        []string{"sysunlock"},
		Getopt:         true,
	})
}

const lockCommon = `
The configuration (default /etc/syslock.conf for root, ~/.syslock.conf for
other users) is syslock's. It must be owned by root or by you and writable
by no one else. Lines:

  # comment
  immutable-flag: +i        the default flag (Linux: +i; BSD: schg or uchg)
  group: NAME [NAME...]     the paths below belong to every NAME; a flag
                            tag among the names (+a, +i on Linux; uchg,
                            schg, uappnd, sappnd on BSD) sets their flag
  /path                     a file, or a directory and everything below it
  +/dir                     the directory and its direct entries only
  -/dir                     everything below the directory, not the directory
  =/dir                     the directory and the files directly in it
  !/path                    also handled by -s (may combine: !-/dir)
  /var/log/syslog.[0-9]*    a glob, in the last element only; matches files
                            (names starting with "." only if the pattern
                            does, as in the shell)

Overlapping groups let you unlock the smallest set a task needs. Symbolic
links are never followed below a configured path (a configured path that is
a link is skipped; links above it, and in a glob's directory, are followed),
devices and FIFOs are never opened, and paths that do not exist or vanish
are reported and skipped. A glob that matches nothing (rotated logs that do
not exist yet) is reported and is not an error. Two entries giving one path
different flags get a warning with their line numbers, and so do two globs
in one directory with different flags that can match the same name.

Lock leaves each path with exactly its configured flag among the locking
flags (others, such as noatime, are kept); unlock removes them all; the
audit (-a) checks those two states and prints each path that differs as
"PATH (should be locked, flags=ie)", exiting 0 when everything is as it
should be and 1 when not. In a lock audit a configured path that does not
exist differs too ("PATH (should be locked, missing)"); in an unlock audit
it is trivially unlocked. Exit status 2 means a bad command line or
configuration.

On a filesystem without flags (FAT, exFAT, ramfs, ...) lock fails, naming
the filesystem; unlock and its audit warn and count the files as unlocked,
so "unlock -g rotate" before log rotation does not fail there.

What the options do:
  -g GROUP[:FLAG],...  only these groups; GROUP:FLAG picks the group's
                       entries with that flag (logs:+a), FLAG alone every
                       entry with it (+a, uchg). A GROUP:FLAG or FLAG that
                       picks nothing gets a warning and the others still
                       run; when every one picks nothing, that is an error
                       (exit 2), except for a quiet audit (exit 0, as with
                       syslock: nothing selected cannot be inconsistent)
  -a                   audit only: change nothing, report what differs
  -q                   with -a: print nothing (no warnings either), stop at
                       the first difference; the exit status says it all
  -o                   with -a: audit only what could be changed now; on
                       the BSDs, schg/sappnd entries are left out while
                       kern.securelevel > 0 unless named in -g. Linux has no
                       securelevel (root may always change +i and +a), so
                       there -o audits the same set as -a alone
  -s                   only the entries marked "!": OpenBSD relinks those
                       (KARL) at boot. It works the same on every system
  -c FILE              read FILE instead of the default configuration
  -v                   say what is being done, and a summary
  -d                   debug: report each change that would be made and
                       make none (syslock -d echoes its chflags/chattr
                       commands instead of running them); not with -a
  -V                   print the version

On Linux the flags are set with FS_IOC_SETFLAGS, which needs root (the
CAP_LINUX_IMMUTABLE capability); filesystems without flags (FAT, exFAT,
FUSE, ramfs, ...) are reported by name. On FreeBSD, OpenBSD and macOS the
flags are set with fchflags; schg and sappnd cannot be removed while
kern.securelevel > 0, so unlock skips them then, and lock skips them unless
-f is given; naming them in -g makes that an error instead of a skip.
Unlike syslock, indelible never remounts / read-write.

Single-letter flags may be combined (-aq) or given separately (-a -q).
`

const lockHelp = `Lock sets the flags that a syslock configuration gives its paths (the
same command runs as "syslock" when the binary is invoked by that name).
` + lockCommon + `
Lock only:
  -f                   set schg/sappnd even when kern.securelevel > 0
                       (they then stay until the securelevel is lowered)
  -w                   OpenBSD: first wait (up to 5 minutes) until the boot
                       time kernel and library relinking is done, for
                       "lock -s -w -f" in /etc/rc.securelevel. Elsewhere
                       there is nothing to wait for and -w does nothing

Examples:
  indelible lock                          lock everything in /etc/syslock.conf
  indelible lock -g device-logs           lock one group
  indelible lock -g device-logs:+a        only its append-only files
  indelible lock -a -q || echo unlocked   audit, for cron or scripts
  syslock -c /etc/indelible/syslock.conf  the same binary, as syslock
`

const unlockHelp = `Unlock removes the flags that lock set (the same command runs as
"sysunlock" when the binary is invoked by that name).
` + lockCommon + `
Examples:
  indelible unlock -g rotated             before log rotation
  indelible unlock -a -q -g configs       exit 0 only if configs is unlocked
  sysunlock                               unlock everything (upgrades)
`

// lockFlags registers syslock's options; -f and -w exist for lock only.
func lockFlags(fs *flag.FlagSet, op hostflags.Op) {
	fs.String("g", "", "only these `groups`: GROUP, GROUP:FLAG or FLAG, comma-separated")
	fs.Bool("a", false, "audit: change nothing, report paths not in the expected state (exit 1)")
	fs.Bool("q", false, "with -a: print nothing, only the exit status")
	fs.Bool("o", false, "with -a: only what can change now (BSD securelevel; same as -a on Linux)")
	fs.Bool("s", false, `only the entries marked "!" (OpenBSD KARL files)`)
	fs.String("c", "", "configuration `file` (default /etc/syslock.conf, or ~/.syslock.conf when not root)")
	fs.Bool("v", false, "verbose")
	fs.Bool("d", false, "debug: report the changes, make none (not with -a)")
	fs.Bool("V", false, "print the version")
	if op == hostflags.Lock {
		fs.Bool("f", false, "set schg/sappnd even at securelevel > 0 (BSD)")
		fs.Bool("w", false, "OpenBSD: wait for kernel and library relinking first")
	}
}

func boolFlag(fs *flag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	b, _ := g.Get().(bool)
	return b
}

func runLock(env *Env, fs *flag.FlagSet, args []string, op hostflags.Op) error {
	if len(args) > 0 {
		return usageErrorf("unexpected argument %q; the paths come from the configuration (-c FILE)", args[0])
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["V"] {
		if len(set) > 1 {
			return usageErrorf("-V cannot be combined with other options")
		}
		fmt.Fprintf(env.Stdout, "%s (indelible) %s\n", fs.Name(), Version)
		return nil
	}
	opts := hostflags.Options{
		Op:          op,
		Audit:       boolFlag(fs, "a"),
		Quiet:       boolFlag(fs, "q"),
		Operational: boolFlag(fs, "o"),
		Force:       boolFlag(fs, "f"),
		KARLOnly:    boolFlag(fs, "s"),
		DryRun:      boolFlag(fs, "d"),
		Verbose:     boolFlag(fs, "v"),
		Out:         env.Stdout,
	}
	wait := boolFlag(fs, "w")
	switch {
	case opts.Audit && opts.Force:
		return usageErrorf("-a (audit) cannot be combined with -f (force)")
	case opts.Audit && wait:
		return usageErrorf("-a (audit) cannot be combined with -w (wait)")
	case opts.Audit && opts.Verbose:
		return usageErrorf("-a (audit) cannot be combined with -v (verbose)")
	case opts.Audit && opts.DryRun:
		return usageErrorf("-a (audit) cannot be combined with -d (debug); -a already changes nothing")
	case opts.Quiet && !opts.Audit:
		return usageErrorf("-q (quiet) needs -a (audit)")
	case opts.Operational && !opts.Audit:
		return usageErrorf("-o (operational scope) needs -a (audit)")
	}
	platform := hostflags.Native()
	if platform == 0 {
		return &ExitError{Code: 1, Err: errors.New("indelible: immutability flags are not supported on this operating system")}
	}
	nonRoot := os.Geteuid() != 0
	if nonRoot && platform == hostflags.BSD {
		// Only the owner's user flags are within reach (syslock's rule).
		for _, n := range []string{"s", "w", "f"} {
			if set[n] {
				return usageErrorf("-%s is available to root only", n)
			}
		}
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(env.Stderr, "indelible: "+format+"\n", a...)
	}
	opts.Logf = logf

	file := fs.Lookup("c").Value.String()
	if file == "" {
		var err error
		if file, err = defaultLockConfig(env, nonRoot); err != nil {
			return usageErrorf("%v", err)
		}
	}
	cfg, warnings, err := hostflags.ReadConfigFile(file, hostflags.ParseOptions{Platform: platform, NonRoot: nonRoot && platform == hostflags.BSD})
	if err != nil {
		return configError(env, file, err)
	}
	cfg.CheckConflicts(func(p string) bool {
		fi, err := os.Lstat(p)
		return err == nil && fi.IsDir()
	})
	if !opts.Quiet {
		for _, w := range warnings {
			logf("warning: %s", w)
		}
		for _, w := range cfg.Warnings {
			logf("warning: %v", w)
		}
	}
	if g := fs.Lookup("g").Value.String(); g != "" {
		if opts.Select, err = hostflags.ParseSelectors(g, platform); err != nil {
			return usageErrorf("%v", err)
		}
	}
	if wait && op == hostflags.Lock {
		if hostflags.KARLWaitSupported {
			var wlog func(string, ...any)
			if opts.Verbose {
				wlog = func(format string, a ...any) { fmt.Fprintf(env.Stdout, format+"\n", a...) }
			}
			if err := hostflags.WaitKARL(env.Context, wlog); err != nil {
				return &ExitError{Code: 1, Err: fmt.Errorf("indelible: -w: %v", err)}
			}
		} else if opts.Verbose {
			fmt.Fprintf(env.Stdout, "-w: no boot-time kernel or library relinking on this system; nothing to wait for\n")
		}
	}

	res, err := hostflags.Run(env.Context, cfg, opts)
	if err != nil {
		if errors.Is(err, hostflags.ErrEmptySelection) && opts.Audit && opts.Quiet {
			// syslock: a group with no such files cannot be inconsistent.
			// Run returns this only when every selector is empty; one
			// empty selector among others is a warning, and the others
			// are audited.
			return nil
		}
		code := 1
		if errors.Is(err, hostflags.ErrNoSuchGroup) || errors.Is(err, hostflags.ErrEmptySelection) {
			code = 2
		}
		return &ExitError{Code: code, Err: fmt.Errorf("indelible: %s", hostflagsMsg(err))}
	}
	return lockSummary(env, opts, res)
}

// lockSummary prints the closing line and picks the exit status: for an
// audit, 0 when consistent and 1 when not; otherwise 1 when any path failed.
func lockSummary(env *Env, opts hostflags.Options, res *hostflags.Result) error {
	if opts.Audit {
		if res.Consistent() {
			if !opts.Quiet {
				if opts.Operational && res.Skipped > 0 {
					fmt.Fprintf(env.Stdout, "Audit complete: all actionable files are in the expected state (schg/sappnd files skipped at securelevel %d).\n", res.Securelevel)
				} else {
					fmt.Fprintf(env.Stdout, "Audit complete: all files are in the expected state.\n")
				}
			}
			return nil
		}
		if !opts.Quiet {
			missing := ""
			if res.Missing > 0 {
				missing = fmt.Sprintf(" (%d missing)", res.Missing)
			}
			fmt.Fprintf(env.Stdout, "Audit complete: %d not in the expected state%s, %d errors, %d as expected.\n", res.Mismatched, missing, res.Errors, res.Unchanged)
		}
		return &ExitError{Code: 1}
	}
	if opts.Verbose || opts.DryRun {
		verb := "changed"
		if opts.DryRun {
			verb = "would change"
		}
		fmt.Fprintf(env.Stdout, "%d entries: %d paths %s, %d already as configured, %d missing, %d skipped (securelevel), %d errors\n",
			res.Entries, res.Changed, verb, res.Unchanged, res.Missing, res.Skipped, res.Errors)
	}
	if res.Errors > 0 {
		return &ExitError{Code: 1, Err: fmt.Errorf("indelible: %d paths could not be changed (see above)", res.Errors)}
	}
	return nil
}

// defaultLockConfig is syslock's choice: /etc/syslock.conf for root,
// ~/.syslock.conf for anyone else.
func defaultLockConfig(env *Env, nonRoot bool) (string, error) {
	if !nonRoot {
		return "/etc/syslock.conf", nil
	}
	home := env.Getenv("HOME")
	if home == "" || !filepath.IsAbs(home) {
		return "", errors.New("HOME is not an absolute path; give the configuration with -c FILE")
	}
	return filepath.Join(home, ".syslock.conf"), nil
}

// configError prints every bad line of a configuration, one per line, and
// exits with status 2.
func configError(env *Env, file string, err error) error {
	var joined interface{ Unwrap() []error }
	var ce *hostflags.ConfigError
	switch {
	case errors.As(err, &joined) && errors.As(err, &ce):
		for _, e := range joined.Unwrap() {
			fmt.Fprintf(env.Stderr, "indelible: %v\n", e)
		}
		fmt.Fprintf(env.Stderr, "indelible: %s: fix the lines above (see `indelible help lock` for the syntax)\n", file)
		return &ExitError{Code: 2}
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(env.Stderr, "indelible: %s does not exist; give another with -c FILE (examples/syslock has samples)\n", file)
		return &ExitError{Code: 2}
	}
	fmt.Fprintf(env.Stderr, "indelible: %s\n", hostflagsMsg(err))
	return &ExitError{Code: 2}
}

// hostflagsMsg is err's message without the package prefix of hostflags'
// errors, which would read "indelible: hostflags: ..." after ours.
func hostflagsMsg(err error) string {
	return strings.TrimPrefix(err.Error(), "hostflags: ")
}

// splitGetopt rewrites syslock's getopt-style option clusters ("-swf",
// "-aq", "-gNAME", "-ac FILE") into one option per argument, which is what
// the flag package parses. Arguments after "--" are left alone, as are
// "--long" options and clusters with an unknown letter (so the flag package
// reports them).
func splitGetopt(fs *flag.FlagSet, args []string) []string {
	isBool := func(name string) (known, isBool bool) {
		f := fs.Lookup(name)
		if f == nil {
			return false, false
		}
		b, ok := f.Value.(interface{ IsBoolFlag() bool })
		return true, ok && b.IsBoolFlag()
	}
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a) // a positional argument; options may follow
			continue
		}
		if known, b := isBool(strings.TrimLeft(a, "-")); known || a[1] == '-' || strings.Contains(a, "=") {
			out = append(out, a)
			if known && !b && !strings.Contains(a, "=") && i+1 < len(args) {
				i++ // the value, whatever it looks like
				out = append(out, args[i])
			}
			continue
		}
		var split []string
		for j := 1; j < len(a); j++ {
			known, b := isBool(a[j : j+1])
			if !known {
				split = nil
				break
			}
			split = append(split, "-"+a[j:j+1])
			if b {
				continue
			}
			// A value option ends the cluster: the rest is its value, or
			// the value is the next argument.
			if j+1 < len(a) {
				split = append(split, a[j+1:])
			} else if i+1 < len(args) {
				i++
				split = append(split, args[i])
			}
			break
		}
		if split == nil {
			split = []string{a}
		}
		out = append(out, split...)
	}
	return out
}
