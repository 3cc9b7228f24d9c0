package kernel

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/worm"
)

// TestRedTeamInode replays the red team's false negatives on a protected
// file's inode and its directory (debugfs -w on the mounted loop device,
// then a cache drop): each makes the host's kernel refuse the file or read
// it otherwise, so each must raise an indicator. Flags the host may not
// set (encrypt: ENODATA on open, verity: EOPNOTSUPP, ea_inode and casefold:
// EUCLEAN), an xattr block inside the group descriptors (EUCLEAN), a broken
// inode checksum (EBADMSG), a broken checksum on the directory's inode,
// and a broken tail checksum in the directory's block.
func TestRedTeamInode(t *testing.T) {
	testenv.RequireRoot(t)
	sif := func(field string) func(a *attackEnv) error {
		return func(a *attackEnv) error {
			r := a.k.debugfs(true, fmt.Sprintf("sif <%d> %s", a.ino, field))
			dropCaches(a.t)
			return r.err
		}
	}
	cases := []struct {
		name string
		run  func(a *attackEnv) error
	}{
		{"flag-encrypt", sif("flags 0x80800")},
		{"flag-verity", sif("flags 0x180000")},
		{"flag-ea-inode", sif("flags 0x280000")},
		{"flag-casefold", sif("flags 0x40080000")},
		{"file-acl", sif("file_acl 1")},
		{"inode-csum", sif("checksum 0x1234")},
		{"dir-inode-csum", func(a *attackEnv) error {
			r := a.k.debugfs(true, "sif var/log checksum 0x1234")
			dropCaches(a.t)
			return r.err
		}},
		{"dir-block-csum", func(a *attackEnv) error {
			r := a.k.debugfs(false, "bmap var/log 0")
			m := reBmap.FindStringSubmatch(r.out)
			if m == nil {
				return fmt.Errorf("bmap: %s", r.out)
			}
			var phys int64
			fmt.Sscan(m[1], &phys)
			lf, err := os.OpenFile(a.k.m.Loop, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			// The last 4 bytes of the block: the dirent tail's det_checksum.
			_, err = lf.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, (phys+1)*a.bs-4)
			lf.Sync()
			lf.Close()
			dropCaches(a.t)
			return err
		}},
	}
	for _, mode := range []string{"ordered", "journal"} {
		for _, tc := range cases {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				k := newDevice(t, devOpts{journal: mode, size: 32 << 20, response: worm.ResponseHoneypot,
					logs: []string{victim, bystander}, quiescence: 200 * time.Millisecond})
				for i := 0; i < 240; i++ {
					appendFile(t, k.path([]string{victim, bystander}[i%8/7]), line(i), i%40 == 39)
				}
				k.waitSealed(sealTimeout)
				k.noIndicators()
				a := &attackEnv{t: t, k: k, path: k.path(victim), ino: k.inode(victim), bs: k.blockSize(), committed: k.realLog(victim)}
				host(t, "fsfreeze", "--freeze", k.m.Dir) // checkpoint (data=journal)
				host(t, "fsfreeze", "--unfreeze", k.m.Dir)
				if err := tc.run(a); err != nil {
					t.Fatalf("attack: %v", err)
				}
				host(t, "sync")
				host(t, "fsfreeze", "--freeze", k.m.Dir)
				host(t, "fsfreeze", "--unfreeze", k.m.Dir)
				dropCaches(t)
				got, err := os.ReadFile(a.path)
				if err == nil && bytes.HasPrefix(got, a.committed) {
					t.Fatalf("attack had no effect on the host")
				}
				t.Logf("host now reads %d bytes (%v) at %s", len(got), err, victim)
				e := k.waitEvent([]string{"type-changed", "unparseable", "dir-entry", "inode-freed", "mapping-changed"}, 5*time.Second)
				t.Logf("indicator: %s: %s", e.Kind, e.Detail)
			})
		}
	}
}
