package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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
	// raw: the attack writes the loop device under the mounted filesystem
	// (debugfs -w, dd): what the host's ext4 then shows depends on what it
	// still caches, so only the command's success is the host's view.
	raw bool
	// mayFail: the host command fails on its own even when the device lets
	// it through (filling the volume ends in ENOSPC).
	mayFail bool
	// honeypot: what diff must show for the victim; gone: the inode no
	// longer holds the file. nil want with !gone means no divergence.
	want []diffWant
	gone bool
	// gap, when set, is the precise diagnosis of why the device cannot
	// detect this attack yet; the case is skipped with it. gaps does the
	// same for one response only.
	gap  string
	gaps map[worm.Response]string
	// wrecksTable: the attack wrecks the whole inode-table block, the
	// bystander's inode included. The host cannot use the bystander until
	// it reads the device's version of the block again (its cached
	// version fails the inode checksum, and ext4 turns read-only on it).
	wrecksTable bool
	// movesDir: the attack moves the directory holding the victim and the
	// bystander. Under discard the image keeps the old entry, but the
	// host's cached directory tree keeps the moved one (a directory in
	// use is not dropped from the dcache), so the host's view is checked
	// only through the image.
	movesDir bool
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
		// Rotation by rename, a forged file put at the name: the sealed
		// inode keeps every byte, but whoever opens the path reads the
		// forged file.
		name: "mv-log-then-forge", kinds: []string{"dir-entry"},
		run: func(a *attackEnv) hostResult {
			if r := host(a.t, "mv", a.path, a.path+".1"); r.err != nil {
				return r
			}
			if err := os.WriteFile(a.path, []byte("nothing happened here\n"), 0o644); err != nil {
				return hostResult{err: err}
			}
			a.sync()
			return hostResult{}
		},
		want: []diffWant{},
	},
	{
		// The same one directory up: the path's directory replaced.
		name: "mv-dir-then-forge", kinds: []string{"dir-entry"},
		run: func(a *attackEnv) hostResult {
			dir := filepath.Dir(a.path)
			if r := host(a.t, "mv", dir, dir+".old"); r.err != nil {
				return r
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				return hostResult{err: err}
			}
			if err := os.WriteFile(a.path, []byte("nothing happened here\n"), 0o644); err != nil {
				return hostResult{err: err}
			}
			a.sync()
			return hostResult{}
		},
		want: []diffWant{}, movesDir: true,
	},
	{
		name: "debugfs-size", kinds: []string{"size-decreased"}, raw: true,
		run: func(a *attackEnv) hostResult {
			r := a.k.debugfs(true, fmt.Sprintf("sif <%d> size 10", a.ino))
			dropCaches(a.t)
			return r
		},
		want: []diffWant{{audit.Missing, 10, -1}},
	},
	{
		name: "debugfs-clri", kinds: []string{"inode-freed", "type-changed", "unparseable"}, raw: true,
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
		name: "debugfs-extent", kinds: []string{"mapping-changed"}, raw: true,
		run: func(a *attackEnv) hostResult {
			phys := a.k.dataBlock(a.ino, 0)
			r := a.k.debugfs(true, fmt.Sprintf("sif <%d> block[5] %d", a.ino, phys+1000))
			dropCaches(a.t)
			return r
		},
		want: []diffWant{{audit.Altered, 0, -1}},
	},
	{
		name: "dd-data-block", kinds: []string{"data-changed", "discard"}, raw: true,
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
		name: "dd-inode-table", kinds: []string{"inode-freed", "type-changed", "size-decreased", "mapping-changed", "unparseable"}, raw: true,
		wrecksTable: true,
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
		// The kernel refuses BLKDISCARD on a mounted block device (EBUSY):
		// the attacker unmounts first.
		name: "blkdiscard", kinds: []string{"discard"}, global: true, unmounted: true,
		run: func(a *attackEnv) hostResult {
			a.k.m.Unmount()
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
					runAttack(t, bin, "ordered", resp, at)
				})
			}
		})
	}
}

// modeAttacks are the attacks repeated in the other journal modes, where
// the engine sees the same changes through other block sequences: data and
// inode through the journal (data=journal), or only home writes (no
// journal).
var modeAttacks = []string{"truncate", "dd-middle-byte", "rm", "debugfs-size", "dd-data-block", "punch-hole", "mv-log-then-forge", "mv-dir-then-forge"}

// TestAttacksJournalModes runs modeAttacks under every response with
// data=journal and without a journal.
func TestAttacksJournalModes(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"debugfs", "dumpe2fs", "fallocate", "mkfs.ext4", "dd"} {
		testenv.RequireCommand(t, c)
	}
	bin := buildIndelible(t)
	for _, mode := range []string{"journal", "none"} {
		t.Run(mode, func(t *testing.T) {
			for _, resp := range []worm.Response{worm.ResponseReadOnly, worm.ResponseDiscard, worm.ResponseHoneypot} {
				t.Run(string(resp), func(t *testing.T) {
					for _, at := range attacks {
						if slices.Contains(modeAttacks, at.name) {
							t.Run(at.name, func(t *testing.T) { runAttack(t, bin, mode, resp, at) })
						}
					}
				})
			}
		})
	}
}

// skipGap skips a case whose failure is a diagnosed gap, unless
// ATTACK_RUN_GAPS is set (to check a fix).
func skipGap(t *testing.T, why string) {
	if why != "" && os.Getenv("ATTACK_RUN_GAPS") == "" {
		t.Skip(why)
	}
}

