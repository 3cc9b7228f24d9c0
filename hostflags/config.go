package hostflags

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Limits on what a configuration may hold. A configuration is written by
// root, but it is still parsed as hostile input: every one of these bounds
// memory or time, and none is near what a real host needs.
const (
	// MaxConfigSize bounds the file: syslock's own samples are under 7 KiB.
	MaxConfigSize = 1 << 20
	// MaxLineLen is PATH_MAX (4096) plus room for prefixes and spaces.
	MaxLineLen = 4096 + 64
	// MaxEntries bounds the path lines (globs count once, unexpanded).
	MaxEntries = 65536
	// MaxGroupsPerLine bounds the names on one group: line.
	MaxGroupsPerLine = 64
	// MaxGroupNameLen bounds one group name.
	MaxGroupNameLen = 128
	// maxErrors stops parsing after this many bad lines: past that point
	// the file is probably not a syslock configuration at all.
	maxErrors = 20
	// maxConflictWarnings bounds the ancestor-conflict report.
	maxConflictWarnings = 100
	// maxConflictWork bounds the steps CheckConflicts takes beyond reading
	// each entry once (every comparison, every ancestor looked up, every
	// state of a glob-against-glob check): a few hundred milliseconds at
	// most. Real configurations need a few thousand; a file of 30000 globs
	// and 30000 paths in one directory with different flags would need
	// 10^9 without it.
	maxConflictWork = 1 << 20
)

// Prefix is the set of characters written before a path in the configuration.
type Prefix uint8

const (
	// NoRecurse ("+"): a directory and its direct entries (files and
	// subdirectories themselves), without descending into subdirectories.
	NoRecurse Prefix = 1 << iota
	// ContentsOnly ("-"): everything below a directory, not the directory.
	ContentsOnly
	// FilesOnly ("="): a directory and the non-directories directly in it;
	// subdirectories are left alone entirely.
	FilesOnly
	// KARL ("!"): the path is also handled by -s (single-user mode), for the
	// files OpenBSD relinks at boot (kernel address randomized link).
	KARL
)

var prefixChars = [...]struct {
	c byte
	p Prefix
}{{'+', NoRecurse}, {'-', ContentsOnly}, {'=', FilesOnly}, {'!', KARL}}

func (p Prefix) String() string {
	var b []byte
	for _, pc := range prefixChars {
		if p&pc.p != 0 {
			b = append(b, pc.c)
		}
	}
	return string(b)
}

// Entry is one path line of a configuration.
type Entry struct {
	Line   int
	Path   string // absolute and clean; for a glob, the pattern
	Glob   bool   // Path has *, ? or [ in its last element
	Prefix Prefix
	Groups []string // names from the governing group: line, flag tags removed
	Flag   Flag     // the flag this path is managed with
}

// InGroup reports whether e belongs to the named group.
func (e *Entry) InGroup(name string) bool {
	for _, g := range e.Groups {
		if g == name {
			return true
		}
	}
	return false
}

// Config is a parsed syslock configuration.
type Config struct {
	File     string
	Platform Platform
	// ImmutableFlag is what entries without a flag tag are managed with:
	// the immutable-flag: line, or the platform default.
	ImmutableFlag Flag
	Entries       []Entry
	Groups        []string // every group name, in order of first appearance
	// Warnings are problems that do not stop the configuration from being
	// used (conflicting flags on one path, prefixes that do nothing).
	Warnings []*ConfigError
}

// ParseOptions says which platform's vocabulary a configuration is read with.
type ParseOptions struct {
	Platform Platform // Linux or BSD; 0 means Native()
	// NonRoot restricts a BSD configuration to the user flags (uchg,
	// uappnd), which are the only ones a non-root user may change.
	NonRoot bool
}

