package cli

import (
	"bufio"
	"flag"
	"fmt"
	"io"

	"github.com/indelible-worm/indelible/seal"
)

// defaultKeySize seals about 67 million appends with SealFS's 31 entries per key.
const defaultKeySize = "64M"

func init() {
	register(&Command{
		Name:  "keys",
		Args:  "STORE_DIR --device-key PATH --auditor-key PATH [--size SIZE]",
		Short: "create an empty sealed-log store and its keystream pair",
		Long: `Creates STORE_DIR (absent or empty) holding an empty SealFS log (.SEALFS.LOG),
and two identical random keystreams sharing a fresh magic number:

  --device-key   stays on the device; each key is burnt (overwritten) once used
  --auditor-key  the auditor's copy; move it OFF the device (it can forge every
                 entry), keep it safe, and give it to 'indelible verify --key'

Sizing: the keystream is finite and cannot grow. Each 32-byte key seals
--nratchet appends (31 by default, as SealFS), so

  SIZE ≈ expected appends ÷ 31 × 32 bytes ≈ expected appends in bytes

plus 1 % for ratchet fillers. An append is one sealed write: about one log
line, or one flush of a log file. For example 10 million lines a day for a
year is 3.65 billion appends: --size 3630M (3.5 GiB). 1 TiB of logs
written in 4 KiB appends is 268 million appends: --size 267M.
Side records are sealed as entries too: one per real log, one per crash
repair, and the sealed clock, one in each minute with appends (at most
530 000 a year, about 535K of keys). A device that appends less often than
once a minute spends about two entries per append: size it for twice its
appends.
The device warns from 80 % use and refuses appends (never writing them
unsealed) when the keystream runs out; then create a new store.

Examples:
  indelible keys /srv/worm/store --device-key /srv/worm/device.key \
      --auditor-key /media/usb/auditor.key --size 1G
`,
		Flags: func(fs *flag.FlagSet) {
			fs.String("device-key", "", "path of the device keystream to create (stays on the device)")
			fs.String("auditor-key", "", "path of the auditor keystream to create (must leave the device)")
			fs.String("size", defaultKeySize, "key material to generate (K, M, G, T suffixes); see above for sizing")
			fs.Int("nratchet", seal.DefaultNRatchet, "appends sealed per keystream key through the HMAC ratchet (1 disables it)")
		},
		Run: runKeys,
	})
}

func runKeys(env *Env, fs *flag.FlagSet, args []string) error {
	pos := args // the framework parses flags anywhere among the arguments
	if len(pos) != 1 {
		return usageErrorf("keys takes one STORE_DIR, got %d arguments", len(pos))
	}
	dev := fs.Lookup("device-key").Value.String()
	aud := fs.Lookup("auditor-key").Value.String()
	if dev == "" || aud == "" {
		return usageErrorf("keys needs both --device-key and --auditor-key")
	}
	size, err := parseSize(fs.Lookup("size").Value.String())
	if err != nil {
		return usageErrorf("--size: %v", err)
	}
	if size < seal.KeySize || size > seal.MaxKeyBytes {
		return usageErrorf("--size %d outside [32 bytes, 1T]", size)
	}
	nr := fs.Lookup("nratchet").Value.(flag.Getter).Get().(int)
	if nr < 1 || nr > seal.MaxNRatchet {
		return usageErrorf("--nratchet %d outside [1, %d]", nr, seal.MaxNRatchet)
	}
	if w := seal.KeyPlacementWarning(pos[0], dev, aud); w != "" {
		fmt.Fprintf(env.Stderr, "\n!!! indelible: %s\n\n", w)
	}
	if err := seal.Create(pos[0], dev, aud, size, seal.CreateOptions{NRatchet: nr}); err != nil {
		return err
	}
	keys := (size + seal.KeySize - 1) / seal.KeySize
	fmt.Fprintf(env.Stdout, "created store %s\n  device keystream  %s\n  auditor keystream %s\n  %s of keys: %d keys × %d entries = %d entries (appends, and the side records' anchors)\n",
		pos[0], dev, aud, formatSize(keys*seal.KeySize), keys, nr, keys*int64(nr))
	fmt.Fprintf(env.Stdout, "move the auditor keystream off this machine before the device goes into service\n")
	return nil
}

func init() {
	register(&Command{
		Name:   "seal-append",
		Hidden: true,
		Args:   "STORE_DIR --device-key PATH --id ID --path PATH < DATA",
		Short:  "seal standard input into a real log, one append per line (testing and repair aid)",
		Long: `Opens the store with the device keystream (repairing it after a crash), seals
each line of standard input as one append to the real log PATH with file ID
ID, and closes the store, finishing the ratchet block. The device normally
does this itself; this command exists for tests and manual recovery.`,
		Flags: func(fs *flag.FlagSet) {
			fs.String("device-key", "", "the device keystream")
			fs.Uint64("id", 0, "file ID (the SealFS inode number) of the real log")
			fs.String("path", "", "store-relative path of the real log")
		},
		Run: runSealAppend,
	})
}

func runSealAppend(env *Env, fs *flag.FlagSet, args []string) error {
	if len(args) != 1 {
		return usageErrorf("seal-append takes one STORE_DIR")
	}
	dev := fs.Lookup("device-key").Value.String()
	id := fs.Lookup("id").Value.(flag.Getter).Get().(uint64)
	path := fs.Lookup("path").Value.String()
	if dev == "" || id == 0 || path == "" {
		return usageErrorf("seal-append needs --device-key, --id and --path")
	}
	s, err := seal.Open(args[0], dev, seal.Options{})
	if err != nil {
		return err
	}
	ref := seal.FileRef{ID: id, Path: path}
	br := bufio.NewReader(env.Stdin)
	n := 0
	for {
		line, rerr := br.ReadBytes('\n')
		if len(line) > 0 {
			if err := s.Append(ref, s.Watermark(id), line); err != nil {
				s.Close()
				return err
			}
			n++
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			s.Close()
			return rerr
		}
	}
	if err := s.Close(); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "sealed %d appends to %s\n", n, path)
	return nil
}
