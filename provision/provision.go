// Package provision creates device directories: the filesystem image with
// its protected files (made with e2fsprogs, so the host sees exactly what
// mkfs.ext4 makes), the empty sealed-log store with its keystream pair, and
// device.toml. It is the "Configure" stage of DESIGN.md, run by the auditor
// on a trusted machine.
package provision

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/indelible-worm/indelible/worm"
)

// Options describe a new device.
type Options struct {
	Dir        string   // device directory to create (must not exist or be empty)
	Size       int64    // image size in bytes
	BlockSize  int      // 1024 or 4096 (default 4096)
	Journal    string   // none|ordered|writeback|journal
	Logs       []string // protected files, paths inside the filesystem
	AuditorKey string   // where the auditor's keystream copy goes
	KeyBytes   int64    // keystream size
	Config     worm.Config
	// CreateStore makes the seal store and key pair; provided by the caller
	// so that this package does not depend on the seal implementation.
	CreateStore func(storeDir, devKeyPath, auditorKeyPath string, keyBytes int64) error
}

// Result says what was made.
type Result struct {
	Config    worm.Config
	ImagePath string
	MountOpts string // the options the host should mount with (also the image's defaults)
}

// MinSize is the smallest image accepted: mkfs.ext4 needs room for a journal.
const MinSize = 8 << 20

// Create makes the device directory described by o.
func Create(o Options) (*Result, error) {
	if o.BlockSize == 0 {
		o.BlockSize = 4096
	}
	if o.BlockSize != 1024 && o.BlockSize != 4096 {
		return nil, fmt.Errorf("block size %d not supported: use 1024 or 4096", o.BlockSize)
	}
	if o.Size < MinSize {
		return nil, fmt.Errorf("size %d too small: at least %d MiB", o.Size, MinSize>>20)
	}
	if o.Size%int64(o.BlockSize) != 0 {
		return nil, fmt.Errorf("size %d is not a multiple of the block size %d", o.Size, o.BlockSize)
	}
	if len(o.Logs) == 0 {
		return nil, errors.New("no protected files: give at least one --log PATH")
	}
	logs, err := cleanLogPaths(o.Logs)
	if err != nil {
		return nil, err
	}
	mountOpts, err := mountOptions(o.Journal)
	if err != nil {
		return nil, err
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "tune2fs"} {
		if _, err := lookTool(tool); err != nil {
			return nil, fmt.Errorf("%s not found: install e2fsprogs (scripts/install-deps does)", tool)
		}
	}
	if err := prepareDir(o.Dir); err != nil {
		return nil, err
	}
	cfg := o.Config
	cfg.Journal = o.Journal
	img := filepath.Join(o.Dir, cfg.Image)
	if err := makeImage(img, o.Size, o.BlockSize, o.Journal); err != nil {
		return nil, err
	}
	cfg.Protected = nil
	for _, l := range logs {
		ino, err := addEmptyFile(img, l)
		if err != nil {
			return nil, err
		}
		cfg.Protected = append(cfg.Protected, worm.Protected{Path: l, Inode: ino})
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "state"), 0o700); err != nil {
		return nil, err
	}
	if o.CreateStore != nil {
		if err := o.CreateStore(filepath.Join(o.Dir, cfg.Store), filepath.Join(o.Dir, cfg.DeviceKey), o.AuditorKey, o.KeyBytes); err != nil {
			return nil, fmt.Errorf("creating the seal store: %w", err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Save(o.Dir); err != nil {
		return nil, err
	}
	return &Result{Config: cfg, ImagePath: img, MountOpts: mountOpts}, nil
}

// cleanLogPaths normalises protected paths to relative slash paths and
// rejects ones that escape the filesystem or repeat.
func cleanLogPaths(in []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, p := range in {
		c := path.Clean("/" + strings.TrimSpace(p))[1:]
		if c == "" || strings.ContainsAny(c, "\x00\n\"") {
			return nil, fmt.Errorf("protected path %q is not a file path", p)
		}
		if c == worm.EventLogPath || strings.HasPrefix(c, ".indelible/") || c == ".indelible" {
			return nil, fmt.Errorf("protected path %q is reserved for the device's own sealed files", p)
		}
		if seen[c] {
			return nil, fmt.Errorf("protected path %q given twice", p)
		}
		seen[c] = true
		out = append(out, c)
	}
	return out, nil
}

// mountOptions is what the host mounts with for a journal mode.
func mountOptions(journal string) (string, error) {
	switch journal {
	case "none", "":
		return "errors=remount-ro", nil
	case "ordered", "writeback", "journal":
		return "data=" + journal + ",errors=remount-ro", nil
	}
	return "", fmt.Errorf("journal mode %q: want none, ordered, writeback or journal", journal)
}

func prepareDir(dir string) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("%s exists and is not empty; choose a new directory (indelible never overwrites a device)", dir)
	}
	return os.MkdirAll(dir, 0o700)
}

