package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/indelible-worm/indelible/seal"
	"github.com/indelible-worm/indelible/worm"
)

// deviceKeyName is where a device directory without device.toml keeps its keystream.
const deviceKeyName = "device.key"

func init() {
	register(&Command{
		Name:  "verify",
		Args:  "--key AUDITOR_KEY [flags] DEVICE_DIR|STORE",
		Short: "verify sealed real logs with the auditor's keystream",
		Long: `Checks every sealed entry of a store (a directory holding .SEALFS.LOG) or of
a device directory (one holding store/), with the auditor's keystream.
A copied store (cp -a, tar, rsync) verifies too: files are found through the
sealed map, never through inode numbers.

Every problem is reported, with its file, byte offset and length, and
verification goes on:
  altered          the data or the entry does not match its seal
  misplaced        an entry out of sequence: reordered, replaced or copied
  missing-entries  bytes of a real log that no entry covers (entries deleted)
  truncated        entries beyond the real log's end, or the log's tail cut
                   (found from the device's burnt keys: give --device-key,
                   or verify a device directory, whose device.toml names it)
  keystream        the keystreams disagree with the log, or the device
                   keystream device.toml names is missing, so a cut tail
                   could not be checked
  unsealed         real-log bytes after the last entry
  unknown-file     files, or entries, that no sealed map record names
  missing-file     a sealed real log that was renamed or deleted
  bad-record       a forged, altered or orphaned side record
Then a summary line ("3 entries altered, 1 truncation, 10412 intact").

Without a device keystream (a bare store and no --device-key) a cut tail
cannot be detected: verify says so in a note ("cut tail not checked"). A
device directory whose keystream is gone (the one device.toml names, or
device.key beside store/) is a problem instead, since removing it is how a
rolled-back store would hide; verify DIR/store to check the store alone.

--key takes the auditor's copy. The device's own keystream (the file
device.toml names, or any keystream with burnt keys) is refused: its burnt
keys would make every entry look altered.

Without --key only the structure is checked; that proves nothing and never
counts as success. Exit status: 0 all verified, 1 problems (or no key),
2 usage (also: --key names the device's keystream).

With --json, every problem, every entry (with --entries) and the summary
(with "ok", "problems" and "notes") are JSON lines on stdout.

Examples:
  indelible verify --key /media/usb/auditor.key /srv/worm
  indelible verify --key auditor.key --file var/log/auth.log --range 0:4096 store
  indelible verify --key auditor.key --json store | jq .
`,
		Flags: func(fs *flag.FlagSet) {
			fs.String("key", "", "the auditor keystream (without it: structure only, never success)")
			fs.String("device-key", "", "the device keystream, to detect a cut tail from burnt keys (default: the one DEVICE_DIR/device.toml names)")
			fs.Bool("json", false, "print problems and the summary as JSON lines on stdout")
			fs.Bool("entries", false, "list every entry with an OK or BAD mark")
			fs.String("file", "", "verify only this real log (store-relative path)")
			fs.String("range", "", "with --file: verify only entries overlapping OFF:LEN")
			fs.Bool("progress", false, "show progress on stderr even when it is not a terminal")
		},
		Run: runVerify,
	})
}

