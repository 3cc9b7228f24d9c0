package kernel

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/audit"
	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/worm"
)

// The attacks of TestAttacks are made by root on the host, against the
// protected file var/log/app.log, with the tools an attacker has: coreutils
// on the mounted file, debugfs and dd on the loop device under the mount,
// mkfs, blkdiscard. var/log/other.log is the bystander that must keep
// working where the response allows.
const (
	victim    = "var/log/app.log"
	bystander = "var/log/other.log"
)

// attackEnv is what an attack knows: the device, the victim's host path and
// inode, the filesystem block size, and the bytes sealed before.
type attackEnv struct {
	t         *testing.T
	k         *kdev
	path      string
	ino       uint64
	bs        int64
	committed []byte
}

// diffWant is a range `indelible diff` must report for the victim under
// the honeypot response; off or n < 0 mean "any".
type diffWant struct {
	kind   audit.RangeKind
	off, n int64
}

type attack struct {
	name string
	// kinds are the indicators that correctly name this attack; the device
	// must record at least one of them.
	kinds []string
	run   func(a *attackEnv) hostResult
	// global attacks wreck the whole filesystem (layout, every block): the
	// bystander cannot keep working and the host view is not checked.
	global bool
	// unmounted: the attack unmounted the filesystem first.
	unmounted bool
	// mayFail: the host command fails on its own even when the device lets
	// it through (filling the volume ends in ENOSPC).
	mayFail bool
	// honeypot: what diff must show for the victim; gone: the inode no
	// longer holds the file. nil want with !gone means no divergence.
	want []diffWant
	gone bool
}

func (a *attackEnv) sync() { host(a.t, "sync") }

// whole is the victim's sealed length, for "the whole real log missing".
const whole = -2

var attacks = []attack{
	{
		name: "truncate", kinds: []string{"size-decreased", "mapping-changed", "discard"},
		run: func(a *attackEnv) hostResult {
			r := host(a.t, "truncate", "-s", "0", a.path)
			a.sync()
			return r
		},
		want: []diffWant{{audit.Missing, 0, whole}},
	},
	{
		name: "redirect-empty", kinds: []string{"size-decreased", "mapping-changed", "discard"},
		run: func(a *attackEnv) hostResult {
			r := hostSh(a.t, ": > "+a.path)
			a.sync()
			return r
		},
		want: []diffWant{{audit.Missing, 0, whole}},
	},
	{
		name: "dd-middle-byte", kinds: []string{"data-changed"},
		run: func(a *attackEnv) hostResult {
			r := hostSh(a.t, fmt.Sprintf("printf X | dd of=%s bs=1 seek=%d conv=notrunc status=none", a.path, len(a.committed)/2))
			a.sync()
			return r
		},
		want: []diffWant{{audit.Altered, -1, 1}},
	},
	{
		name: "rm", kinds: []string{"inode-freed", "dir-entry"},
		run: func(a *attackEnv) hostResult {
			r := host(a.t, "rm", a.path)
			a.sync()
			return r
		},
		want: []diffWant{{audit.Missing, 0, whole}}, gone: true,
	},
	{
		name: "mv-other-over-log", kinds: []string{"inode-freed", "dir-entry"},
		run: func(a *attackEnv) hostResult {
			forged := filepath.Join(filepath.Dir(a.path), "forged")
			if err := os.WriteFile(forged, []byte("nothing happened here\n"), 0o644); err != nil {
				return hostResult{err: err}
			}
			r := host(a.t, "mv", forged, a.path)
			a.sync()
			return r
		},
		want: []diffWant{{audit.Missing, 0, whole}}, gone: true,
	},
	{
		name: "debugfs-size", kinds: []string{"size-decreased"},
		run: func(a *attackEnv) hostResult {
			r := a.k.debugfs(true, fmt.Sprintf("sif <%d> size 10", a.ino))
			dropCaches(a.t)
			return r
		},
		want: []diffWant{{audit.Missing, 10, -1}},
	},
	{
		name: "debugfs-clri", kinds: []string{"inode-freed", "type-changed", "unparseable"},
		run: func(a *attackEnv) hostResult {
			r := a.k.debugfs(true, fmt.Sprintf("clri <%d>", a.ino))
			dropCaches(a.t)
			return r
		},
		want: []diffWant{{audit.Missing, 0, whole}}, gone: true,
	},
	{
		// i_block[5] is ee_start_lo of the inode's first extent: point the
		// committed range at other blocks.
		name: "debugfs-extent", kinds: []string{"mapping-changed"},
		run: func(a *attackEnv) hostResult {
			phys := a.k.dataBlock(a.ino, 0)
			r := a.k.debugfs(true, fmt.Sprintf("sif <%d> block[5] %d", a.ino, phys+1000))
			dropCaches(a.t)
			return r
		},
		want: []diffWant{{audit.Altered, 0, -1}},
	},
	{
		name: "dd-data-block", kinds: []string{"data-changed", "discard"},
		run: func(a *attackEnv) hostResult {
			phys := a.k.dataBlock(a.ino, 0)
			r := hostSh(a.t, fmt.Sprintf("yes forged | head -c %d | dd of=%s bs=%d seek=%d count=1 oflag=direct conv=notrunc status=none",
				a.bs, a.k.m.Loop, a.bs, phys))
			dropCaches(a.t)
			return r
		},
		want: []diffWant{{audit.Altered, 0, -1}},
	},
	{
		name: "dd-inode-table", kinds: []string{"inode-freed", "type-changed", "size-decreased", "mapping-changed", "unparseable"},
		run: func(a *attackEnv) hostResult {
			blk, _ := a.k.inodeBlock(a.ino)
			r := host(a.t, "dd", "if=/dev/zero", "of="+a.k.m.Loop, fmt.Sprintf("bs=%d", a.bs), fmt.Sprintf("seek=%d", blk),
				"count=1", "oflag=direct", "conv=notrunc", "status=none")
			dropCaches(a.t)
			return r
		},
		want: []diffWant{{audit.Missing, 0, whole}}, gone: true,
	},
	{
		name: "dd-superblock", kinds: []string{"layout-changed", "unparseable"}, global: true,
		run: func(a *attackEnv) hostResult {
			r := host(a.t, "dd", "if=/dev/zero", "of="+a.k.m.Loop, "bs=1024", "seek=1", "count=1", "oflag=direct", "conv=notrunc", "status=none")
			return r
		},
		want: []diffWant{{audit.Missing, 0, whole}}, gone: true,
	},
	{
		name: "mkfs", kinds: []string{"layout-changed", "unparseable", "discard", "inode-freed"}, global: true, unmounted: true,
		run: func(a *attackEnv) hostResult {
			a.k.m.Unmount()
			return host(a.t, "mkfs.ext4", "-F", "-q", a.k.m.Loop)
		},
		want: []diffWant{{audit.Missing, 0, whole}}, gone: true,
	},
	{
		name: "blkdiscard", kinds: []string{"discard"}, global: true,
		run: func(a *attackEnv) hostResult {
			return host(a.t, "blkdiscard", "-f", a.k.m.Loop)
		},
		want: []diffWant{{audit.Missing, 0, whole}}, gone: true,
	},
	{
		name: "punch-hole", kinds: []string{"mapping-changed", "discard", "data-changed"},
		run: func(a *attackEnv) hostResult {
			r := host(a.t, "fallocate", "--punch-hole", "--offset", "0", "--length", fmt.Sprint(a.bs), a.path)
			a.sync()
			return r
		},
		want: []diffWant{{audit.Altered, 0, -1}},
	},
	{
		name: "fill-volume", kinds: []string{"volume-full"}, mayFail: true,
		run: func(a *attackEnv) hostResult {
			r := host(a.t, "dd", "if=/dev/zero", "of="+filepath.Join(a.k.m.Dir, "fill"), "bs=1M", "status=none")
			a.sync()
			return r
		},
	},
}

