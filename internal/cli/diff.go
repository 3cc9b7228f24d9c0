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

	"github.com/indelible-worm/indelible/audit"
	"github.com/indelible-worm/indelible/internal/regfile"
	"github.com/indelible-worm/indelible/worm"
)

func init() {
	register(&Command{
		Name:  "diff",
		Args:  "[--json] [--strict] DEVICE_DIR",
		Short: "compare what the image shows with the sealed real logs",
		Long: `diff reads every protected file out of the device's image, by the inode number
recorded in device.toml (a rename or a removed directory entry hides no byte),
exactly as the kernel would show it after mounting: committed transactions of a
dirty journal are replayed over their home blocks (when the superblock asks for
recovery, as the kernel does). It compares that with the file's sealed real log
and reports each divergent byte range:

  missing   the real log holds bytes the image no longer shows (truncated,
            deleted, hidden); when the inode was freed, reused or fails its
            checksum, the whole real log is missing and the reason is given
  altered   both hold bytes there and they differ
  unsealed  the image shows bytes past the real log: appended but not sealed
            (still pending, or refused after a honeypot trip)

It also looks up the file's path: a path that names another inode or none
(renamed, removed, or another file put in its place) diverges too, since
whoever opens the path no longer reads the sealed file; so does an inode
that holds a new file ("replaced": its generation is not the one device.toml
recorded at init, as when the file was deleted and made again, which usually
gives it the same inode number), whatever bytes it shows.

Each range is shown with a sample of both sides. The image is parsed with
indelible's own ext4 and jbd2 readers; nothing is mounted and nothing is
written. Verify the real logs first ('indelible verify --key'): diff trusts them.

Exit status: 0 the image shows exactly the real logs, each at its path (pending
appends are reported but do not count unless --strict), 1 divergence (or
DEVICE_DIR is not a device directory, or its image cannot be read), 2 usage.

Examples:
  indelible diff /srv/worm
  indelible diff --json /srv/worm | jq 'select(.ranges | length > 0)'`,
		Flags: func(fs *flag.FlagSet) {
			fs.Bool("json", false, "print one JSON object per protected file, then a summary object")
			fs.Bool("strict", false, "count appended-but-unsealed bytes as divergence")
		},
		Run: runDiff,
	})
}

func runDiff(env *Env, fs *flag.FlagSet, args []string) error {
	if len(args) != 1 {
		return usageErrorf("diff takes one DEVICE_DIR, got %d arguments", len(args))
	}
	asJSON := fs.Lookup("json").Value.String() == "true"
	strict := fs.Lookup("strict").Value.String() == "true"
	dir := args[0]
	cfg, err := worm.LoadConfig(dir) // not a device directory: exit 1, as status and events
	if err != nil {
		return err
	}
	// Without its store every real log would read as empty: refuse, rather
	// than report the image's bytes as merely unsealed.
	store, err := deviceStore(dir, cfg)
	if err != nil {
		return err
	}
	imgPath := devicePath(dir, cfg.Image)
	f, err := os.Open(imgPath)
	if err != nil {
		return &ExitError{Code: 1, Err: fmt.Errorf("indelible: image: %w", err)}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	im, imErr := audit.OpenImage(f, st.Size())
	var reports []*audit.FileReport
	for _, p := range cfg.Protected {
		rep, err := diffOne(im, imErr, audit.Protected{Path: p.Path, Inode: p.Inode, Generation: p.Generation}, store)
		if err != nil {
			return err
		}
		reports = append(reports, rep)
	}
	var notes []string
	if im != nil {
		notes = im.Notes
	}
	diverging := 0
	var missing, altered, pending int64
	for _, r := range reports {
		if r.Diverges(strict) {
			diverging++
		}
		missing += r.Bytes(audit.Missing)
		altered += r.Bytes(audit.Altered)
		pending += r.Bytes(audit.Unsealed)
	}
	summary := fmt.Sprintf("%d of %d protected files diverge: %d bytes missing, %d altered; %d bytes appended but not sealed",
		diverging, len(reports), missing, altered, pending)
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		for _, r := range reports {
			enc.Encode(struct {
				File     *audit.FileReport `json:"file"`
				Diverges bool              `json:"diverges"`
			}{r, r.Diverges(strict)})
		}
		enc.Encode(struct {
			Summary   string   `json:"summary"`
			Diverging int      `json:"diverging"`
			Missing   int64    `json:"missing"`
			Altered   int64    `json:"altered"`
			Unsealed  int64    `json:"unsealed"`
			Notes     []string `json:"notes,omitempty"`
		}{summary, diverging, missing, altered, pending, notes})
	} else {
		for _, n := range notes {
			fmt.Fprintf(env.Stdout, "note: %s\n", n)
		}
		for _, r := range reports {
			printFileReport(env, r, strict)
		}
		fmt.Fprintln(env.Stdout, summary)
	}
	if diverging > 0 {
		return &ExitError{Code: 1, Err: fmt.Errorf("indelible: the image diverges from the real logs in %d files", diverging)}
	}
	return nil
}