func runVerify(env *Env, fs *flag.FlagSet, args []string) error {
	pos := args // the framework parses flags anywhere among the arguments
	if len(pos) != 1 {
		return usageErrorf("verify takes one DEVICE_DIR or STORE, got %d arguments", len(pos))
	}
	get := func(n string) string { return fs.Lookup(n).Value.String() }
	on := func(n string) bool { return get(n) == "true" }
	o := seal.VerifyOptions{AuditorKey: get("key"), File: get("file")}
	if r := get("range"); r != "" {
		if o.File == "" {
			return usageErrorf("--range needs --file")
		}
		rg, err := parseRange(r)
		if err != nil {
			return usageErrorf("--range: %v", err)
		}
		o.Range = &rg
	}
	if o.File != "" {
		o.File = filepath.ToSlash(filepath.Clean(o.File))
	}
	t, err := resolveStore(pos[0])
	if err != nil {
		return err
	}
	store := t.store
	o.DeviceKey = t.devKey
	if k := get("device-key"); k != "" {
		o.DeviceKey, t.devKeyMissing = k, nil
	}
	if o.AuditorKey != "" {
		if err := refuseDeviceKey(o.AuditorKey, o.DeviceKey, t.devKey); err != nil {
			return err
		}
	}
	jsonOut, entries := on("json"), on("entries")
	enc := json.NewEncoder(env.Stdout)
	o.OnProblem = func(p seal.Problem) {
		if jsonOut {
			enc.Encode(struct {
				Problem seal.Problem `json:"problem"`
			}{p})
			return
		}
		fmt.Fprintf(env.Stderr, "indelible: %s\n", p.String())
	}
	if entries {
		o.OnEntry = func(r seal.EntryResult) {
			kind, what := "append", r.Path
			if r.Entry.IsAnchor() {
				kind, what = "side-record", "(side record)" // offset+count locate it in the records file
			} else if r.Entry.Inode == seal.FakeInode {
				kind, what = "filler", "(ratchet filler)"
			} else if what == "" {
				what = fmt.Sprintf("(file id %d)", r.Entry.Inode)
			}
			if jsonOut {
				e := entryJSON{Index: r.Index, Kind: kind, Path: r.Path, Offset: r.Entry.Offset, Count: r.Entry.Count, OK: r.OK, Why: r.Why, Time: r.Time.UTC()}
				if kind == "append" {
					e.FileID = r.Entry.Inode
				}
				enc.Encode(struct {
					Entry entryJSON `json:"entry"`
				}{e})
				return
			}
			mark := "OK "
			if !r.OK {
				mark = "BAD"
			}
			line := fmt.Sprintf("%s %8d %s %d+%d", mark, r.Index, what, r.Entry.Offset, r.Entry.Count)
			if !r.Time.IsZero() {
				line += " @" + r.Time.UTC().Format(time.RFC3339)
			}
			if r.Why != "" {
				line += "  " + r.Why
			}
			fmt.Fprintln(env.Stdout, line)
		}
	}
	// The cut-tail check needs the device keystream: when device.toml names
	// one that is gone, that is a problem (a rolled-back store with its
	// keystream removed must not pass); for a bare store, a note.
	var extra int64
	var notes []string
	switch {
	case t.devKeyMissing != nil:
		extra++
		o.OnProblem(seal.Problem{Kind: seal.ProblemKeystream, Entry: -1, Msg: "cut tail not checked: " + t.devKeyMissing.Error() +
			"; a store rolled back to an older copy passes every other check (give --device-key PATH if the keystream was moved)"})
	case o.DeviceKey == "":
		notes = append(notes, "cut tail not checked: no device keystream (give --device-key, or verify the device directory)")
	}
	if p := newProgress(env.Stderr, on("progress")); p != nil {
		o.Progress = p.update
		defer p.done()
	}
	if o.AuditorKey == "" && !jsonOut {
		fmt.Fprintln(env.Stderr, "indelible: no --key: checking structure only; this proves nothing about the logs")
	}
	sum, err := seal.Verify(store, o)
	if err != nil {
		return err
	}
	problems := sum.Problems() + extra
	if jsonOut {
		enc.Encode(struct {
			Summary  *seal.Summary `json:"summary"`
			Text     string        `json:"text"`
			OK       bool          `json:"ok"`
			Problems int64         `json:"problems"`
			Notes    []string      `json:"notes,omitempty"`
		}{sum, sum.String(), sum.OK() && extra == 0, problems, notes})
	} else {
		fmt.Fprintln(env.Stdout, sum.String())
		if sum.Live {
			fmt.Fprintf(env.Stdout, "note: the device is running: %d findings past what it had acknowledged when this began (appends it was sealing) are not judged; verify a stopped device, or a copy, for the complete picture\n", sum.InFlight)
		} else if sum.OpenBlock {
			fmt.Fprintln(env.Stdout, "note: the last ratchet block is open (the device is running, or crashed and was not reopened)")
		}
		for _, n := range notes {
			fmt.Fprintf(env.Stdout, "note: %s\n", n)
		}
	}
	switch {
	case problems > 0:
		return &ExitError{Code: 1, Err: fmt.Errorf("indelible: verification FAILED: %d problem%s in %s", problems, plural(int(problems)), store)}
	case !sum.Keyed:
		return &ExitError{Code: 1, Err: errors.New("indelible: not verified: structure only; pass the auditor keystream with --key")}
	}
	return nil
}

// verifyTarget is what verify found at its argument.
type verifyTarget struct {
	store string
	// devKey is the device keystream found for the cut-tail check, "" when
	// none: device.toml's device_key, or device.key beside store/.
	devKey string
	// devKeyMissing is set for a device directory whose device.toml names
	// a keystream that cannot be found, or which has no device.toml and
	// no device.key beside its store: a reported problem, never a silent
	// skip (a store rolled back to an old copy, with the keystream that
	// would expose it removed, must not pass).
	devKeyMissing error
}