func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return filepath.Join(d, name), nil
		}
	}
	return "", exec.ErrNotFound
}

func runTool(name string, args ...string) (string, error) {
	p, err := lookTool(name)
	if err != nil {
		return "", fmt.Errorf("%s not found: install e2fsprogs", name)
	}
	var out bytes.Buffer
	cmd := exec.Command(p, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Features the ext4 engine fully understands; everything else it refuses.
// The inode tables must be marked zeroed (ITABLE_ZEROED): otherwise the
// kernel's ext4lazyinit thread zeroes them after the first mount, which the
// device would have to tell apart from an attack on the protected inodes.
// The image is a new sparse file, which reads as zeroes, so mke2fs is told
// so (assume_storage_prezeroed, e2fsprogs 1.47) and writes neither the inode
// tables nor the journal: a 1 TiB image takes 16 MiB of disk instead of
// 18 GiB. An older mke2fs zeroes them itself (lazy_itable_init=0).
func makeImage(img string, size int64, blockSize int, journal string) error {
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	features := "extent,64bit,metadata_csum,flex_bg,dir_index,filetype,sparse_super,large_file,huge_file,extra_isize," +
		"^inline_data,^encrypt,^bigalloc,^meta_bg,^fast_commit,^orphan_file"
	if journal == "none" {
		features += ",^has_journal"
	} else {
		features += ",has_journal"
	}
	mkfs := func(ext string) (string, error) {
		return runTool("mkfs.ext4", "-q", "-F", "-b", strconv.Itoa(blockSize), "-O", features,
			"-E", ext, "-L", "indelible", "-t", "ext4", img)
	}
	if out, err := mkfs("assume_storage_prezeroed=1,nodiscard"); err != nil {
		if !strings.Contains(out, "assume_storage_prezeroed") && !strings.Contains(err.Error(), "assume_storage_prezeroed") {
			return err
		}
		if _, err := mkfs("lazy_itable_init=0,lazy_journal_init=0,nodiscard"); err != nil {
			return err
		}
	}
	// The chosen data= mode and errors=remount-ro become the image's default
	// mount options, so a plain `mount` on the host does the right thing.
	args := []string{"-e", "remount-ro"}
	switch journal {
	case "ordered":
		args = append(args, "-o", "journal_data_ordered")
	case "writeback":
		args = append(args, "-o", "journal_data_writeback")
	case "journal":
		args = append(args, "-o", "journal_data")
	}
	_, err = runTool("tune2fs", append(args, img)...)
	return err
}

var inodeRE = regexp.MustCompile(`Inode: (\d+)`)

// addEmptyFile creates an empty regular file (mode 0644) and its missing
// parent directories with debugfs, and returns its inode number.
func addEmptyFile(img, p string) (uint64, error) {
	empty, err := os.CreateTemp("", "indelible-empty-*")
	if err != nil {
		return 0, err
	}
	empty.Close()
	defer os.Remove(empty.Name())
	if err := os.Chmod(empty.Name(), 0o644); err != nil {
		return 0, err
	}
	var script strings.Builder
	dir := ""
	parts := strings.Split(p, "/")
	for _, part := range parts[:len(parts)-1] {
		dir = path.Join(dir, part)
		fmt.Fprintf(&script, "mkdir \"/%s\"\n", dir)
	}
	fmt.Fprintf(&script, "cd \"/%s\"\nwrite \"%s\" \"%s\"\n", dir, empty.Name(), parts[len(parts)-1])
	sf, err := os.CreateTemp("", "indelible-debugfs-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(sf.Name())
	sf.WriteString(script.String())
	sf.Close()
	// mkdir of an existing directory fails harmlessly inside the script.
	if _, err := runTool("debugfs", "-w", "-f", sf.Name(), img); err != nil {
		return 0, err
	}
	out, err := runTool("debugfs", "-R", fmt.Sprintf("stat \"/%s\"", p), img)
	if err != nil {
		return 0, err
	}
	m := inodeRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("debugfs did not create /%s: %s", p, strings.TrimSpace(out))
	}
	if !strings.Contains(out, "Type: regular") {
		return 0, fmt.Errorf("/%s exists and is not a regular file", p)
	}
	return strconv.ParseUint(m[1], 10, 64)
}
