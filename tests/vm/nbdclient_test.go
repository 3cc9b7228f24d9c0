package vm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/nbd"
	"github.com/indelible-worm/indelible/nbd/nbdtest"
	"github.com/indelible-worm/indelible/provision"
	"github.com/indelible-worm/indelible/seal"
	"github.com/indelible-worm/indelible/worm"
)

// countingDevice serves the WORM device and counts the requests the test
// wants the guest's kernel to have sent.
type countingDevice struct {
	*worm.Opened
	fua, flush, trim, trimFailed atomic.Int64
	trimmed                      atomic.Int64 // bytes of the TRIMs that succeeded
}

func (c *countingDevice) Trim(off, length int64) error {
	c.trim.Add(1)
	err := c.Opened.Trim(off, length)
	if err != nil {
		c.trimFailed.Add(1)
	} else {
		c.trimmed.Add(length)
	}
	return err
}

func (c *countingDevice) WriteAtFUA(p []byte, off int64) (int, error) {
	c.fua.Add(1)
	return c.Opened.WriteAtFUA(p, off)
}

func (c *countingDevice) Flush() error {
	c.flush.Add(1)
	return c.Opened.Flush()
}

// TestKernelNBDClientAppends: a guest kernel attaches the WORM device over
// TCP with its own NBD client (two connections), mounts it with the
// image's default options (each journal mode) and appends to three
// protected files at once with dd, some appends fsynced; then unmounts and
// disconnects. Each real log must equal what the guest appended, byte for
// byte (I1, I3), the store must verify with the auditor's key, and no
// indicator may be raised. The guest's kernel (Debian 12's 6.1) is not the
// machine's: its ext4 writes the engine's input its own way. Its nbd
// client sends each jbd2 commit block as a FUA write: the device must have
// served some.
func TestKernelNBDClientAppends(t *testing.T) {
	g := newVMTest(t)
	for _, mode := range []string{"ordered", "journal", "writeback", "none"} {
		t.Run(mode, func(t *testing.T) {
			testAppendsFromGuest(t, g, mode)
		})
	}
}

// served is a WORM device directory served on a loopback port for a
// guest.
type served struct {
	t          *testing.T
	dir        string
	auditorKey string
	dev        *countingDevice
	server     *nbdtest.Server
	closed     bool
}