// resolveStore accepts a store (holding .SEALFS.LOG) or a device directory
// (holding device.toml, or store/); for the latter it also finds the device
// keystream.
func resolveStore(dir string) (verifyTarget, error) {
	if _, err := os.Stat(filepath.Join(dir, seal.LogName)); err == nil {
		return verifyTarget{store: dir}, nil
	}
	// A device directory names its store and keystream in device.toml.
	if _, err := os.Stat(filepath.Join(dir, worm.ConfigName)); err == nil {
		cfg, err := worm.LoadConfig(dir)
		if err != nil {
			return verifyTarget{}, err
		}
		t := verifyTarget{store: devicePath(dir, cfg.Store), devKey: devicePath(dir, cfg.DeviceKey)}
		if _, err := os.Stat(t.devKey); err != nil {
			t.devKey, t.devKeyMissing = "", fmt.Errorf("device.toml names the device keystream %s, which cannot be read: %w", t.devKey, err)
		}
		return t, nil
	}
	s := filepath.Join(dir, "store")
	if _, err := os.Stat(filepath.Join(s, seal.LogName)); err == nil {
		// A device directory without its device.toml: its keystream
		// is expected beside the store. Gone too, that is a problem,
		// as when device.toml names one that is gone: removing both
		// must not turn a rolled-back device into a store that passes.
		// Verifying DIR/store itself checks the store alone, on purpose.
		t := verifyTarget{store: s, devKey: filepath.Join(dir, deviceKeyName)}
		if _, err := os.Stat(t.devKey); err != nil {
			t.devKey, t.devKeyMissing = "", fmt.Errorf("%s holds a store but no device keystream %s (%w); to check the store alone, verify %s", dir, deviceKeyName, err, s)
		}
		return t, nil
	}
	return verifyTarget{}, &ExitError{Code: 2, Err: fmt.Errorf("indelible: %s is neither a store (no %s) nor a device directory (no store/); give the directory `indelible keys` or `indelible init` created", dir, seal.LogName)}
}

// refuseDeviceKey refuses the device's own keystream given as --key: its
// burnt keys would report nearly every entry altered, with nothing saying
// why. It is recognised as the same file as the device keystream verify
// found (or --device-key names), or by its header: keys burnt, which the
// auditor's copy never has.
func refuseDeviceKey(key string, devKeys ...string) error {
	kfi, err := os.Stat(key)
	if err != nil {
		return nil // seal.Verify reports the unreadable key
	}
	why := ""
	for _, d := range devKeys {
		if d == "" {
			continue
		}
		if dfi, err := os.Stat(d); err == nil && os.SameFile(kfi, dfi) {
			why = "it is the device keystream " + d
			break
		}
	}
	if why == "" {
		if f, err := os.Open(key); err == nil {
			var b [seal.KeyHeaderSize]byte
			_, rerr := io.ReadFull(f, b[:])
			f.Close()
			if rerr == nil {
				if h, err := seal.ParseKeyHeader(b[:], kfi.Size()); err == nil && h.Burnt > seal.KeyHeaderSize {
					why = fmt.Sprintf("%d of its keys are burnt; the auditor's copy is never burnt", (h.Burnt-seal.KeyHeaderSize)/seal.KeySize)
				}
			}
		}
	}
	if why == "" {
		return nil
	}
	return &ExitError{Code: 2, Err: fmt.Errorf("indelible: --key %s: this is the device's keystream (%s); pass the auditor's copy (--auditor-key at init)", key, why)}
}

// entryJSON is one examined entry in --entries --json output.
type entryJSON struct {
	Index  int64     `json:"index"`
	Kind   string    `json:"kind"` // "append", "side-record" or "filler"
	Path   string    `json:"path,omitempty"`
	FileID uint64    `json:"file_id,omitempty"`
	Offset uint64    `json:"offset"`
	Count  uint64    `json:"count"`
	OK     bool      `json:"ok"`
	Why    string    `json:"why,omitempty"`
	Time   time.Time `json:"time,omitzero"` // device clock of the latest time record before it
}

func parseRange(s string) (seal.Range, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return seal.Range{}, fmt.Errorf("%q is not OFF:LEN", s)
	}
	off, err1 := parseSize(a)
	n, err2 := parseSize(b)
	if err1 != nil || err2 != nil || n <= 0 {
		return seal.Range{}, fmt.Errorf("%q is not OFF:LEN with LEN > 0", s)
	}
	return seal.Range{Off: off, Len: n}, nil
}

// progress draws a one-line bar on a terminal, at most four times a second.
type progress struct {
	w     io.Writer
	start time.Time
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, force bool) *progress {
	f, ok := w.(*os.File)
	if !force && (!ok || !isTerminal(f)) {
		return nil
	}
	return &progress{w: w, start: time.Now()}
}

// isTerminal reports whether f is a character device (a terminal, for the
// progress bar's purposes); portable to every system indelible builds for.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (p *progress) update(done, total int64) {
	now := time.Now()
	if now.Sub(p.last) < 250*time.Millisecond || total <= 0 || now.Sub(p.start) < time.Second {
		return
	}
	p.last = now
	p.drawn = true
	pct := done * 100 / total
	bar := strings.Repeat("#", int(pct/4)) + strings.Repeat(".", 25-int(pct/4))
	rate := float64(done) / seal.EntrySize / now.Sub(p.start).Seconds()
	fmt.Fprintf(p.w, "\rverifying [%s] %3d%%  %.0f entries/s ", bar, pct, rate)
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r"+strings.Repeat(" ", 70)+"\r")
	}
}
