package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"text/tabwriter"
	"time"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/worm"
)

// statusFresh is how old a published status may be and still count as live:
// a serving device rewrites it every second.
const statusFresh = 5 * time.Second

func init() {
	var asJSON bool
	register(&Command{
		Name:  "status",
		Args:  "[--json] DEVICE_DIR",
		Short: "show protected files, committed and pending bytes, seal lag and indicators",
		Long: `status reads what the serving device publishes every second in
DEVICE_DIR/state/status.json: for each protected file its size as the host sees it, the
bytes committed (sealed and durable) and pending, how long since the host last touched
it; whether the device tripped to read-only; the number of indicators of compromise;
keystream use. A range of a file that the host has not written although the file's
size covers it (data it most likely lost in a crash) holds the file's sealing back: once
it has waited 10 s it is listed with how long, and when commit.lost_after in device.toml
is set the device seals it as found once that long has passed. When the device is not
being served it says so and shows the last published status. It also warns
while an auditor key lies in DEVICE_DIR (auditor.key, as the default device
of 'indelible serve' leaves it).

--json prints one JSON object: the published status (the fields of
state/status.json) and "live" (true only while the device is serving),
"age_ms" (how old the published status is), "never_served" (true when the
device has not been served yet: no status fields then) and
"auditor_key_on_device" (the path, when there is one).

Exit status: 0 when the device is serving, 3 when it is not (never served,
stopped, or its server was killed: the last status is shown), with or
without --json; 1 when DEVICE_DIR is not a device directory.

Examples:
  indelible status /srv/worm
  watch -n1 indelible status /srv/worm`,
		Flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print the status as JSON")
		},
		Run: func(env *Env, _ *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usageErrorf("status needs exactly one DEVICE_DIR")
			}
			dir := args[0]
			cfg, err := worm.LoadConfig(dir)
			if err != nil {
				return err
			}
			audKey := auditorKeyOnDevice(dir)
			st, age, err := worm.ReadStatusFile(dir, time.Now())
			never := errors.Is(err, fs.ErrNotExist)
			if err != nil && !never {
				return fmt.Errorf("reading the published status: %w", err)
			}
			live := !never && st.Serving && age <= statusFresh
			notServing := &ExitError{Code: 3}
			if asJSON {
				out := statusJSON{Status: st, Live: live, NeverServed: never, AuditorKeyOnDevice: audKey}
				if !never {
					ms := age.Milliseconds()
					out.AgeMS = &ms
				}
				b, _ := json.MarshalIndent(out, "", "  ")
				fmt.Fprintln(env.Stdout, string(b))
				if !live {
					return notServing
				}
				return nil
			}
			if audKey != "" {
				fmt.Fprintf(env.Stdout, "WARNING: the auditor key is on this device (%s): whoever holds it can forge the sealed logs; move it to the auditor and delete it here\n", audKey)
			}
			if never {
				n := len(cfg.Protected)
				fmt.Fprintf(env.Stdout, "%s: never served (journal %s, %d protected file%s, on_violation %s)\n",
					dir, cfg.Journal, n, plural(n), cfg.OnViolation)
				for _, p := range cfg.Protected {
					fmt.Fprintf(env.Stdout, "  /%s (inode %d)\n", p.Path, p.Inode)
				}
				fmt.Fprintf(env.Stdout, "start it with: indelible serve %s\n", dir)
				return notServing
			}
			if live {
				fmt.Fprintf(env.Stdout, "%s: serving (status %s old)\n", dir, age.Round(time.Millisecond))
			} else {
				fmt.Fprintf(env.Stdout, "%s: NOT serving; last status from %s (%s ago)\n", dir, st.Time.Format(time.RFC3339), age.Round(time.Second))
				if st.Serving {
					fmt.Fprintln(env.Stdout, "  the server stopped without a clean shutdown (killed or crashed?)")
				}
			}
			if st.ReadOnly {
				fmt.Fprintln(env.Stdout, "READ-ONLY: an indicator of compromise tripped the readonly response; see `indelible events` and `indelible diff`, then restart with `indelible serve --resume`")
			}
			tw := tabwriter.NewWriter(env.Stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tINODE\tSIZE\tCOMMITTED\tPENDING\tIDLE\t")
			for _, f := range st.Files {
				mark := ""
				if f.Frozen {
					mark = " (frozen: honeypot)"
				}
				fmt.Fprintf(tw, "/%s%s\t%d\t%d\t%d\t%d\t%s\t\n", f.Path, mark, f.Inode, f.Size, f.Committed, f.Pending,
					(time.Duration(f.IdleMillis) * time.Millisecond).Round(time.Millisecond))
			}
			tw.Flush()
			for _, f := range st.Files {
				for _, s := range f.Stalls {
					printStall(env, f.Path, s, st.LostAfter.Duration)
				}
			}
			fmt.Fprintf(env.Stdout, "indicators: %d", st.Indicators)
			if st.Indicators > 0 {
				fmt.Fprint(env.Stdout, " (see `indelible events`)")
			}
			fmt.Fprintln(env.Stdout)
			if st.Notices > 0 {
				fmt.Fprintf(env.Stdout, "lost-write notices: %d (ranges the host never wrote, sealed as found; see `indelible events`)\n", st.Notices)
			}
			if !st.LastSeal.IsZero() {
				fmt.Fprintf(env.Stdout, "last seal: %s\n", st.LastSeal.Format(time.RFC3339Nano))
			}
			if st.KeysTotal > 0 {
				pct := 100 * float64(st.KeysUsed) / float64(st.KeysTotal)
				fmt.Fprintf(env.Stdout, "keystream: %s of %s used (%.1f%%)", formatSize(st.KeysUsed), formatSize(st.KeysTotal), pct)
				if pct >= 80 {
					fmt.Fprint(env.Stdout, "  WARNING: provision a new device or key before it runs out")
				}
				fmt.Fprintln(env.Stdout)
			}
			if st.SealError != "" {
				fmt.Fprintf(env.Stdout, "SEALING FAILS: %s\n", st.SealError)
			}
			if !live {
				return notServing
			}
			return nil
		},
	})
}

// statusJSON is what status --json prints: the published status (absent
// for a device never served) and what status concludes from it.
type statusJSON struct {
	*worm.Status
	Live               bool   `json:"live"`
	AgeMS              *int64 `json:"age_ms,omitempty"`
	NeverServed        bool   `json:"never_served,omitempty"`
	AuditorKeyOnDevice string `json:"auditor_key_on_device,omitempty"`
}

// printStall prints one stalled range of a file under the status table.
func printStall(env *Env, path string, s worm.StallStatus, window time.Duration) {
	stalled := time.Duration(s.ForMillis) * time.Millisecond
	what := s.What
	if what == "" {
		what = s.Kind
	}
	fmt.Fprintf(env.Stdout, "  /%s: bytes [%d,+%d) %s, for %s", path, s.Off, s.Len, what, stalled.Round(time.Second))
	switch {
	case s.Kind == revfs.StallTail.String():
		fmt.Fprintln(env.Stdout, "; sealed once the host writes it or appends after it")
	case window > 0:
		fmt.Fprintf(env.Stdout, "; sealed as found in %s (commit.lost_after)\n", max(window-stalled, 0).Round(time.Second))
	default:
		fmt.Fprintln(env.Stdout, "; never sealed as found (commit.lost_after = 0)")
	}
}