func runAttack(t *testing.T, bin, journal string, resp worm.Response, at attack) {
	skipGap(t, at.gap)
	if journal != "none" {
		skipGap(t, at.gaps[resp]) // diagnosed with a journal (data=ordered and data=journal)
	}
	k := newDevice(t, devOpts{journal: journal, size: 32 << 20, response: resp,
		logs: []string{victim, bystander}, quiescence: 200 * time.Millisecond})
	for i := 0; i < 240; i++ {
		appendFile(t, k.path([]string{victim, bystander}[i%8/7]), line(i), i%40 == 39)
	}
	k.waitSealed(sealTimeout)
	k.noIndicators()
	before := map[string][]byte{victim: k.realLog(victim), bystander: k.realLog(bystander)}
	a := &attackEnv{t: t, k: k, path: k.path(victim), ino: k.inode(victim), bs: k.blockSize(), committed: before[victim]}

	// An unprotected file kept open across the attack: writing to it tells
	// whether the host's ext4 went read-only even when the attack left the
	// inode-table block of the paths unreadable (EBADMSG on open).
	probe, err := os.OpenFile(filepath.Join(k.m.Dir, "probe"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	if at.unmounted {
		probe.Close() // the attacker unmounts first
	}
	if at.raw && journal == "journal" {
		// data=journal keeps copies of the file's data blocks in the
		// journal until a checkpoint, and recovery would write them over
		// whatever lies at home: the attacker checkpoints first, so that
		// the raw write is what the next mount shows.
		host(t, "fsfreeze", "--freeze", k.m.Dir)
		host(t, "fsfreeze", "--unfreeze", k.m.Dir)
	}
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
			testenv.WaitFor(t, 10*time.Second, "the host's ext4 to turn read-only", func() bool {
				if opts, ok := mountOptions(k.m.Dir); ok && strings.HasPrefix(opts, "ro") {
					return true
				}
				_, err := probe.Write([]byte("probe\n"))
				if err == nil {
					err = probe.Sync()
				}
				if journal == "none" {
					// Without a journal, ext4 turns read-only only on a
					// metadata error; a refused data write reaches the host
					// as EIO on fsync, every time.
					return errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EIO)
				}
				return errors.Is(err, syscall.EROFS)
			})
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
		shown, notes, err := k.imageFile(a.ino)
		t.Logf("image: %q", notes)
		// ATTACK_KEEP_IMAGES=DIR keeps each image for diagnosis (the jbd2
		// transactions the engine let through are read from it).
		if d := os.Getenv("ATTACK_KEEP_IMAGES"); d != "" {
			exec.Command("cp", filepath.Join(k.dir, "image.ext4"), filepath.Join(d, strings.ReplaceAll(t.Name(), "/", "_")+".img")).Run()
		}
		if err != nil {
			t.Fatalf("discard response: the image no longer shows the victim: %v; events:%s", err, k.eventSummary())
		}
		if !bytes.HasPrefix(shown, a.committed) {
			t.Fatalf("discard response: the image shows %d bytes of the victim that do not start with the %d committed (first difference at %d); events:%s",
				len(shown), len(a.committed), firstDiff(shown, a.committed), k.eventSummary())
		}
		// The journal stays one valid log after the attack: the discard
		// response repairs a transaction carrying the attack (the protected
		// bytes of its copies restored, checksums recomputed) instead of
		// dropping its commit block, which would end the replayable log
		// there. So a later fsync-ed append to the bystander shows in the
		// image replayed as the kernel would after a crash, although its
		// transaction carries the inode-table block whose attacker's
		// version the host may still cache.
		bys := before[bystander]
		if !at.global && !at.wrecksTable && !at.movesDir && journal != "none" {
			bys = k.appendReplayed(bystander, bys, line(4000))
		}
		if !at.global && !at.movesDir {
			// The host, once it forgets its cache, reads the original bytes,
			// and the bystander keeps working. jbd2 pins the metadata
			// buffers it journalled until a checkpoint, so drop_caches alone
			// cannot make the kernel forget its version of the inode:
			// fsfreeze forces the checkpoint (the home writes it makes are
			// discarded in turn) and unpins them.
			host(t, "fsfreeze", "--freeze", k.m.Dir)
			host(t, "fsfreeze", "--unfreeze", k.m.Dir)
			dropCaches(t)
			got, err := os.ReadFile(a.path)
			if err != nil {
				t.Fatalf("discard response: after drop_caches the host cannot read the victim: %v; events:%s", err, k.eventSummary())
			}
			if !bytes.HasPrefix(got, a.committed) {
				t.Fatalf("discard response: after drop_caches the host reads %d bytes that do not start with the %d committed (first difference at %d); events:%s",
					len(got), len(a.committed), firstDiff(got, a.committed), k.eventSummary())
			}
			more := append(append([]byte(nil), bys...), line(5000)...)
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
		if at.want != nil && !at.global && !at.gone && !at.raw {
			// The host sees its change: the file no longer reads as sealed.
			dropCaches(t)
			if got, err := os.ReadFile(a.path); err == nil && bytes.HasPrefix(got, a.committed) {
				t.Fatalf("honeypot response: the host does not see its change: the victim still reads as the %d sealed bytes", len(a.committed))
			}
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