// TestAttacks runs every attack against a fresh device under each response
// and checks, for every one: the real logs still hold every byte committed
// before and verify with the auditor's key; the sealed event log names the
// attack; and the response behaves as device.toml promises.
func TestAttacks(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"debugfs", "dumpe2fs", "blkdiscard", "fallocate", "mkfs.ext4", "dd"} {
		testenv.RequireCommand(t, c)
	}
	bin := buildIndelible(t)
	for _, resp := range []worm.Response{worm.ResponseReadOnly, worm.ResponseDiscard, worm.ResponseHoneypot} {
		t.Run(string(resp), func(t *testing.T) {
			for _, at := range attacks {
				t.Run(at.name, func(t *testing.T) {
					runAttack(t, bin, resp, at)
				})
			}
		})
	}
}

func runAttack(t *testing.T, bin string, resp worm.Response, at attack) {
	k := newDevice(t, devOpts{journal: "ordered", size: 32 << 20, response: resp,
		logs: []string{victim, bystander}, quiescence: 200 * time.Millisecond})
	for i := 0; i < 240; i++ {
		appendFile(t, k.path([]string{victim, bystander}[i%8/7]), line(i), i%40 == 39)
	}
	k.waitSealed(sealTimeout)
	k.noIndicators()
	before := map[string][]byte{victim: k.realLog(victim), bystander: k.realLog(bystander)}
	a := &attackEnv{t: t, k: k, path: k.path(victim), ino: k.inode(victim), bs: k.blockSize(), committed: before[victim]}

	r := at.run(a)
	ev := k.waitEvent(at.kinds, 15*time.Second)
	t.Logf("indicator: %+v", ev)
	st := k.dev.Status()

	switch resp {
	case worm.ResponseReadOnly:
		if !st.ReadOnly {
			t.Fatalf("readonly response: the device is still writable after %s", ev.Kind)
		}
		// Every later write fails: the host cannot append, and its ext4
		// turns read-only (errors=remount-ro).
		if !at.unmounted {
			err := tryAppend(k.path(bystander), line(9999))
			if err == nil {
				t.Fatalf("an append after the readonly trip succeeded (attack %s)", r)
			}
			t.Logf("append after the trip: %v", err)
			testenv.WaitFor(t, 10*time.Second, "the host's ext4 to turn read-only", k.readOnlyMount)
		} else if r.err == nil {
			t.Fatalf("%s on a read-only device succeeded", at.name)
		}
		// Nothing is half-sealed: the real logs are exactly what was
		// committed before the attack.
		time.Sleep(time.Second)
		for l, b := range before {
			if got := k.realLog(l); !bytes.Equal(got, b) {
				t.Fatalf("%s: real log changed after the readonly trip: %d bytes, %d before", l, len(got), len(b))
			}
		}
	case worm.ResponseDiscard:
		if st.ReadOnly {
			t.Fatal("discard response tripped the device read-only")
		}
		if r.err != nil && !at.mayFail {
			t.Fatalf("discard response: the host saw its attack fail: %s", r)
		}
		// The image keeps every committed byte of the victim, read by inode
		// with journal replay, as the kernel would see it.
		img, err := os.Open(filepath.Join(k.dir, "image.ext4"))
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := img.Stat()
		shown, err := audit.ReadImageFile(img, fi.Size(), a.ino)
		img.Close()
		if err != nil {
			t.Fatalf("discard response: the image no longer shows the victim: %v", err)
		}
		if !bytes.HasPrefix(shown, a.committed) {
			t.Fatalf("discard response: the image shows %d bytes of the victim that do not start with the %d committed (first difference at %d)",
				len(shown), len(a.committed), firstDiff(shown, a.committed))
		}
		if !at.global {
			// The host, once it forgets its cache, reads the original bytes,
			// and the bystander keeps working.
			dropCaches(t)
			got, err := os.ReadFile(a.path)
			if err != nil {
				t.Fatalf("discard response: after drop_caches the host cannot read the victim: %v", err)
			}
			if !bytes.HasPrefix(got, a.committed) {
				t.Fatalf("discard response: after drop_caches the host reads %d bytes that do not start with the %d committed (first difference at %d)",
					len(got), len(a.committed), firstDiff(got, a.committed))
			}
			more := append(append([]byte(nil), before[bystander]...), line(5000)...)
			if err := tryAppend(k.path(bystander), line(5000)); err != nil {
				t.Fatalf("discard response: the bystander no longer takes appends: %v", err)
			}
			k.waitSealedLog(bystander, more, sealTimeout)
		}
	case worm.ResponseHoneypot:
		if st.ReadOnly {
			t.Fatal("honeypot response tripped the device read-only")
		}
		if r.err != nil && !at.mayFail {
			t.Fatalf("honeypot response: the host saw its attack fail: %s", r)
		}
		checkHoneypotDiff(t, k, bin, at, a)
		// The victim takes no more appends: whatever the host adds is
		// left unsealed.
		if !at.global && !at.gone {
			if err := tryAppend(a.path, line(7000)); err == nil {
				time.Sleep(time.Second)
				if got := k.realLog(victim); len(got) > len(a.committed) && at.want != nil {
					t.Fatalf("honeypot response: an append after the attack was sealed (%d bytes, %d before)", len(got), len(a.committed))
				}
			}
		}
	}
	k.realLogsKept(before)
	k.verify(bin)
}

