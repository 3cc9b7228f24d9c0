//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package hostflags

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

const (
	// maxDepth bounds recursion below a configured directory: each level
	// holds one directory descriptor open, and real trees are far shallower.
	maxDepth = 256
	// maxDirEntries bounds the names read from one directory (their names
	// are held in memory to be sorted, so output is deterministic).
	maxDirEntries = 1 << 20
)

// errStop ends a quiet audit at the first mismatch.
var errStop = errors.New("hostflags: stop")

// Run locks, unlocks or audits the entries of c that opts selects, in
// configuration order. Problems with single paths (vanished files, symbolic
// links, filesystems without flags, refused ioctls) are reported through
// opts.Logf and counted in the Result; the error is for problems that stop
// the whole run (a bad selection, a securelevel that forbids what was asked).
func Run(ctx context.Context, c *Config, opts Options) (*Result, error) {
	if c.Platform != Native() {
		return nil, fmt.Errorf("hostflags: %s is a %s configuration, but this is a %s system", c.File, c.Platform, Native())
	}
	if opts.Op != Lock && opts.Op != Unlock {
		return nil, errors.New("hostflags: Options.Op must be Lock or Unlock")
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	idx, empty, err := c.Select(opts.Select)
	if err != nil {
		return nil, err
	}
	r := &runner{ctx: ctx, opts: opts, res: &Result{}}
	for _, msg := range empty {
		// The other selectors still run (and an audit of them still
		// decides the exit status); this one is probably a typo.
		r.warnf("-g selects nothing: %s", msg)
	}
	if opts.Securelevel != nil {
		r.res.Securelevel, r.res.HaveSecurelevel = *opts.Securelevel, true
	} else if c.Platform == BSD {
		lvl, err := securelevel()
		if err != nil {
			return nil, fmt.Errorf("hostflags: cannot read kern.securelevel: %w", err)
		}
		r.res.Securelevel, r.res.HaveSecurelevel = lvl, true
	}
	idx, err = r.applySecurelevel(c, idx)
	if err != nil {
		return nil, err
	}
	for _, i := range idx {
		if err := ctx.Err(); err != nil {
			return r.res, err
		}
		e := &c.Entries[i]
		if opts.KARLOnly && e.Prefix&KARL == 0 {
			continue
		}
		r.res.Entries++
		if err := r.entry(e); err != nil {
			if errors.Is(err, errStop) {
				break
			}
			return r.res, err
		}
	}
	return r.res, nil
}

type runner struct {
	ctx  context.Context
	opts Options
	res  *Result
	// child is set while apply handles a direct entry of a directory, so
	// an audit mismatch prints under the directory's header.
	child *childCtx
}

type childCtx struct {
	dir, name string
	depth     int
	header    *bool // whether "In dir/:" was printed
}

// applySecurelevel decides, as syslock does, what happens to entries with
// BSD system flags (schg, sappnd) when the securelevel is above 0: such
// flags cannot be removed, so they are not set either unless forced, and
// selecting them by name makes the refusal an error instead of a skip.
func (r *runner) applySecurelevel(c *Config, idx []int) ([]int, error) {
	lvl := r.res.Securelevel
	if !r.res.HaveSecurelevel || lvl <= 0 {
		return idx, nil
	}
	named := explicitSystem(r.opts.Select)
	op := "syslock"
	need := "-f or securelevel < 1"
	if r.opts.Op == Unlock {
		op, need = "sysunlock", "securelevel < 1"
	}
	o := r.opts
	switch {
	case o.Audit:
		if !o.Quiet {
			fmt.Fprintf(o.Out, "System securelevel is %d; %s of schg/sappnd files requires %s.\n", lvl, op, need)
			if o.Operational && named {
				fmt.Fprintf(o.Out, "Overriding -o to audit schg/sappnd files as explicitly requested.\n")
			}
		}
		if !o.Operational || named {
			return idx, nil
		}
	case o.Op == Lock && o.Force:
		return idx, nil
	case named:
		return nil, fmt.Errorf("system securelevel is %d; %s of schg/sappnd requires %s", lvl, op, need)
	}
	var kept []int
	for _, i := range idx {
		if c.Entries[i].Flag.IsSystem() {
			r.res.Skipped++
			continue
		}
		kept = append(kept, i)
	}
	if len(kept) == 0 && len(idx) > 0 && !o.Audit {
		return nil, fmt.Errorf("system securelevel is %d; %s of schg/sappnd requires %s, and nothing else is selected", lvl, op, need)
	}
	if r.res.Skipped > 0 && o.Verbose {
		fmt.Fprintf(o.Out, "System securelevel is %d; skipping %d schg/sappnd entries (%s requires %s).\n", lvl, r.res.Skipped, op, need)
	}
	return kept, nil
}

// walk says which parts of a configured directory an entry covers.
type walk struct {
	self    bool // the directory itself
	subdirs int  // subdirsSkip, subdirsSelf or subdirsRecurse
}

const (
	subdirsSkip    = iota // "=": leave subdirectories alone
	subdirsSelf           // "+": the subdirectory itself, not its contents
	subdirsRecurse        // no prefix, "-": everything below
)

func walkFor(p Prefix) walk {
	w := walk{self: p&ContentsOnly == 0, subdirs: subdirsRecurse}
	switch {
	case p&FilesOnly != 0:
		w.subdirs = subdirsSkip
	case p&NoRecurse != 0:
		w.subdirs = subdirsSelf
	}
	return w
}

func (r *runner) verb() string {
	if r.opts.Op == Unlock {
		return "unlocking"
	}
	return "locking"
}

func (r *runner) entry(e *Entry) error {
	if e.Glob {
		return r.glob(e)
	}
	var st unix.Stat_t
	if err := unix.Lstat(e.Path, &st); err != nil {
		return r.missingOrError(e.Path, e.Flag, err, true)
	}
	switch fileType(&st) {
	case unix.S_IFLNK:
		r.warnf("%s is a symbolic link; not followed (line %d)", quote(e.Path), e.Line)
		return nil
	case unix.S_IFDIR:
	case unix.S_IFREG:
		if e.Prefix&(NoRecurse|ContentsOnly|FilesOnly) != 0 {
			r.warnf("prefix %q has no effect on %s, which is not a directory (line %d)", (e.Prefix &^ KARL).String(), quote(e.Path), e.Line)
		}
		if r.opts.Verbose {
			fmt.Fprintf(r.opts.Out, "%s %s\n", r.verb(), quote(e.Path))
		}
		return r.openApply(unix.AT_FDCWD, e.Path, e.Path, &st, e.Flag, 0, true)
	default:
		r.warnf("%s is not a regular file or directory; skipped (line %d)", quote(e.Path), e.Line)
		return nil
	}
	w := walkFor(e.Prefix)
	if r.opts.Verbose {
		fmt.Fprintf(r.opts.Out, "%s\n", r.describe(e.Path, e.Prefix))
	}
	fd, err := openAt(unix.AT_FDCWD, e.Path, &st, true)
	if err != nil {
		return r.missingOrError(e.Path, e.Flag, err, true)
	}
	defer unix.Close(fd)
	return r.dir(fd, e.Path, e.Flag, w, 0)
}

// openApply opens name (relative to dirfd, which st describes) without
// following a symbolic link, applies the operation to it as p, and closes
// it. configured tells whether p is a configured path (or a child found by
// a walk or a glob), for the message when it does not exist.
func (r *runner) openApply(dirfd int, name, p string, st *unix.Stat_t, f Flag, depth int, configured bool) error {
	fd, err := openAt(dirfd, name, st, fileType(st) == unix.S_IFDIR)
	if err != nil {
		return r.missingOrError(p, f, err, configured)
	}
	defer unix.Close(fd)
	_, err = r.apply(fd, p, f, depth)
	return err
}

// describe words a directory entry the way syslock -v does.
func (r *runner) describe(p string, prefix Prefix) string {
	v, p := r.verb(), quote(p)
	switch {
	case prefix&FilesOnly != 0:
		return fmt.Sprintf("%s %s (files only)", v, p)
	case prefix&NoRecurse != 0:
		return fmt.Sprintf("%s %s/*", v, p)
	case prefix&ContentsOnly != 0:
		return fmt.Sprintf("recursively %s %s/*", v, p)
	}
	return fmt.Sprintf("recursively %s %s", v, p)
}

func (r *runner) glob(e *Entry) error {
	dir, pattern := path.Split(e.Path)
	dir = path.Clean(dir)
	// The directory is resolved as a literal entry's path is: symbolic
	// links in it are followed, since they lie above the names the
	// configuration manages. Appending "/." makes the last element ".",
	// so a link named by dir itself is followed too, and openAt still
	// checks that it opens the directory Lstat saw.
	dot := dir + "/."
	if dir == "/" {
		dot = "/."
	}
	var st unix.Stat_t
	if err := unix.Lstat(dot, &st); err != nil {
		// Not an error: the files a glob names (rotated logs) may not
		// exist yet, and neither may their directory.
		switch {
		case errors.Is(err, unix.ENOENT):
			r.warnf("glob %s matches no files: %s does not exist (line %d)", quote(e.Path), quote(dir), e.Line)
			return nil
		case errors.Is(err, unix.ENOTDIR):
			r.warnf("glob %s matches no files: %s is not a directory (line %d)", quote(e.Path), quote(dir), e.Line)
			return nil
		}
		r.errorf("%s: %v", quote(dir), err)
		return nil
	}
	dfd, err := openAt(unix.AT_FDCWD, dot, &st, true)
	if err != nil {
		return r.missingOrError(dir, e.Flag, err, true)
	}
	defer unix.Close(dfd)
	names, err := readNames(dfd)
	if err != nil {
		r.errorf("%s: %v", quote(dir), err)
		return nil
	}
	matched := 0
	for _, name := range names {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		// As in the shell, *.log leaves .x.log alone.
		if !globMatch(pattern, name) {
			continue
		}
		p := path.Join(dir, name)
		var cst unix.Stat_t
		if err := unix.Fstatat(dfd, name, &cst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err := r.missingOrError(p, e.Flag, err, false); err != nil {
				return err
			}
			continue
		}
		switch fileType(&cst) {
		case unix.S_IFREG:
		case unix.S_IFDIR:
			r.warnf("glob %s matched directory %s; skipped (list directories on their own line)", quote(e.Path), quote(p))
			continue
		case unix.S_IFLNK:
			r.warnf("glob %s matched symbolic link %s; not followed", quote(e.Path), quote(p))
			continue
		default:
			continue
		}
		matched++
		if r.opts.Verbose {
			fmt.Fprintf(r.opts.Out, "%s %s\n", r.verb(), quote(p))
		}
		if err := r.openApply(dfd, name, p, &cst, e.Flag, 0, false); err != nil {
			return err
		}
	}
	if matched == 0 {
		r.warnf("glob %s matches no files (line %d)", quote(e.Path), e.Line)
	}
	return nil
}

// dir handles the directory open as dfd: itself (when w.self), then its
// entries as w says.
// depth is how far below the configured path it is (for the audit's
// indentation and the recursion bound).
func (r *runner) dir(dfd int, p string, f Flag, w walk, depth int) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	// Read the directory's own flags first: on a filesystem without flags
	// there is no point in walking it, and one message says why.
	if w.self {
		unsupported, err := r.apply(dfd, p, f, depth)
		if err != nil || unsupported {
			return err
		}
	} else if _, err := getFlags(dfd); err != nil && errors.Is(err, ErrUnsupportedFS) {
		r.unsupported(p, err)
		return nil
	}
	if depth >= maxDepth {
		r.errorf("%s: more than %d directory levels; not descending", quote(p), maxDepth)
		return nil
	}
	names, err := readNames(dfd)
	if err != nil {
		r.errorf("%s: %v", quote(p), err)
		return nil
	}
	header := false
	for _, name := range names {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		cp := path.Join(p, name)
		var st unix.Stat_t
		child := &childCtx{dir: p, name: name, depth: depth, header: &header}
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err := r.asChild(child, func() error { return r.missingOrError(cp, f, err, false) }); err != nil {
				return err
			}
			continue
		}
		switch fileType(&st) {
		case unix.S_IFREG:
			if err := r.asChild(child, func() error { return r.openApply(dfd, name, cp, &st, f, depth, false) }); err != nil {
				return err
			}
		case unix.S_IFDIR:
			if w.subdirs == subdirsSkip {
				continue
			}
			if w.subdirs == subdirsSelf {
				if err := r.asChild(child, func() error { return r.openApply(dfd, name, cp, &st, f, depth, false) }); err != nil {
					return err
				}
				continue
			}
			fd, err := openAt(dfd, name, &st, true)
			if err != nil {
				if err := r.asChild(child, func() error { return r.missingOrError(cp, f, err, false) }); err != nil {
					return err
				}
				continue
			}
			err = r.dir(fd, cp, f, walk{self: true, subdirs: subdirsRecurse}, depth+1)
			unix.Close(fd)
			if err != nil {
				return err
			}
		default:
			// Symbolic links are never followed and devices, FIFOs and
			// sockets never opened (an ioctl on a device goes to its driver).
		}
	}
	return nil
}

