package hostflags

import "io"

// Op is what Run does to the selected entries.
type Op uint8

const (
	Lock   Op = iota + 1 // set each entry's flag (syslock)
	Unlock               // clear the locking flags (sysunlock)
)

// Options controls Run; the fields mirror syslock's command-line options.
type Options struct {
	Op     Op
	Select []Selector // -g; nil selects every entry
	// Audit (-a) changes nothing and reports every path not in the state
	// Op would leave it in.
	Audit bool
	// Quiet (-q) prints nothing (not even warnings, such as a -g selector
	// that selects nothing) and stops at the first audit mismatch.
	Quiet bool
	// Operational (-o) limits an audit to what Op could change now: BSD
	// system flags are skipped at securelevel > 0 unless selected by name.
	Operational bool
	// Force (-f) sets BSD system flags even at securelevel > 0, where they
	// cannot be removed again until the securelevel is lowered.
	Force bool
	// KARLOnly (-s) handles only the entries with the "!" prefix.
	KARLOnly bool
	// DryRun (-d) reports what would change and changes nothing.
	DryRun bool
	// Verbose (-v) reports each entry as it is handled, and a summary.
	Verbose bool
	// Out receives audit lines and verbose or dry-run reports.
	Out io.Writer
	// Logf receives warnings and per-path errors, one line each.
	Logf func(format string, args ...any)
	// Securelevel overrides kern.securelevel (tests; Linux has none).
	Securelevel *int
}

// Result counts what Run did.
type Result struct {
	Entries    int // configuration entries handled
	Changed    int // paths whose flags were changed (or would be, with DryRun)
	Unchanged  int // paths already in the wanted state
	Mismatched int // audit: paths not in the wanted state, Missing ones included
	Skipped    int // entries skipped because of the securelevel
	// Missing counts configured paths that do not exist and paths that
	// vanished during the run. In a lock audit each is also a mismatch
	// (what should be locked is not there); in an unlock audit such a
	// path is trivially unlocked and counts as Unchanged instead. A glob
	// that matches nothing (or whose directory does not exist) is not
	// missing: rotated logs need not exist yet.
	Missing int
	Errors  int // paths that could not be read or changed
	// Securelevel is kern.securelevel, when the platform has one.
	Securelevel     int
	HaveSecurelevel bool
}

// Consistent reports whether an audit found every path in the wanted state:
// no mismatch, no error and, in a lock audit, no missing path.
func (r *Result) Consistent() bool { return r.Mismatched == 0 && r.Errors == 0 && r.Missing == 0 }