func printFileReport(env *Env, r *audit.FileReport, strict bool) {
	state := "ok"
	if r.Diverges(strict) {
		state = "DIVERGES"
	}
	fmt.Fprintf(env.Stdout, "%s (inode %d): %s: real log %d bytes, image shows %d bytes\n", r.Path, r.Inode, state, r.RealLen, r.ImageLen)
	if r.Gone != "" {
		fmt.Fprintf(env.Stdout, "  the image no longer holds the file: %s\n", r.Gone)
	}
	if r.Entry != "" {
		fmt.Fprintf(env.Stdout, "  path: %s\n", r.Entry)
	}
	if r.Replaced != "" {
		fmt.Fprintf(env.Stdout, "  replaced: %s\n", r.Replaced)
	}
	for _, d := range r.Ranges {
		what := map[audit.RangeKind]string{
			audit.Missing:  "in the real log, hidden from the image",
			audit.Altered:  "changed in the image",
			audit.Unsealed: "appended in the image, not sealed",
		}[d.Kind]
		fmt.Fprintf(env.Stdout, "  %-9s [%d, %d) %d bytes %s\n", d.Kind, d.Off, d.Off+d.Len, d.Len, what)
		if d.Real != "" {
			fmt.Fprintf(env.Stdout, "      real:  %s\n", d.Real)
		}
		if d.Image != "" {
			fmt.Fprintf(env.Stdout, "      image: %s\n", d.Image)
		}
	}
}

// diffOne compares one protected file with its real log in store (a
// missing real log holds nothing), reading both a chunk at a time. The real
// log is opened without following links (regfile.OpenBeneath): one that
// leads out of the store is not the device's.
func diffOne(im *audit.Image, imErr error, p audit.Protected, store string) (*audit.FileReport, error) {
	path, ino := p.Path, p.Inode
	var real io.ReaderAt = strings.NewReader("")
	var realLen int64
	rf, err := regfile.OpenBeneath(store, filepath.FromSlash(p.Path))
	switch {
	case err == nil:
		defer rf.Close()
		st, err := rf.Stat()
		if err != nil {
			return nil, fmt.Errorf("indelible: real log of %s: %w", path, err)
		}
		real, realLen = rf, st.Size()
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("indelible: real log of %s: %w", path, err)
	}
	if imErr != nil {
		// The image does not parse: it shows nothing of any file.
		rep := &audit.FileReport{Path: path, Inode: ino, RealLen: realLen,
			Gone: "the image does not parse: " + imErr.Error(), Ranges: []audit.Divergence{}}
		if realLen > 0 {
			rep.Ranges = append(rep.Ranges, audit.Divergence{Range: audit.Range{Kind: audit.Missing, Len: realLen}})
		}
		return rep, nil
	}
	rep, err := audit.DiffFile(im, p, real, realLen)
	if err != nil {
		return nil, fmt.Errorf("indelible: comparing %s: %w", path, err)
	}
	return rep, nil
}