// ConfigError is a problem on one line of a configuration. Parse returns
// all of them (up to a limit) joined with errors.Join; use errors.As.
type ConfigError struct {
	File string
	Line int // 0 when the problem is not tied to one line
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// ErrConfigTooLarge is returned for a configuration over MaxConfigSize.
var ErrConfigTooLarge = errors.New("hostflags: configuration too large")

// Parse reads a syslock configuration. file names it in messages. Parse does
// no I/O beyond reading r: globs stay unexpanded and paths unchecked until Run.
func Parse(r io.Reader, file string, opts ParseOptions) (*Config, error) {
	if opts.Platform == 0 {
		opts.Platform = Native()
	}
	if opts.Platform != Linux && opts.Platform != BSD {
		return nil, &ConfigError{File: file, Msg: "immutability flags are not supported on this operating system"}
	}
	p := &parser{
		cfg:      &Config{File: file, Platform: opts.Platform},
		opts:     opts,
		seen:     map[string]bool{},
		flagLine: 0,
	}
	lr := &io.LimitedReader{R: r, N: MaxConfigSize + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 4096), MaxLineLen)
	line := 0
	for sc.Scan() {
		line++
		p.line(line, sc.Text())
		if len(p.errs) >= maxErrors {
			p.errs = append(p.errs, &ConfigError{File: file, Line: line, Msg: "too many errors; stopping"})
			return nil, errors.Join(p.errs...)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			p.errorf(line+1, "line longer than %d bytes", MaxLineLen)
		} else {
			return nil, fmt.Errorf("hostflags: reading %s: %w", file, err)
		}
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("%w: %s is over %d bytes (1 MiB; syslock's own samples are under 7 KiB); check that it is a syslock configuration, or split it and lock each part with -c", ErrConfigTooLarge, file, MaxConfigSize)
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	c := p.cfg
	if c.ImmutableFlag == 0 {
		c.ImmutableFlag = opts.Platform.DefaultImmutable(opts.NonRoot)
	}
	for i := range c.Entries {
		if c.Entries[i].Flag == 0 {
			c.Entries[i].Flag = c.ImmutableFlag
		}
	}
	return c, nil
}

type parser struct {
	cfg      *Config
	opts     ParseOptions
	errs     []error
	groups   []string // the current group: line's names
	tag      Flag     // the current group: line's flag tag, or 0
	seen     map[string]bool
	flagLine int // line of the immutable-flag: setting
}

func (p *parser) errorf(line int, format string, a ...any) {
	p.errs = append(p.errs, &ConfigError{File: p.cfg.File, Line: line, Msg: fmt.Sprintf(format, a...)})
}

func (p *parser) line(n int, text string) {
	if i := strings.IndexFunc(text, isControl); i >= 0 {
		p.errorf(n, "control character %q at column %d", text[i], i+1)
		return
	}
	s := strings.TrimSpace(text)
	switch {
	case s == "" || s[0] == '#':
	case strings.HasPrefix(s, "immutable-flag:"):
		p.immutableFlag(n, strings.TrimSpace(strings.TrimPrefix(s, "immutable-flag:")))
	case strings.HasPrefix(s, "group:"):
		p.groupLine(n, strings.Fields(strings.TrimPrefix(s, "group:")))
	case s[0] == '/' || strings.IndexByte("+-=!", s[0]) >= 0:
		p.pathLine(n, s)
	default:
		p.errorf(n, "expected an absolute path, a group: line or an immutable-flag: line, not %q", truncate(s, 40))
	}
}

func isControl(r rune) bool { return r != '\t' && (r < 0x20 || r == 0x7f) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (p *parser) immutableFlag(n int, v string) {
	f := ParseFlag(v)
	switch {
	case v == "":
		p.errorf(n, "immutable-flag: needs a value (%s)", flagChoices(p.opts.Platform, p.opts.NonRoot, true))
		return
	case f == 0:
		p.errorf(n, "unknown immutable-flag %q (want %s)", truncate(v, 20), flagChoices(p.opts.Platform, p.opts.NonRoot, true))
		return
	case f.IsAppend():
		p.errorf(n, "%s may not be the immutable-flag; use it as a tag on a group: line", f)
		return
	case f.Platform() != p.opts.Platform:
		p.errorf(n, "immutable-flag %s", platformMismatch(f, p.opts.Platform))
		return
	case f.IsSystem() && p.opts.NonRoot:
		p.errorf(n, "immutable-flag %s needs root; non-root users may only use uchg", f)
		return
	case p.cfg.ImmutableFlag != 0 && p.cfg.ImmutableFlag != f:
		p.errorf(n, "immutable-flag %s contradicts %s set on line %d", f, p.cfg.ImmutableFlag, p.flagLine)
		return
	}
	p.cfg.ImmutableFlag = f
	p.flagLine = n
}

func (p *parser) groupLine(n int, names []string) {
	p.groups, p.tag = nil, 0
	if len(names) == 0 {
		p.errorf(n, "group: line names no groups")
		return
	}
	if len(names) > MaxGroupsPerLine {
		p.errorf(n, "more than %d names on one group: line", MaxGroupsPerLine)
		return
	}
	var groups []string
	var tag Flag
	for _, name := range names {
		if err := checkGroupName(name); err != "" {
			p.errorf(n, "group name %q %s", truncate(name, 40), err)
			return
		}
		f := ParseFlag(name)
		if f == 0 {
			groups = append(groups, name)
			continue
		}
		switch {
		case f.Platform() != p.opts.Platform:
			p.errorf(n, "flag tag %s", platformMismatch(f, p.opts.Platform))
			return
		case f.IsSystem() && p.opts.NonRoot:
			p.errorf(n, "flag tag %s needs root; non-root users may only use uchg and uappnd", f)
			return
		case tag != 0 && tag != f:
			p.errorf(n, "cannot combine %s and %s on one group: line; use two group: lines sharing a group name", tag, f)
			return
		}
		tag = f
	}
	for _, g := range groups {
		if !p.seen[g] {
			p.seen[g] = true
			p.cfg.Groups = append(p.cfg.Groups, g)
		}
	}
	p.groups, p.tag = groups, tag
}

// checkGroupName allows syslock's characters: letters, digits, _, - and +.
func checkGroupName(name string) string {
	if len(name) > MaxGroupNameLen {
		return fmt.Sprintf("is longer than %d bytes", MaxGroupNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '+') {
			return fmt.Sprintf("has %q; group names use letters, digits, _, - and +", c)
		}
	}
	return ""
}

func (p *parser) pathLine(n int, s string) {
	var prefix Prefix
	i := 0
prefixes:
	for ; i < len(s); i++ {
		for _, pc := range prefixChars {
			if s[i] == pc.c {
				if prefix&pc.p != 0 {
					p.errorf(n, "prefix %q given twice", pc.c)
					return
				}
				prefix |= pc.p
				continue prefixes
			}
		}
		break
	}
	if prefix&FilesOnly != 0 && prefix&(NoRecurse|ContentsOnly) != 0 {
		p.errorf(n, "prefix = cannot be combined with + or -")
		return
	}
	raw := strings.TrimSpace(s[i:])
	if !strings.HasPrefix(raw, "/") {
		p.errorf(n, "path %q is not absolute", truncate(raw, 40))
		return
	}
	for _, el := range strings.Split(raw, "/") {
		if el == ".." || el == "." {
			p.errorf(n, "path %q has a %q element; write the path without it", truncate(raw, 60), el)
			return
		}
	}
	clean := path.Clean(raw)
	e := Entry{Line: n, Path: clean, Prefix: prefix, Groups: p.groups, Flag: p.tag}
	dir, base := path.Split(clean)
	if strings.ContainsAny(dir, "*?[") {
		p.errorf(n, "glob characters are allowed only in the last element of %q", truncate(raw, 60))
		return
	}
	if strings.ContainsAny(base, "*?[") {
		if base == "*" {
			p.errorf(n, "a bare * is not allowed; list the directory %s instead (with = or + to limit it)", dir)
			return
		}
		if _, err := path.Match(base, ""); err != nil {
			p.errorf(n, "bad glob %q: %v", truncate(base, 40), err)
			return
		}
		e.Glob = true
	}
	if len(p.cfg.Entries) >= MaxEntries {
		p.errorf(n, "more than %d paths", MaxEntries)
		return
	}
	p.cfg.Entries = append(p.cfg.Entries, e)
}

// CheckConflicts adds a warning for every path that two entries manage with
// different flags: the same path listed twice, a path below a directory
// entry that reaches it, a path matched by a glob, or two globs in one
// directory that can match the same name (names are not known before Run,
// so two globs conflict when some name matches both: "*.log" and "a*" do,
// "*.log" and "*.gz" do not). Whichever is processed last wins, which is
// rarely what was meant. isDir tells whether a path is a directory (a "="
// entry skips subdirectories); nil treats every path as a file, which can
// only add warnings.
//
// The work is bounded by maxConflictWork steps, every loop iteration
// counted; past it, one warning says the check stopped.
func (c *Config) CheckConflicts(isDir func(string) bool) {
	c.checkConflicts(isDir)
}

// checkConflicts is CheckConflicts; it returns the steps it took.
func (c *Config) checkConflicts(isDir func(string) bool) (work int) {
	if isDir == nil {
		isDir = func(string) bool { return false }
	}
	// Entries indexed by path, and globs by directory and then by flag, so
	// that a path is compared only with the globs that would give it
	// another flag. maxLitDepth is the depth of the deepest literal entry:
	// no deeper ancestor can be an entry, so the ancestor walk starts there.
	literal := map[string][]int{}
	globs := map[string]*[maxFlag + 1][]int{}
	maxLitDepth := 0
	for i := range c.Entries {
		e := &c.Entries[i]
		if e.Glob {
			d := path.Dir(e.Path)
			g := globs[d]
			if g == nil {
				g = new([maxFlag + 1][]int)
				globs[d] = g
			}
			g[e.Flag] = append(g[e.Flag], i)
		} else {
			literal[e.Path] = append(literal[e.Path], i)
			maxLitDepth = max(maxLitDepth, pathDepth(e.Path))
		}
	}
	n := 0
	warn := func(e, other *Entry, how string) bool {
		if n >= maxConflictWarnings {
			return false
		}
		n++
		c.Warnings = append(c.Warnings, &ConfigError{File: c.File, Line: e.Line, Msg: fmt.Sprintf(
			"conflicting flags: %s is managed with %s here, but %s on line %d %s with %s; the entry processed last wins",
			e.Path, e.Flag, other.Path, other.Line, how, other.Flag)})
		return true
	}
	// step counts cost steps and reports whether the budget allows them.
	step := func(e *Entry, cost int) bool {
		if work += cost; work <= maxConflictWork {
			return true
		}
		c.Warnings = append(c.Warnings, &ConfigError{File: c.File, Line: e.Line, Msg: fmt.Sprintf(
			"too many overlapping or deep entries; stopped checking for conflicting flags after %d steps", maxConflictWork)})
		return false
	}
	for i := range c.Entries {
		e := &c.Entries[i]
		if !step(e, 1) {
			return work
		}
		g := globs[path.Dir(e.Path)]
		if !e.Glob {
			for _, j := range literal[e.Path] {
				if j >= i {
					break
				}
				if !step(e, 1) {
					return work
				}
				if c.Entries[j].Flag != e.Flag && !warn(e, &c.Entries[j], "lists it too") {
					return work
				}
			}
		}
		for f := Flag(1); g != nil && f <= maxFlag; f++ {
			if f == e.Flag {
				continue
			}
			for _, j := range g[f] {
				o := &c.Entries[j]
				if e.Glob {
					// Each pair once, reported on the later line.
					if j > i {
						break
					}
					cost := globOverlapCost(path.Base(e.Path), path.Base(o.Path))
					if !step(e, cost) {
						return work
					}
					if _, ok := globOverlap(path.Base(e.Path), path.Base(o.Path)); ok && !warn(e, o, "can match the same names") {
						return work
					}
					continue
				}
				if !step(e, 1) {
					return work
				}
				if globMatch(path.Base(o.Path), path.Base(e.Path)) && !warn(e, o, "matches it") {
					return work
				}
			}
		}
		// Walk up the ancestors that can be entries; depth 1 is the parent.
		a, depth := path.Dir(e.Path), 1
		if d := pathDepth(e.Path); d-1 > maxLitDepth {
			a, depth = pathPrefix(e.Path, maxLitDepth), d-maxLitDepth
		}
		for ; e.Path != "/"; a, depth = path.Dir(a), depth+1 {
			if !step(e, 1) {
				return work
			}
			for _, j := range literal[a] {
				if !step(e, 1) {
					return work
				}
				anc := &c.Entries[j]
				if anc.Flag == e.Flag || !reaches(anc.Prefix, depth, e.Glob || !isDir(e.Path)) {
					continue
				}
				if !warn(e, anc, "reaches it") {
					return work
				}
			}
			if a == "/" {
				break
			}
		}
	}
	return work
}

// pathPrefix is the ancestor of the clean absolute path p with n elements.
func pathPrefix(p string, n int) string {
	if n <= 0 {
		return "/"
	}
	for i := 1; i < len(p); i++ {
		if p[i] == '/' {
			if n--; n == 0 {
				return p[:i]
			}
		}
	}
	return p
}

// pathDepth is the number of elements of a clean absolute path ("/" has 0).
func pathDepth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// reaches reports whether a directory entry with prefix p processes a path
// depth levels below it.
func reaches(p Prefix, depth int, isFile bool) bool {
	switch {
	case p&FilesOnly != 0:
		return depth == 1 && isFile
	case p&NoRecurse != 0:
		return depth == 1
	}
	return true
}
