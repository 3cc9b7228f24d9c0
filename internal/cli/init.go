package cli

import (
	"flag"
	"fmt"
	"path/filepath"

	"github.com/indelible-worm/indelible/provision"
	"github.com/indelible-worm/indelible/seal"
	"github.com/indelible-worm/indelible/worm"
)

func init() {
	var (
		fsType, journal, size, auditorKey, keySize, onViolation string
		blockSize                                               int
		logs                                                    stringList
		quiescence, lostAfter                                   string
	)
	register(&Command{
		Name:  "init",
		Args:  "DEVICE_DIR --log PATH [--log PATH]... --auditor-key OUT [flags]",
		Short: "create a WORM device: ext4 image with protected files, seal store, keys, device.toml",
		Long: `init is the "configure" stage, run by the auditor on a trusted machine. It creates
DEVICE_DIR holding:
  image.ext4   an ext4 image made by mkfs.ext4 (extents, 64bit, metadata_csum, flex_bg,
               dir_index; never inline_data, encrypt, casefold, bigalloc or meta_bg,
               which the device cannot follow) with each protected file created empty, its parent
               directories too, and the chosen data= mode and errors=remount-ro stored as
               the image's default mount options;
  store/       the empty sealed-log store;
  device.key   the device's keystream, burnt as it is used;
  device.toml  protected files (by path, inode and its generation), journal mode, commit windows, policy.
The auditor's copy of the keystream goes to --auditor-key. It is the only key that can
verify the logs: move it off the device (init warns if it lands inside DEVICE_DIR).
init checks its arguments before it writes anything, and never overwrites a file; when it
fails, it removes what it made (or says what it could not), so it can simply be run again.

mkfs.ext4 runs with lazy_itable_init=0: every inode table is zeroed now, so the host's
kernel never zeroes them later (which the device would have to tell from an attack).
Large images take a while: about 25 s and 18 GiB of written image for 1 TiB.

--journal picks the host's journalling mode (what a plain mount will use):
  ordered    (default) appends are sealed at the jbd2 commit plus a short margin
  journal    data=journal: sealed at the commit block, the tightest window
  writeback  sealed after a quiescence window with no writes to the file
  none       no journal; sealed after the quiescence window. A crash can leave a file's
             size and its block map written apart; the host's e2fsck may then clear
             blocks of the file, and clearing sealed ones is refused like any change
             of sealed data: prefer a journal where crashes are likely

--lost-after: when the host crashes between writing a file's new size and its data
(no journal or data=writeback), the file reads old block contents or zeroes there after
its reboot, and the device never sees that range written: sealing of the file stops
before it (status shows where and since when). By default (0) it stays stopped: the
real logs only ever hold bytes the host wrote. With --lost-after 10m, a range that has
stayed unwritten for 10 minutes is sealed as the host now reads it and a lost-write
notice goes to the sealed event log, so sealing goes on (zeroes at the very end of a
file wait until the host appends after them). A host that holds dirty data
longer than that (Linux writes it back within about 35 s by default) would then have
its late write refused as a change of sealed data.

device.toml's [commit] table holds the windows; seal_interval (default 50ms) is the
shortest time between two seal batches: a busy device seals what became ready meanwhile
together, with fewer disk flushes and less CPU per sealed byte, each byte up to that much
later (0: seal as soon as the last batch is done).

Examples:
  indelible init /srv/worm --size 1G --log var/log/app.log --auditor-key /media/usb/app.key
  indelible init dev1 --journal journal --size 256M --log a.log --log logs/b.log \
      --auditor-key ~/keys/dev1.auditor --on-violation honeypot`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&fsType, "fs", "ext4", "filesystem of the image (ext4)")
			fs.StringVar(&journal, "journal", "ordered", "ext4 journal mode: none, ordered, writeback or journal")
			fs.StringVar(&size, "size", "256M", "image size (K, M, G, T suffixes)")
			fs.IntVar(&blockSize, "block-size", 4096, "filesystem block size: 1024 or 4096")
			fs.Var(&logs, "log", "protected file path inside the filesystem (repeat for more)")
			fs.StringVar(&auditorKey, "auditor-key", "", "where to write the auditor's keystream copy (required; keep it off the device)")
			fs.StringVar(&keySize, "key-size", "", "keystream size (default: one 32-byte key per 31 entries, an entry per 4 KiB of image plus a year of the sealed clock's minute entries, at least 1 MiB; see `indelible help keys`)")
			fs.StringVar(&onViolation, "on-violation", "readonly", "response to an attack: readonly, discard or honeypot")
			fs.StringVar(&quiescence, "quiescence", "1s", "quiet time before sealing when there is no journal commit to wait for")
			fs.StringVar(&lostAfter, "lost-after", "0", "seal a range the host never wrote (data lost in a host crash) as found after this long; 0: never, sealing stops there")
		},
		Run: func(env *Env, _ *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usageErrorf("init needs exactly one DEVICE_DIR")
			}
			if fsType != "ext4" {
				return usageErrorf("--fs %s is not supported yet; use --fs ext4", fsType)
			}
			if auditorKey == "" {
				return usageErrorf("--auditor-key is required: the auditor's key must be written somewhere you will move off the device")
			}
			if len(logs) == 0 {
				return usageErrorf("give at least one --log PATH to protect")
			}
			n, err := parseSize(size)
			if err != nil {
				return usageErrorf("--size: %v", err)
			}
			keyBytes := defaultKeyBytes(n)
			if keySize != "" {
				if keyBytes, err = parseSize(keySize); err != nil {
					return usageErrorf("--key-size: %v", err)
				}
			}
			// Checked here, before anything is written: the seal store,
			// which enforces the range, is made last.
			if keyBytes < seal.KeySize || keyBytes > seal.MaxKeyBytes {
				return usageErrorf("--key-size %s: the keystream holds %s to %s", formatSize(keyBytes),
					formatSize(seal.KeySize), formatSize(seal.MaxKeyBytes))
			}
			cfg := worm.DefaultConfig()
			cfg.OnViolation = worm.Response(onViolation)
			if err := cfg.Commit.Quiescence.UnmarshalText([]byte(quiescence)); err != nil {
				return usageErrorf("--quiescence: %v", err)
			}
			if err := cfg.Commit.LostAfter.UnmarshalText([]byte(lostAfter)); err != nil {
				return usageErrorf("--lost-after: %v", err)
			}
			dir := args[0]
			res, err := provision.Create(provision.Options{
				Dir: dir, Size: n, BlockSize: blockSize, Journal: journal, Logs: logs,
				AuditorKey: auditorKey, KeyBytes: keyBytes, Config: cfg,
				CreateStore: func(storeDir, devKey, audKey string, kb int64) error {
					return seal.Create(storeDir, devKey, audKey, kb, seal.CreateOptions{})
				},
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "indelible: created %s (%s ext4, journal %s, %d protected files)\n",
				dir, formatSize(n), journal, len(res.Config.Protected))
			for _, p := range res.Config.Protected {
				fmt.Fprintf(env.Stdout, "  protected: /%s (inode %d)\n", p.Path, p.Inode)
			}
			fmt.Fprintf(env.Stdout, "  auditor key: %s\n", auditorKey)
			if w := seal.KeyPlacementWarning(filepath.Join(dir, res.Config.Store), filepath.Join(dir, res.Config.DeviceKey), auditorKey); w != "" {
				fmt.Fprintf(env.Stderr, "\nindelible: %s\n\n", w)
			}
			fmt.Fprintf(env.Stdout, "\nServe it:   indelible serve %s\n", dir)
			fmt.Fprintf(env.Stdout, "Host mount: mount -o %s /dev/nbd0 /mnt/worm\n", res.MountOpts)
			return nil
		},
	})
}

// bytesPerSealedEntry is the average log bytes one sealed entry is planned
// to cover when --key-size is not given. The device seals coalesced ranges
// (everything that became coherent since the last pass), so entries are
// usually far larger than one host write; status warns at 80 % key use.
const bytesPerSealedEntry = 4096

// minKeyBytes is the smallest default keystream: 1 MiB of keys seals about
// a million entries, whatever the image size.
const minKeyBytes = 1 << 20

// clockEntriesPerYear is what the sealed clock costs: a time record, with
// its anchor entry, in each minute the device appends anything.
const clockEntriesPerYear = 365 * 24 * 60

// defaultKeyBytes sizes the keystream from the image size, plus a year of
// the sealed clock.
func defaultKeyBytes(imageBytes int64) int64 {
	return max(seal.KeyBytesFor(imageBytes/bytesPerSealedEntry+clockEntriesPerYear, 0), minKeyBytes)
}