// asChild runs fn for a direct entry of a directory being walked, so that
// audit mismatches print under an "In dir/:" header, as syslock does.
func (r *runner) asChild(c *childCtx, fn func() error) error {
	r.child = c
	defer func() { r.child = nil }()
	return fn()
}

// apply reads the flags of the file open as fd and, unless auditing, sets
// them to what the operation wants. It reports whether the filesystem has
// no flags at all, so a directory walk can stop there.
func (r *runner) apply(fd int, p string, f Flag, depth int) (unsupported bool, err error) {
	raw, err := getFlags(fd)
	if err != nil {
		if errors.Is(err, ErrUnsupportedFS) {
			r.unsupported(p, err)
			return true, nil
		}
		r.errorf("%s: %v", quote(p), err)
		return false, nil
	}
	return false, r.change(fd, p, f, depth, raw)
}

func (r *runner) change(fd int, p string, f Flag, depth int, raw uint64) error {
	want := raw &^ lockBits
	if r.opts.Op == Lock {
		want |= flagBits(f)
	}
	if r.opts.Audit {
		if raw&lockBits == want&lockBits {
			r.res.Unchanged++
			return nil
		}
		r.res.Mismatched++
		if r.opts.Quiet {
			return errStop
		}
		state := f.lockedState()
		if r.opts.Op == Unlock {
			state = f.unlockedState()
		}
		r.printMismatch(p, depth, fmt.Sprintf("(should be %s, flags=%s)", state, formatFlags(raw)))
		return nil
	}
	if raw == want {
		r.res.Unchanged++
		return nil
	}
	if removed := raw &^ want & systemBits; removed != 0 && r.res.HaveSecurelevel && r.res.Securelevel > 0 {
		r.errorf("%s: has %s, which cannot be removed at securelevel %d", quote(p), formatFlags(removed), r.res.Securelevel)
		return nil
	}
	if r.opts.DryRun {
		r.res.Changed++
		fmt.Fprintf(r.opts.Out, "would set flags of %s: %s -> %s\n", quote(p), formatFlags(raw), formatFlags(want))
		return nil
	}
	if err := setFlags(fd, want); err != nil {
		r.errorf("%s: %v", quote(p), describeSetError(err))
		return nil
	}
	r.res.Changed++
	return nil
}

