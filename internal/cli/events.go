package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/indelible-worm/indelible/worm"
)

func init() {
	var asJSON bool
	register(&Command{
		Name:  "events",
		Args:  "[--json] DEVICE_DIR",
		Short: "print the device's sealed event log (indicators of compromise, lost-write notices)",
		Long: `events prints every indicator of compromise the device recorded: when, what kind,
the device byte range, the protected file it touched, the response taken, and the
SHA-256 of the rejected bytes. The event log is sealed like a real log; check it
with 'indelible verify --key AUDITOR_KEY DEVICE_DIR' before trusting what it says.

Kinds: data-changed, size-decreased, inode-freed, mapping-changed, type-changed,
dir-entry, layout-changed, discard, volume-full, unparseable, suppressed.
A host repeating refused writes faster than 64 a second (or while 4096 wait to be
sealed) gets the rest counted: one 'suppressed' line says how many, so that an
attack cannot fill the store's disk with its own indicators.

It also prints the lost-write notices: a range of a protected file below its size
that the host never wrote (data it lost in a crash) and that the device sealed as
found after commit.lost_after (response=sealed-as-found, file bytes in the detail).

Exit status: 0 when the event log was read (also when the device recorded no
event: "no events recorded"), 1 when it cannot be read, or when the store
device.toml names (or its .SEALFS.LOG) is missing: then the real logs are
gone too, which is never "no events".

Examples:
  indelible events /srv/worm
  indelible events --json /srv/worm | jq 'select(.kind=="data-changed")'`,
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print the raw JSON lines")
		},
		Run: func(env *Env, _ *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usageErrorf("events needs exactly one DEVICE_DIR")
			}
			cfg, err := worm.LoadConfig(args[0])
			if err != nil {
				return err
			}
			store, err := deviceStore(args[0], cfg)
			if err != nil {
				return err
			}
			path := filepath.Join(store, filepath.FromSlash(worm.EventLogPath))
			f, err := os.Open(path)
			if errors.Is(err, os.ErrNotExist) {
				fmt.Fprintln(env.Stdout, "no events recorded")
				return nil
			}
			if err != nil {
				return fmt.Errorf("indelible: the event log: %w", err)
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			n := 0
			for sc.Scan() {
				n++
				if asJSON {
					fmt.Fprintln(env.Stdout, sc.Text())
					continue
				}
				var e worm.Event
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
					fmt.Fprintf(env.Stdout, "line %d: unreadable event (%v): %q\n", n, err, sc.Text())
					continue
				}
				fmt.Fprintf(env.Stdout, "%s  %-15s %-12s bytes [%d,+%d) %s response=%s %s\n",
					e.Time.Format("2006-01-02T15:04:05.000Z"), e.Kind, e.Op, e.Off, e.Len, fileLabel(e), e.Response, e.Detail)
			}
			if err := sc.Err(); err != nil {
				return fmt.Errorf("reading %s: %w", path, err)
			}
			switch {
			case n == 0 && !asJSON:
				fmt.Fprintln(env.Stdout, "no events recorded")
			case !asJSON:
				fmt.Fprintf(env.Stdout, "%d event%s\n", n, plural(n))
			}
			return nil
		},
	})
}

func fileLabel(e worm.Event) string {
	if e.File == "" {
		return "-"
	}
	return fmt.Sprintf("/%s(inode %d)", e.File, e.Inode)
}
