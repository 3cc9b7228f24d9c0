package kernel

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/worm"
)

// Third red-team round: the superblock, through the real device and the
// real kernel. Each test asserts the secure behaviour: an indicator in the
// sealed event log whenever the host's next mount no longer shows the
// protected file as sealed.

// rt3Setup makes a device whose protected directory var/log is an htree
// of several leaves (a log directory with many rotated files), with the
// victim's lines sealed, then unmounts the host cleanly.
func rt3Setup(t *testing.T, mode string) (*kdev, []byte) {
	t.Helper()
	k := newDevice(t, devOpts{journal: mode, size: 32 << 20, response: worm.ResponseHoneypot,
		logs: []string{victim}, quiescence: 200 * time.Millisecond})
	for i := 0; i < 1500; i++ {
		f := filepath.Join(k.m.Dir, "var/log", fmt.Sprintf("rotated-%c-%d.log.gz", 'a'+i%26, i))
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		appendFile(t, k.path(victim), line(i), i%20 == 19)
	}
	k.waitSealed(sealTimeout)
	k.noIndicators()
	committed := k.realLog(victim)
	k.m.Unmount()
	return k, committed
}

// rt3Check mounts the host again and reads the victim: unless it reads
// the sealed bytes, an indicator must stand.
func rt3Check(t *testing.T, k *kdev, committed []byte) {
	t.Helper()
	k.m.Mount("ext4", "")
	got, err := os.ReadFile(k.path(victim))
	t.Logf("the host, mounted again, reads %d bytes of %s (%v); events:%s", len(got), victim, err, k.eventSummary())
	k.realLogsKept(map[string][]byte{victim: committed})
	if err == nil && bytes.Equal(got, committed) {
		return
	}
	if len(k.events()) == 0 {
		t.Fatalf("silent: the sealed %d bytes of %s are not what the host reads (%d bytes, %v), and the device raised no indicator",
			len(committed), victim, len(got), err)
	}
}

// TestRedTeam3HashSeed: the superblock's s_hash_seed changed (debugfs ssv,
// checksum recomputed) while the host is unmounted. The kernel hashes
// names in htree directories with it: the lookup of app.log lands in
// another leaf and returns ENOENT (no linear fallback), so the protected
// path is gone for the host. Secure: an indicator.
func TestRedTeam3HashSeed(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"ordered", "journal"} {
		t.Run(mode, func(t *testing.T) {
			k, committed := rt3Setup(t, mode)
			r := k.debugfs(true, "ssv hash_seed 0badc0de-1111-4222-8333-444455556666")
			if r.err != nil {
				t.Fatalf("debugfs: %v", r)
			}
			rt3Check(t, k, committed)
		})
	}
}

// TestRedTeam3FirstIno: s_first_ino raised past the protected inode: the
// kernel's iget refuses an inode below it ("bad inode number"), open gives
// EUCLEAN. Secure: an indicator.
func TestRedTeam3FirstIno(t *testing.T) {
	testenv.RequireRoot(t)
	k, committed := rt3Setup(t, "ordered")
	r := k.debugfs(true, fmt.Sprintf("ssv first_ino %d", k.inode(victim)+1))
	if r.err != nil {
		t.Fatalf("debugfs: %v", r)
	}
	rt3Check(t, k, committed)
}

// TestRedTeam3OrphanList: s_last_orphan names the protected inode (its
// i_dtime 0 ends the chain). The next mount's orphan cleanup truncates it
// to i_size (its link count is not 0), which frees nothing committed:
// the host must read every sealed byte (or an indicator stands).
func TestRedTeam3OrphanList(t *testing.T) {
	testenv.RequireRoot(t)
	k, committed := rt3Setup(t, "ordered")
	r := k.debugfs(true, fmt.Sprintf("ssv last_orphan %d", k.inode(victim)))
	if r.err != nil {
		t.Fatalf("debugfs: %v", r)
	}
	rt3Check(t, k, committed)
	k.m.Unmount()
	rt3Check(t, k, committed)
}