func (r *runner) printMismatch(p string, depth int, what string) {
	pad := func(n int) string { return fmt.Sprintf("%*s", 3*n, "") }
	if c := r.child; c != nil {
		if !*c.header {
			fmt.Fprintf(r.opts.Out, "%sIn %s/:\n", pad(c.depth), quote(c.dir))
			*c.header = true
		}
		fmt.Fprintf(r.opts.Out, "%s   %s %s\n", pad(c.depth), quote(c.name), what)
		return
	}
	fmt.Fprintf(r.opts.Out, "%s%s %s\n", pad(depth), quote(p), what)
}

// unsupported reports a file on a filesystem without flags. It cannot be
// locked, which is an error; it is as unlocked as it gets, so an unlock (or
// its audit) warns and counts it as already in the wanted state: logrotate's
// "unlock -g rotate" must not fail on a flagless filesystem.
func (r *runner) unsupported(p string, err error) {
	if r.opts.Op == Unlock {
		r.res.Unchanged++
		r.warnf("%s: %v; counted as unlocked", quote(p), err)
		return
	}
	r.errorf("%s: %v", quote(p), err)
}

// warnf reports something skipped; a quiet audit prints nothing.
func (r *runner) warnf(format string, a ...any) {
	if !r.opts.Quiet {
		r.opts.Logf("warning: "+format, a...)
	}
}

