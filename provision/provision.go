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
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/indelible-worm/indelible/revfs/ext4/layout"
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

// Create makes the device directory described by o. It checks everything it
// can before it writes anything; when a later step fails, it removes what it
// made, and nothing else, so that the same command can simply be run again.
// What it cannot remove, its error names.
func Create(o Options) (_ *Result, err error) {
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
	// Check the configuration as it will be saved. The inode numbers are
	// known only once debugfs has made the files: stand-ins take their place.
	cfg := o.Config
	cfg.Journal = o.Journal
	cfg.Protected = make([]worm.Protected, len(logs))
	for i, l := range logs {
		cfg.Protected[i] = worm.Protected{Path: l, Inode: uint64(i) + 1}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkNames(cfg); err != nil {
		return nil, err
	}
	if o.CreateStore != nil {
		if err := checkAuditorKey(o.AuditorKey, o.Dir, cfg); err != nil {
			return nil, err
		}
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "tune2fs"} {
		if _, err := lookTool(tool); err != nil {
			return nil, fmt.Errorf("%s not found: install e2fsprogs (scripts/install-deps does)", tool)
		}
	}
	if err := checkDir(o.Dir); err != nil {
		return nil, err
	}

	// From here on, a failure takes back what was made.
	var made undo
	defer func() {
		if err != nil {
			err = made.run(err)
		}
	}()
	made.dirs = missingDirs(o.Dir)
	made.clear = o.Dir // empty before, or new: every entry is this call's
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
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
	if err := recordGenerations(img, cfg.Protected); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, stateDir), 0o700); err != nil {
		return nil, err
	}
	if o.CreateStore != nil {
		// The store makes the auditor key's missing directories, then the
		// key itself with O_EXCL: checkAuditorKey saw no file there, so a
		// key present after a failure is this call's, unless the store
		// refused because someone else made one meanwhile.
		made.dirs = append(made.dirs, missingDirs(filepath.Dir(o.AuditorKey))...)
		err := o.CreateStore(filepath.Join(o.Dir, cfg.Store), filepath.Join(o.Dir, cfg.DeviceKey), o.AuditorKey, o.KeyBytes)
		if !refusedExisting(err, o.AuditorKey) {
			made.files = append(made.files, o.AuditorKey)
		}
		if err != nil {
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

// recordGenerations reads each protected inode's i_generation from the
// image (debugfs gives new inodes generation 0; the kernel a random one).
func recordGenerations(img string, ps []worm.Protected) error {
	f, err := os.Open(img)
	if err != nil {
		return err
	}
	defer f.Close()
	im, err := layout.OpenImage(f)
	if err != nil {
		return fmt.Errorf("reading back the new image: %w", err)
	}
	for i := range ps {
		in, _, err := im.ReadInode(ps[i].Inode)
		if err != nil {
			return fmt.Errorf("reading back protected file %s: %w", ps[i].Path, err)
		}
		g := in.Generation
		ps[i].Generation = &g
	}
	return nil
}

// stateDir holds the device's runtime state (worm.Open's written-block set).
const stateDir = "state"

// checkNames refuses image, store and device key names that would land
// outside the device directory (Create makes them inside it, and the device
// would later look for them elsewhere) or on each other.
func checkNames(cfg worm.Config) error {
	names := map[string]string{stateDir: "state directory", worm.ConfigName: "configuration"}
	for _, n := range []struct{ what, name string }{{"image", cfg.Image}, {"store", cfg.Store}, {"device key", cfg.DeviceKey}} {
		if !filepath.IsLocal(n.name) {
			return fmt.Errorf("%s %q: want a name inside the device directory", n.what, n.name)
		}
		c := filepath.Clean(n.name)
		if other, ok := names[c]; ok {
			return fmt.Errorf("%s %q is also the %s: give each its own name", n.what, n.name, other)
		}
		names[c] = n.what
	}
	return nil
}

// checkAuditorKey refuses an auditor key path where the seal store could not
// write it: a file that exists (never overwritten), a path through a file,
// or one of the device's own files.
func checkAuditorKey(key, dir string, cfg worm.Config) error {
	if key == "" {
		return errors.New("no auditor key path: give --auditor-key OUT")
	}
	if _, err := os.Lstat(key); err == nil {
		return fmt.Errorf("auditor key %s already exists; choose a new path (indelible never overwrites a key)", key)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("auditor key: %w", err)
	}
	a, err := filepath.Abs(key)
	if err != nil {
		return err
	}
	for _, n := range []struct{ what, name string }{
		{"image", cfg.Image}, {"store", cfg.Store}, {"device key", cfg.DeviceKey},
		{"state directory", stateDir}, {"configuration", worm.ConfigName},
	} {
		if p, err := filepath.Abs(filepath.Join(dir, n.name)); err == nil && p == a {
			return fmt.Errorf("auditor key %s would be the device's %s; choose a path off the device", key, n.what)
		}
	}
	return nil
}

// checkDir refuses a device directory that holds anything, or that cannot
// be read to tell.
func checkDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("device directory: %w; choose a new directory", err)
	case len(ents) > 0:
		return fmt.Errorf("%s exists and is not empty; choose a new directory (indelible never overwrites a device)", dir)
	}
	return nil
}

