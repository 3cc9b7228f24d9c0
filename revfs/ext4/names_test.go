package ext4

import (
	"slices"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/revfs"
)

// The path of a protected file is watched from the root: every entry it
// takes must keep naming the inode it named at Open. A rename of the file
// or of a directory above it, another file put at a name, or two names
// exchanged make the path lead elsewhere (the host reads another file
// there, or none); they are raised. Without a journal a name that merely
// disappears is not (the blocks of one directory change arrive in any
// order), but one that names another inode is.
func TestRenameWatched(t *testing.T) {
	const app, big = "var/log/app.log", "var/log/big.log"
	for _, img := range []string{"b4k-journal.img", "b1k-journal.img", "b4k-nojournal.img"} {
		journal := !strings.Contains(img, "nojournal")
		for _, tc := range []struct {
			name   string
			cmds   []string
			raised bool   // with or without a journal
			gone   bool   // raised with a journal only (a name that names nothing)
			detail string // in the violation's detail
		}{
			{name: "file renamed in place", cmds: []string{"ln " + app + " var/log/app.log.1", "unlink " + app}, gone: true, detail: `entry "app.log"`},
			{name: "file renamed, another put at the name", cmds: []string{"ln " + app + " var/log/app.log.1", "unlink " + app, "write /etc/hostname " + app},
				raised: true, detail: "leads to another file"},
			{name: "names exchanged", cmds: []string{"ln " + app + " var/log/tmp", "unlink " + app, "ln " + big + " " + app, "unlink " + big, "ln var/log/tmp " + big, "unlink var/log/tmp"},
				raised: true, detail: "leads to another file"},
			{name: "parent renamed, a new one made", cmds: []string{"ln var/log var/log.old", "unlink var/log", "mkdir var/log"},
				raised: true, detail: `entry "log" of directory`},
			{name: "grandparent renamed, a new one made", cmds: []string{"ln var var.old", "unlink var", "mkdir var"},
				raised: true, detail: `entry "var" of directory 2`},
			{name: "parent renamed away", cmds: []string{"ln var/log var/log.old", "unlink var/log"}, gone: true, detail: `entry "log"`},
			{name: "other files and directories", cmds: []string{"write /etc/hostname top.txt", "mkdir var/cache", "write /etc/hostname var/log/new.log",
				"ln var/log/new.log var/log/new.log.1", "unlink var/log/new.log", "mkdir var/log/sub"}},
		} {
			t.Run(img+"/"+tc.name, func(t *testing.T) {
				r := openRig(t, loadImage(t, img), map[string]int64{app: 5000, big: 70000}, app, big)
				next := r.debugfs(tc.cmds...)
				vs := r.feed(next, changedBlocks(r.img.b, next, r.bs))
				want := tc.raised || tc.gone && journal
				got := slices.ContainsFunc(vs, func(v revfs.Violation) bool {
					return v.Kind == revfs.KindDirEntry && strings.Contains(v.Detail, tc.detail)
				})
				if want && !got {
					t.Fatalf("got %v, want %v saying %q", vs, revfs.KindDirEntry, tc.detail)
				}
				if !want && len(vs) != 0 {
					t.Fatalf("false positive: %v", vs)
				}
				if got {
					t.Log(vs[0])
				}
			})
		}
	}
}