func (r *runner) errorf(format string, a ...any) {
	r.res.Errors++
	if !r.opts.Quiet {
		r.opts.Logf(format, a...)
	}
}

// missingOrError reports a path that does not exist (configured, or one
// that vanished while the run was walking); any other error is a per-path
// error. In a lock audit a missing path is a mismatch: what should be
// locked is not there (a quiet audit stops there). In an unlock audit it is
// trivially unlocked. The error is errStop or nil.
func (r *runner) missingOrError(p string, f Flag, err error, configured bool) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		how := "vanished while being walked"
		if configured {
			how = "does not exist"
		}
		switch {
		case r.opts.Audit && r.opts.Op == Lock:
			r.res.Missing++
			r.res.Mismatched++
			if r.opts.Quiet {
				return errStop
			}
			r.printMismatch(p, 0, fmt.Sprintf("(should be %s, missing)", f.lockedState()))
		case r.opts.Audit:
			r.res.Unchanged++
			r.warnf("%s %s; nothing to unlock", quote(p), how)
		default:
			r.res.Missing++
			r.warnf("%s %s; skipped", quote(p), how)
		}
		return nil
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, errChanged) {
		r.warnf("%s changed type while being walked; not followed", quote(p))
		return nil
	}
	r.errorf("%s: %v", quote(p), err)
	return nil
}