// checkHoneypotDiff runs `indelible diff` and checks it shows what the
// attack changed or hid.
func checkHoneypotDiff(t *testing.T, k *kdev, bin string, at attack, a *attackEnv) {
	code, reps, out := k.diff(bin)
	t.Logf("indelible diff: exit %d\n%s", code, out)
	rep, ok := reps[victim]
	if !ok {
		t.Fatalf("indelible diff reported nothing for %s", victim)
	}
	if at.want == nil {
		if code != 0 {
			t.Fatalf("indelible diff: exit %d, want 0 (the attack changed no protected byte)", code)
		}
		return
	}
	if code != 1 || !rep.Diverges {
		t.Fatalf("indelible diff: exit %d, diverges=%v; want exit 1 and the victim diverging", code, rep.Diverges)
	}
	if at.gone && rep.File.Gone == "" {
		t.Errorf("indelible diff: the victim's inode should be reported gone")
	}
	for _, w := range at.want {
		n := w.n
		if n == whole {
			n = int64(len(a.committed))
		}
		found := false
		for _, g := range rep.File.Ranges {
			if string(w.kind) == g.Kind && (w.off < 0 || w.off == g.Off) && (n < 0 || n == g.Len) {
				found = true
			}
		}
		if !found {
			t.Errorf("indelible diff: no %s range at %d (+%d) for the victim; got %+v", w.kind, w.off, n, rep.File.Ranges)
		}
	}
	// Every reported range lies inside what was sealed or past it as
	// unsealed; nothing reports a byte the real log does not hold as missing.
	for _, g := range rep.File.Ranges {
		if g.Kind != string(audit.Unsealed) && g.Off+g.Len > int64(len(a.committed)) {
			t.Errorf("indelible diff: %s range [%d,+%d) past the %d sealed bytes", g.Kind, g.Off, g.Len, len(a.committed))
		}
	}
	if strings.Contains(out, "panic") {
		t.Fatal("indelible diff panicked")
	}
}