// serveNewDevice provisions a device with the protected files logs in the
// given journal mode and serves it.
func serveNewDevice(t *testing.T, mode string, logs []string) *served {
	t.Helper()
	base := t.TempDir()
	s := &served{t: t, dir: filepath.Join(base, "dev"), auditorKey: filepath.Join(base, "auditor.key")}
	cfg := worm.DefaultConfig()
	cfg.Commit.Quiescence.Duration = 300 * time.Millisecond
	_, err := provision.Create(provision.Options{
		Dir: s.dir, Size: 128 << 20, Journal: mode, Logs: logs, AuditorKey: s.auditorKey,
		KeyBytes: 16 << 20, Config: cfg,
		CreateStore: func(store, devKey, audKey string, kb int64) error {
			return seal.Create(store, devKey, audKey, kb, seal.CreateOptions{})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := worm.OpenDir(s.dir, worm.Options{Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !s.closed {
			if err := dev.Close(); err != nil {
				t.Errorf("closing the device: %v", err)
			}
		}
	})
	s.dev = &countingDevice{Opened: dev}
	s.server = nbdtest.StartTCP(t, nbd.Config{Exports: []nbd.Export{{Device: s.dev}}})
	return s
}

// connect is the guest's command that attaches the device as /dev/nbd0:
// nbd-client with the default export, opts added (empty: its defaults),
// to the host's loopback as qemu's user network shows it.
func (s *served) connect(opts string) string {
	if opts != "" {
		opts += " "
	}
	return fmt.Sprintf("nbd-client -N '' %s10.0.2.2 %d /dev/nbd0\n", opts, s.server.Port)
}

// attach is the guest's script to attach and mount the device, as the
// README tells a host to, with two connections and the kernel device's
// logical block size (nbd-client's default is 512).
func (s *served) attach(blockSize int) string {
	return s.connect(fmt.Sprintf("-connections 2 -b %d", blockSize)) +
		"echo \"VM: logical block size $(cat /sys/block/nbd0/queue/logical_block_size)\"\n" +
		"mount /dev/nbd0 /mnt\necho \"VM: mounted $(grep ^data= /proc/fs/ext4/nbd0/options)\"\n"
}

// waitSealed waits until the real log of a protected file holds want,
// checking on the way that it is always a prefix of it (I1).
func (s *served) waitSealed(log string, want []byte) {
	s.t.Helper()
	real := filepath.Join(s.dir, "store", log)
	testenv.WaitFor(s.t, 30*time.Second, "the real log of "+log+" to hold every appended byte", func() bool {
		got, err := os.ReadFile(real)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.t.Fatal(err)
		}
		if !bytes.HasPrefix(want, got) {
			s.t.Fatalf("I1 violated: the real log of %s (%d bytes) is not a prefix of what the guest appended (%d bytes)", log, len(got), len(want))
		}
		return len(got) == len(want)
	})
}

// closeAndVerify stops serving, closes the device and verifies the store
// with the auditor's key: it must verify and hold at least sealed bytes.
func (s *served) closeAndVerify(sealed int) {
	s.t.Helper()
	s.server.Stop()
	s.closed = true
	if err := s.dev.Close(); err != nil {
		s.t.Fatal(err)
	}
	sum, err := seal.Verify(filepath.Join(s.dir, "store"), seal.VerifyOptions{AuditorKey: s.auditorKey})
	if err != nil {
		s.t.Fatal(err)
	}
	if !sum.OK() || sum.Bytes < int64(sealed) {
		s.t.Fatalf("verify with the auditor's key: %+v; want OK with at least %d bytes", sum, sealed)
	}
}

// newVMTest makes what every test of the package needs, or skips (fails
// under CI): a slow test, mkfs.ext4 for the device's image, and a guest.
func newVMTest(t *testing.T) *guest {
	t.Helper()
	testenv.RequireLong(t)
	testenv.RequireCommand(t, "mkfs.ext4")
	return newGuest(t)
}

// noIndicators fails the test when the device raised an indicator: what
// the guest did is the work of an honest host.
func (s *served) noIndicators() {
	s.t.Helper()
	if st := s.dev.Status(); st.Indicators != 0 || st.ReadOnly {
		s.t.Fatalf("false positive: %d indicators, read-only=%v: %+v", st.Indicators, st.ReadOnly, st.Recent)
	}
}

func testAppendsFromGuest(t *testing.T, g *guest, mode string) {
	logs := []string{"var/log/app.log", "var/log/audit/auth.log", "srv/events.log"}
	s := serveNewDevice(t, mode, logs)

	// What the guest appends: one writer per protected file, all at once,
	// each appending slices of its own random payload in order, of sizes
	// from one byte to a mebibyte, every other one fsynced.
	rng := rand.New(rand.NewSource(int64(len(mode))))
	sizes := []int{1, 17, 512, 4095, 4096, 4097, 8192, 65536, 300001, 1 << 20}
	var script strings.Builder
	// Half the modes with 4 KiB logical blocks: the kernel then sends no
	// request smaller or less aligned than a block.
	blockSize := 512
	if mode == "journal" || mode == "none" {
		blockSize = 4096
	}
	script.WriteString(s.attach(blockSize))
	files := map[string][]byte{}
	payloads := make([][]byte, len(logs))
	for f, l := range logs {
		script.WriteString("(\n")
		total := 0
		for i := 0; i < 16; i++ {
			n := sizes[rng.Intn(len(sizes))]
			conv := "notrunc"
			if i%2 == 0 {
				conv += ",fsync"
			}
			fmt.Fprintf(&script, "dd if=/payload.%d of=/mnt/%s bs=%d count=1 skip=%d iflag=skip_bytes,fullblock oflag=append conv=%s 2>/dev/null\n",
				f, l, n, total, conv)
			total += n
		}
		fmt.Fprintf(&script, ") & w%d=$!\n", f)
		payloads[f] = make([]byte, total)
		rng.Read(payloads[f])
		files[fmt.Sprintf("payload.%d", f)] = payloads[f]
	}
	for f, l := range logs {
		fmt.Fprintf(&script, "wait $w%d\necho \"VM: %s $(stat -c %%s /mnt/%s)\"\n", f, l, l)
	}
	script.WriteString("umount /mnt\nnbd-client -d /dev/nbd0\n")

	console := g.run(t, script.String(), files, 90*time.Second)
	for f, l := range logs {
		if want := fmt.Sprintf("VM: %s %d\n", l, len(payloads[f])); !strings.Contains(console, want) {
			t.Fatalf("the guest's %s is not %d bytes long; console:\n%s", l, len(payloads[f]), tail(console, 30))
		}
	}
	if want := fmt.Sprintf("VM: logical block size %d\n", blockSize); !strings.Contains(console, want) {
		t.Errorf("the guest's nbd0 does not have %d-byte logical blocks; console:\n%s", blockSize, tail(console, 30))
	}
	mounted := "VM: mounted data=" + mode + "\n"
	if mode == "none" {
		mounted = "VM: mounted \n" // no journal, no data= option
	}
	if !strings.Contains(console, mounted) {
		t.Errorf("the guest did not mount in journal mode %s; console:\n%s", mode, tail(console, 30))
	}

	// The guest has unmounted: everything it wrote is flushed, so all of
	// it must be sealed once the device's windows pass.
	total := 0
	for f, l := range logs {
		s.waitSealed(l, payloads[f])
		total += len(payloads[f])
	}
	s.noIndicators()
	// jbd2 writes each commit block with FUA; without a journal only
	// FLUSHes are certain.
	fua, flush := s.dev.fua.Load(), s.dev.flush.Load()
	if (fua == 0 && mode != "none") || flush == 0 {
		t.Errorf("the guest's kernel sent %d FUA writes and %d FLUSHes; want some of each", fua, flush)
	}
	t.Logf("served %d FUA writes and %d FLUSHes; %d bytes sealed", fua, flush, total)
	s.closeAndVerify(total)
}

// TestKernelNBDClientOverwriteRefused: root on a guest rewrites the start
// of a protected file whose bytes are sealed, in place, and fsyncs. The
// device refuses the write (the guest's kernel reports an I/O error to
// fsync), raises an indicator and, by the default readonly response,
// refuses every later write. The real log keeps what was sealed and
// verifies.
func TestKernelNBDClientOverwriteRefused(t *testing.T) {
	g := newVMTest(t)
	const log = "var/log/app.log"
	s := serveNewDevice(t, "ordered", []string{log})
	payload := make([]byte, 100<<10)
	rand.New(rand.NewSource(1)).Read(payload)
	script := s.attach(512) +
		"dd if=/payload of=/mnt/" + log + " bs=4096 oflag=append conv=notrunc,fsync 2>/dev/null\n" +
		"sleep 3\n" + // the device's ordered margin (100 ms) passes: the bytes are sealed
		"if dd if=/dev/zero of=/mnt/" + log + " bs=4096 count=1 conv=notrunc,fsync 2>/dev/null; then echo 'VM: overwrite accepted'; else echo 'VM: overwrite refused'; fi\n" +
		"umount /mnt || true\nnbd-client -d /dev/nbd0\n"
	console := g.run(t, script, map[string][]byte{"payload": payload}, 90*time.Second)
	if !strings.Contains(console, "VM: overwrite refused\n") {
		t.Errorf("the guest's overwrite of sealed bytes did not fail; console:\n%s", tail(console, 30))
	}
	s.waitSealed(log, payload)
	st := s.dev.Status()
	if st.Indicators == 0 || !st.ReadOnly {
		t.Fatalf("after the overwrite: %d indicators, read-only=%v; want an indicator and read-only: %+v", st.Indicators, st.ReadOnly, st.Recent)
	}
	s.closeAndVerify(len(payload))
}

// TestKernelNBDClientDiscard: the guest mounts with -o discard, so that
// ext4 trims the blocks of files it deletes, and runs fstrim over the
// whole free space, between appends to a protected file. Freeing space is
// not an attack: the device must serve the trims, raise no indicator, and
// seal every appended byte.
func TestKernelNBDClientDiscard(t *testing.T) {
	g := newVMTest(t)
	const log = "var/log/app.log"
	s := serveNewDevice(t, "ordered", []string{log})
	payload := make([]byte, 1<<20)
	rand.New(rand.NewSource(3)).Read(payload)
	half := len(payload) / 2
	script := s.connect("") +
		"mount -o discard /dev/nbd0 /mnt\n" +
		fmt.Sprintf("dd if=/payload of=/mnt/%s bs=%d count=1 iflag=fullblock oflag=append conv=notrunc,fsync 2>/dev/null\n", log, half) +
		"mkdir /mnt/scratch\n" +
		"for i in 1 2 3 4; do dd if=/dev/zero of=/mnt/scratch/f$i bs=1M count=4 conv=fsync 2>/dev/null; done\n" +
		"rm -r /mnt/scratch\nsync\n" +
		"trimmed=$(fstrim -v /mnt)\necho \"VM: $trimmed\"\n" +
		fmt.Sprintf("dd if=/payload of=/mnt/%s bs=%d count=1 skip=%d iflag=skip_bytes,fullblock oflag=append conv=notrunc,fsync 2>/dev/null\n", log, len(payload)-half, half) +
		"fstrim /mnt\n" +
		"umount /mnt\nnbd-client -d /dev/nbd0\n"
	console := g.run(t, script, map[string][]byte{"payload": payload}, 90*time.Second)
	s.waitSealed(log, payload)
	s.noIndicators()
	if s.dev.trim.Load() == 0 || s.dev.trimFailed.Load() != 0 {
		t.Fatalf("the guest's kernel sent %d TRIMs, of which %d failed; want some, none failed", s.dev.trim.Load(), s.dev.trimFailed.Load())
	}
	// The deleted files' 16 MiB at least, from whichever of the guest's
	// discards sent them: its 6.1 kernel's first fstrim sometimes trims
	// nothing ("0 bytes trimmed", 2 runs of about 10), and the later one
	// then trims the free space.
	if got := s.dev.trimmed.Load(); got < 16<<20 {
		t.Fatalf("the device trimmed %d bytes; want at least the deleted files' %d; console:\n%s", got, 16<<20, tail(console, 20))
	}
	t.Logf("served %d TRIMs, %d bytes; the guest: %s", s.dev.trim.Load(), s.dev.trimmed.Load(), vmLines(console))
	s.closeAndVerify(len(payload))
}

// vmLines returns the guest's "VM:" lines, joined.
func vmLines(console string) string {
	var lines []string
	for _, l := range strings.Split(console, "\n") {
		if strings.HasPrefix(l, "VM: ") && l != "VM: ok" {
			lines = append(lines, strings.TrimPrefix(l, "VM: "))
		}
	}
	return strings.Join(lines, "; ")
}

// TestKernelNBDClientRemount: appends that span unmounts, the guest
// mounting first with another data= mode than the image's default
// (data=journal on a data=ordered image) and then with the default; the
// engine follows what the writes show, not device.toml. Every byte must be
// sealed, with no indicator.
func TestKernelNBDClientRemount(t *testing.T) {
	g := newVMTest(t)
	const log = "var/log/app.log"
	s := serveNewDevice(t, "ordered", []string{log})
	payload := make([]byte, 3<<20+12345)
	rand.New(rand.NewSource(4)).Read(payload)
	third := len(payload) / 3
	appendPart := func(from, to int) string {
		return fmt.Sprintf("dd if=/payload of=/mnt/%s bs=%d count=1 skip=%d iflag=skip_bytes,fullblock oflag=append conv=notrunc,fsync 2>/dev/null\n",
			log, to-from, from)
	}
	script := s.connect("") +
		"mount -o data=journal /dev/nbd0 /mnt\necho \"VM: first $(grep ^data= /proc/fs/ext4/nbd0/options)\"\n" +
		appendPart(0, third) + "umount /mnt\n" +
		"mount /dev/nbd0 /mnt\necho \"VM: second $(grep ^data= /proc/fs/ext4/nbd0/options)\"\n" +
		appendPart(third, 2*third) + "umount /mnt\n" +
		"mount /dev/nbd0 /mnt\n" + appendPart(2*third, len(payload)) +
		"umount /mnt\nnbd-client -d /dev/nbd0\n"
	console := g.run(t, script, map[string][]byte{"payload": payload}, 90*time.Second)
	if !strings.Contains(console, "VM: first data=journal\n") || !strings.Contains(console, "VM: second data=ordered\n") {
		t.Errorf("the guest did not mount with data=journal, then data=ordered; console:\n%s", tail(console, 30))
	}
	s.waitSealed(log, payload)
	s.noIndicators()
	s.closeAndVerify(len(payload))
}

// TestKernelNBDClientHostPowerCut: the host loses power (qemu killed with
// SIGKILL) in the middle of appends, some fsynced; the device stays up. A
// new boot of the guest mounts the image (its kernel replays the journal),
// reads the file's length and appends more. The file then holds every
// fsynced byte, and its real log must equal it: nothing sealed that the
// crash took back (I1), nothing fsynced lost (I3), no indicator for the
// replay's writes.
func TestKernelNBDClientHostPowerCut(t *testing.T) {
	g := newVMTest(t)
	for _, mode := range []string{"ordered", "journal"} {
		t.Run(mode, func(t *testing.T) {
			testHostPowerCut(t, g, mode)
		})
	}
}

func testHostPowerCut(t *testing.T, g *guest, mode string) {
	const log = "var/log/app.log"
	const chunk, chunks, cutAfter = 20480, 60, 12
	s := serveNewDevice(t, mode, []string{log})
	rng := rand.New(rand.NewSource(int64(len(mode))))
	payload := make([]byte, chunk*chunks)
	rng.Read(payload)
	more := make([]byte, 70001)
	rng.Read(more)
	attach := s.connect("") + "mount /dev/nbd0 /mnt\n"

	// First boot: chunks appended in order, every other one fsynced and
	// reported; the others are written with O_DIRECT, so that their data
	// reaches the device at once while the new length waits for the next
	// journal commit (in data=journal the kernel buffers them instead).
	// The power goes once the chunk after the cutAfter-th fsync is written.
	first := attach + fmt.Sprintf(`i=0
while [ $i -lt %d ]; do
  if [ $((i %% 2)) = 0 ]; then
    dd if=/payload of=/mnt/%[2]s bs=%[3]d count=1 skip=$((i*%[3]d)) iflag=skip_bytes,fullblock oflag=append conv=notrunc,fsync 2>/dev/null
    echo "VM: synced $(((i+1)*%[3]d))"
  else
    dd if=/payload of=/mnt/%[2]s bs=%[3]d count=1 skip=$((i*%[3]d)) iflag=skip_bytes,fullblock oflag=append,direct conv=notrunc 2>/dev/null
    echo "VM: written $(((i+1)*%[3]d))"
  fi
  i=$((i+1))
done
`, chunks, log, chunk)
	var synced, reports int
	g.runUntilPowerCut(t, first, map[string][]byte{"payload": payload}, 90*time.Second, func(line string) bool {
		if n, ok := strings.CutPrefix(line, "VM: synced "); ok {
			fmt.Sscan(n, &synced)
			reports++
		}
		return reports >= cutAfter && strings.HasPrefix(line, "VM: written ")
	})
	// In data=ordered the direct write's bytes are on the device, their
	// new length in a journal commit that never came: blocks the host
	// wrote that no committed metadata gives to the file, which the device
	// must not seal (the replay below leaves them out of the file, and the
	// next append may reuse them).
	unsyncedOnDevice := false
	if img, err := os.ReadFile(filepath.Join(s.dir, s.dev.Config.Image)); err == nil {
		unsyncedOnDevice = bytes.Contains(img, payload[synced:synced+chunk])
	}
	if mode == "ordered" && !unsyncedOnDevice {
		t.Errorf("the direct write after byte %d did not reach the device before the power cut", synced)
	}

	// Second boot: the journal is replayed at mount.
	second := attach + fmt.Sprintf("echo \"VM: size $(stat -c %%s /mnt/%s)\"\n", log) +
		fmt.Sprintf("dd if=/more of=/mnt/%s bs=%d count=1 iflag=fullblock oflag=append conv=notrunc,fsync 2>/dev/null\n", log, len(more)) +
		"umount /mnt\nnbd-client -d /dev/nbd0\n"
	console := g.run(t, second, map[string][]byte{"more": more}, 90*time.Second)
	size := -1
	for _, l := range strings.Split(console, "\n") {
		if n, ok := strings.CutPrefix(l, "VM: size "); ok {
			fmt.Sscan(n, &size)
		}
	}
	if size < synced || size > len(payload) {
		t.Fatalf("after the power cut the file has %d bytes; %d were fsynced, %d appended at most; console:\n%s", size, synced, len(payload), tail(console, 30))
	}
	t.Logf("power cut after %d bytes fsynced (the next %d on the device: %v); the file kept %d", synced, chunk, unsyncedOnDevice, size)
	want := append(bytes.Clone(payload[:size]), more...)
	s.waitSealed(log, want)
	s.noIndicators()
	s.closeAndVerify(len(want))
}