// missingDirs returns dir and those of its parents that do not exist,
// outermost first: what os.MkdirAll(dir) would make.
func missingDirs(dir string) []string {
	var out []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		out = append(out, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	slices.Reverse(out)
	return out
}

// refusedExisting reports whether err is an O_EXCL refusal of path: the
// file was there already, made by someone else.
func refusedExisting(err error, path string) bool {
	var pe *fs.PathError
	if !errors.As(err, &pe) || !errors.Is(err, fs.ErrExist) {
		return false
	}
	a, aerr := filepath.Abs(pe.Path)
	b, berr := filepath.Abs(path)
	return aerr == nil && berr == nil && a == b
}

// undo is what a failed Create takes back.
type undo struct {
	files []string // files made outside clear, removed first
	clear string   // a directory that was empty or new: all its entries are Create's
	dirs  []string // directories made, in the order made
}

// run removes what was made and returns err, naming what could not be
// removed and where.
func (u *undo) run(err error) error {
	var left []string
	remove := func(p string, rm func(string) error) {
		if rerr := rm(p); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			if a, aerr := filepath.Abs(p); aerr == nil {
				p = a
			}
			left = append(left, fmt.Sprintf("%s (%v)", p, rerr))
		}
	}
	for _, f := range u.files {
		remove(f, os.Remove)
	}
	if u.clear != "" {
		ents, rerr := os.ReadDir(u.clear)
		if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			remove(u.clear, func(string) error { return rerr })
		}
		for _, e := range ents {
			remove(filepath.Join(u.clear, e.Name()), os.RemoveAll)
		}
	}
	for i := len(u.dirs) - 1; i >= 0; i-- {
		remove(u.dirs[i], os.Remove)
	}
	if len(left) == 0 {
		return err
	}
	return fmt.Errorf("%w; cleaning up, left behind: %s; remove them before running init again", err, strings.Join(left, ", "))
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
		if c == lostFound {
			return nil, fmt.Errorf("protected path %q is the directory mkfs.ext4 makes for e2fsck", p)
		}
		for _, name := range strings.Split(c, "/") {
			if len(name) > maxNameLen {
				return nil, fmt.Errorf("protected path %q has a name of %d bytes: ext4 names hold at most %d bytes", p, len(name), maxNameLen)
			}
		}
		if seen[c] {
			return nil, fmt.Errorf("protected path %q given twice", p)
		}
		seen[c] = true
		out = append(out, c)
	}
	// A protected file cannot also be the directory of another one.
	for _, c := range out {
		for d := path.Dir(c); d != "."; d = path.Dir(d) {
			if seen[d] {
				return nil, fmt.Errorf("protected path %q is inside protected file %q: a file cannot also be a directory", c, d)
			}
		}
	}
	return out, nil
}

// lostFound is the directory mkfs.ext4 makes in the root.
const lostFound = "lost+found"

// maxNameLen is EXT4_NAME_LEN (fs/ext4/ext4.h), the longest name a
// directory entry holds.
const maxNameLen = 255

// mountOptions is what the host mounts with for a journal mode.
func mountOptions(journal string) (string, error) {
	switch journal {
	case "none":
		return "errors=remount-ro", nil
	case "ordered", "writeback", "journal":
		return "data=" + journal + ",errors=remount-ro", nil
	}
	return "", fmt.Errorf("journal mode %q: want none, ordered, writeback or journal", journal)
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
	defer os.Remove(empty.Name())
	if err := empty.Close(); err != nil {
		return 0, err
	}
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
	_, err = sf.WriteString(script.String())
	if cerr := sf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("writing the debugfs script: %w", err)
	}
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