var errChanged = errors.New("changed while being walked")

// openAt opens name relative to dirfd without following a final symbolic
// link, and checks that what it opened is the file st describes, so a path
// swapped for a symbolic link or device between stat and open is not used.
func openAt(dirfd int, name string, st *unix.Stat_t, dir bool) (int, error) {
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	if dir {
		flags |= unix.O_DIRECTORY
	}
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if err != nil {
		return -1, err
	}
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if got.Dev != st.Dev || got.Ino != st.Ino || fileType(&got) != fileType(st) {
		unix.Close(fd)
		return -1, errChanged
	}
	return fd, nil
}

func fileType(st *unix.Stat_t) uint32 { return uint32(st.Mode) & unix.S_IFMT }

// readNames returns the sorted names in the directory open as dfd, without
// closing dfd. Its errors name no path (the caller quotes it).
func readNames(dfd int) ([]string, error) {
	dup, err := unix.Dup(dfd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "")
	defer f.Close()
	if _, err := unix.Seek(dup, 0, io.SeekStart); err != nil {
		return nil, err
	}
	var names []string
	for {
		batch, err := f.Readdirnames(4096)
		names = append(names, batch...)
		if len(names) > maxDirEntries {
			return nil, fmt.Errorf("more than %d entries; not walked", maxDirEntries)
		}
		if err == io.EOF || (err == nil && len(batch) == 0) {
			break
		}
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = fmt.Errorf("%s: %w", pe.Op, pe.Err)
			}
			return nil, err
		}
	}
	sort.Strings(names)
	return names, nil
}

// quote returns p as is, or Go-quoted when it holds characters that could
// break a line of output or forge another one (newlines, escapes, bad UTF-8).
func quote(p string) string {
	if !utf8.ValidString(p) {
		return strconv.Quote(p)
	}
	for _, c := range p {
		if !unicode.IsPrint(c) && c != ' ' {
			return strconv.Quote(p)
		}
	}
	return p
}
