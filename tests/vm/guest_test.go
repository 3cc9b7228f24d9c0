// Package vm holds end-to-end tests in which another kernel is the host: a
// qemu guest booting Debian's kernel attaches the WORM device with the
// kernel's own NBD client (nbd.ko, set up by Debian's nbd-client) and
// mounts it with its ext4 driver. This machine has no nbd module; the
// guest has, and it drives the device as a real host would: FUA writes for
// jbd2 commit blocks, FLUSH, several connections.
//
// What the guest needs comes from the machine's packages, which
// scripts/install-deps --test installs: qemu-system-x86, busybox-static and
// nbd-client, and a downloaded (not installed) linux-image package.
package vm

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// vmCache is where scripts/install-deps --test puts the kernel package.
func vmCache() string {
	if d := os.Getenv("INDELIBLE_VM_CACHE"); d != "" {
		return d
	}
	return "/var/cache/indelible/vm"
}

// guestKernel is the extracted kernel package: the kernel image and the
// module tree.
type guestKernel struct {
	vmlinuz string
	modules string // lib/modules/VERSION
}

// extractKernel unpacks the cached linux-image package (once per test
// binary); it skips (fails under CI) when there is none.
func extractKernel(t *testing.T) guestKernel {
	t.Helper()
	debs, _ := filepath.Glob(filepath.Join(vmCache(), "linux-image-*.deb"))
	if len(debs) == 0 {
		testenv.SkipOrFail(t, fmt.Sprintf("no linux-image package in %s (scripts/install-deps --test downloads one)", vmCache()))
	}
	sort.Strings(debs)
	deb := debs[len(debs)-1]
	dpkgDeb := testenv.RequireCommand(t, "dpkg-deb")
	extracted.Lock()
	defer extracted.Unlock()
	if k, ok := extracted.kernels[deb]; ok {
		return k
	}
	if extracted.dir == "" {
		dir, err := os.MkdirTemp("", "indelible-vm")
		if err != nil {
			t.Fatal(err)
		}
		extracted.dir = dir
	}
	root, err := os.MkdirTemp(extracted.dir, "kernel")
	if err != nil {
		t.Fatal(err)
	}
	extractParts(t, dpkgDeb, deb, root)
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("%s: want one boot/vmlinuz-*, found %v", deb, kernels)
	}
	version := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	k := guestKernel{vmlinuz: kernels[0], modules: filepath.Join(root, "lib", "modules", version)}
	extracted.kernels[deb] = k
	return k
}

// extracted keeps the kernel packages unpacked so far, for every test of
// the package (a few seconds each); TestMain removes them.
var extracted = struct {
	sync.Mutex
	dir     string
	kernels map[string]guestKernel
}{kernels: map[string]guestKernel{}}

func TestMain(m *testing.M) {
	code := m.Run()
	if extracted.dir != "" {
		os.RemoveAll(extracted.dir)
	}
	os.Exit(code)
}

// guestModuleDirs are the parts of the module tree the guest's modules
// and their dependencies come from; the rest of the package (about 400 MB
// unpacked) is not written out.
var guestModuleDirs = []string{"kernel/fs/", "kernel/crypto/", "kernel/lib/", "kernel/drivers/block/", "kernel/drivers/net/ethernet/intel/"}

// extractParts unpacks the kernel image and the modules under
// guestModuleDirs from the package deb into root.
func extractParts(t *testing.T, dpkgDeb, deb, root string) {
	t.Helper()
	cmd := exec.Command(dpkgDeb, "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%s: %v", deb, err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if h.Typeflag != tar.TypeReg || !wantedPart(name) {
			continue
		}
		dst := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", deb, name, err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile %s: %v\n%s", deb, err, stderr.Bytes())
	}
}

// wantedPart reports whether a package path is one extractParts keeps.
func wantedPart(name string) bool {
	if strings.HasPrefix(name, "boot/vmlinuz-") {
		return true
	}
	rest, ok := strings.CutPrefix(name, "lib/modules/")
	if !ok || !strings.HasSuffix(name, ".ko") {
		return false
	}
	_, rest, _ = strings.Cut(rest, "/") // the kernel version
	for _, d := range guestModuleDirs {
		if strings.HasPrefix(rest, d) {
			return true
		}
	}
	return false
}

// guestModules lists the module files to load for names, dependencies
// first, read from each module's .modinfo section (the package ships no
// modules.dep; depmod writes it at install).
func (k guestKernel) guestModules(t *testing.T, names ...string) []string {
	t.Helper()
	paths := map[string]string{}
	filepath.WalkDir(k.modules, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			name := strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")
			paths[name] = p
		}
		return nil
	})
	var order []string
	seen := map[string]bool{}
	var visit func(name string, depth int)
	visit = func(name string, depth int) {
		name = strings.ReplaceAll(name, "-", "_")
		if seen[name] {
			return
		}
		if depth > 32 {
			t.Fatalf("module dependencies of %s nest too deep", name)
		}
		seen[name] = true
		p, ok := paths[name]
		if !ok {
			t.Fatalf("module %s is not in %s (built into this kernel?)", name, k.modules)
		}
		for _, dep := range moduleDepends(t, p) {
			visit(dep, depth+1)
		}
		order = append(order, p)
	}
	for _, n := range names {
		visit(n, 0)
	}
	return order
}

// moduleDepends reads the depends= field of a module's .modinfo section.
func moduleDepends(t *testing.T, path string) []string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("module %s: %v", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		t.Fatalf("module %s has no .modinfo section", path)
	}
	info, err := sec.Data()
	if err != nil {
		t.Fatalf("module %s: %v", path, err)
	}
	for _, field := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(field, []byte("depends=")); ok && len(v) > 0 {
			return strings.Split(string(v), ",")
		}
	}
	return nil
}

// initramfs is a newc cpio archive being built in memory: the format the
// kernel unpacks into its first root filesystem.
type initramfs struct {
	buf  bytes.Buffer
	ino  uint32
	dirs map[string]bool
}

func newInitramfs() *initramfs { return &initramfs{dirs: map[string]bool{}} }

func (a *initramfs) entry(name string, mode uint32, data []byte) {
	a.ino++
	// Fields: ino mode uid gid nlink mtime filesize devmajor devminor
	// rdevmajor rdevminor namesize check, eight hex digits each.
	fmt.Fprintf(&a.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		a.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	a.buf.WriteString(name)
	a.buf.WriteByte(0)
	a.pad()
	a.buf.Write(data)
	a.pad()
}

func (a *initramfs) pad() {
	for a.buf.Len()%4 != 0 {
		a.buf.WriteByte(0)
	}
}

// mkdirAll adds name's directory and its parents (the kernel's unpacker
// creates no missing parents).
func (a *initramfs) mkdirAll(name string) {
	if name == "." || name == "/" || name == "" || a.dirs[name] {
		return
	}
	a.mkdirAll(filepath.Dir(name))
	a.dirs[name] = true
	a.entry(name, 0o040755, nil)
}

// file adds a file with the given permission bits.
func (a *initramfs) file(name string, perm uint32, data []byte) {
	name = strings.TrimPrefix(name, "/")
	a.mkdirAll(filepath.Dir(name))
	a.entry(name, 0o100000|perm, data)
}

// copyFile adds the host file src (symlinks followed) at name.
func (a *initramfs) copyFile(t *testing.T, name, src string, perm uint32) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	a.file(name, perm, b)
}

// program adds a dynamically linked host program at the same path, with
// the shared libraries ldd finds for it.
func (a *initramfs) program(t *testing.T, path string) {
	t.Helper()
	a.copyFile(t, path, path, 0o755)
	out := testenv.Run(t, "ldd", path)
	for _, line := range strings.Split(out, "\n") {
		for _, field := range strings.Fields(line) {
			if strings.HasPrefix(field, "/") {
				a.copyFile(t, field, field, 0o755)
			}
		}
	}
}

// write gzips the archive (with its trailer) into path.
func (a *initramfs) write(t *testing.T, path string) {
	t.Helper()
	a.entry("TRAILER!!!", 0, nil)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	if _, err := zw.Write(a.buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// guest is what boots a guest: the kernel, its modules and the programs
// copied into its initramfs.
type guest struct {
	kernel  guestKernel
	qemu    string
	nbd     string // nbd-client on the machine
	busybox string
	modules []string
}

// newGuest finds what a guest needs, skipping (failing under CI) when
// something is missing.
func newGuest(t *testing.T) *guest {
	t.Helper()
	g := &guest{}
	g.qemu = testenv.RequireCommand(t, "qemu-system-x86_64")
	g.nbd = testenv.RequireCommand(t, "nbd-client")
	testenv.RequireCommand(t, "ldd")
	g.busybox = "/bin/busybox"
	if !isStatic(g.busybox) {
		testenv.SkipOrFail(t, "no static "+g.busybox+" (scripts/install-deps --test installs busybox-static)")
	}
	g.kernel = extractKernel(t)
	// crc32c first: ext4 and jbd2 ask the crypto API for it when they mount
	// a metadata_csum filesystem, and the guest has no modprobe to load it.
	g.modules = g.kernel.guestModules(t, "crc32c_generic", "ext4", "nbd", "e1000")
	return g
}

// isStatic reports whether path is an ELF executable that needs no dynamic
// loader (the guest's /bin/busybox runs before any library is there).
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// guestInit is the guest's /init: it loads the modules, brings up the
// network qemu's user mode gives (the machine is 10.0.2.2), runs the test's
// script and powers off. Lines starting with "VM:" are the protocol with
// the test: "VM: ok" ends a script that ran to its end.
const guestInit = `#!/bin/busybox sh
/bin/busybox mkdir -p /bin /proc /sys /dev /mnt /tmp
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "VM: fail: $*"; poweroff -f; }
for m in $(cat /modules); do insmod "$m" || fail "insmod $m"; done
ip link set lo up
ip link set eth0 up || fail "no eth0"
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
set -e
trap 'fail "script stopped (exit $?)"' EXIT
. /script
trap - EXIT
echo "VM: ok"
poweroff -f
`

// run boots the guest with script (sourced by /init, under set -e) and
// extra files, and returns the console output. It fails the test when the
// script did not run to its end.
func (g *guest) run(t *testing.T, script string, files map[string][]byte, timeout time.Duration) string {
	t.Helper()
	console, _ := g.boot(t, script, files, timeout, nil)
	return console
}

// runUntilPowerCut boots the guest like run, but kills qemu (SIGKILL: the
// host loses power, nothing it holds in memory reaches the device) as soon
// as cut returns true for a line of its console. It fails the test when
// the guest ends before that.
func (g *guest) runUntilPowerCut(t *testing.T, script string, files map[string][]byte, timeout time.Duration, cut func(line string) bool) string {
	t.Helper()
	console, killed := g.boot(t, script, files, timeout, cut)
	if !killed {
		t.Fatalf("the guest ended before its power was cut; console:\n%s", tail(console, 40))
	}
	return console
}

// boot runs qemu; with cut non-nil it kills qemu once cut returns true for
// a console line and reports that it did.
func (g *guest) boot(t *testing.T, script string, files map[string][]byte, timeout time.Duration, cut func(line string) bool) (console string, killed bool) {
	t.Helper()
	a := newInitramfs()
	a.file("init", 0o755, []byte(guestInit))
	a.file("script", 0o644, []byte(script))
	a.copyFile(t, "bin/busybox", g.busybox, 0o755)
	a.program(t, g.nbd)
	var mods []string
	for _, m := range g.modules {
		name := "lib/modules/" + filepath.Base(m)
		a.copyFile(t, name, m, 0o644)
		mods = append(mods, "/"+name)
	}
	a.file("modules", 0o644, []byte(strings.Join(mods, "\n")+"\n"))
	for name, data := range files {
		a.file(name, 0o644, data)
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.gz")
	a.write(t, initrd)

	// Software emulation by default: it boots this kernel in about two
	// seconds, and KVM inside this machine's own VM printed nothing at all
	// (nested virtualisation). INDELIBLE_VM_ACCEL=kvm asks for KVM.
	accel := "tcg"
	if a := os.Getenv("INDELIBLE_VM_ACCEL"); a != "" {
		accel = a
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.qemu,
		"-accel", accel, "-m", "512", "-smp", "1",
		"-kernel", g.kernel.vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4",
		"-nodefaults", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
		"-netdev", "user,id=n0", "-device", "e1000,netdev=n0")
	out := &consoleWriter{}
	if cut != nil {
		out.watch = func(line string) {
			if !killed && cut(line) {
				killed = true
				cmd.Process.Kill()
			}
		}
	}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	console = strings.ReplaceAll(out.buf.String(), "\r\n", "\n")
	t.Logf("guest (%s) ran %v", accel, time.Since(start).Round(time.Millisecond))
	if ctx.Err() != nil {
		t.Fatalf("guest did not power off within %v; console:\n%s", timeout, tail(console, 60))
	}
	if killed {
		return console, true
	}
	if err != nil {
		t.Fatalf("qemu: %v; console:\n%s", err, tail(console, 60))
	}
	if !strings.Contains(console, "VM: ok\n") {
		t.Fatalf("guest script did not finish; console:\n%s", tail(console, 60))
	}
	return console, false
}

// consoleWriter keeps the guest's console and hands each complete line to
// watch (nil: none). exec calls Write from one goroutine at a time.
type consoleWriter struct {
	buf     bytes.Buffer
	partial []byte
	watch   func(line string)
}

func (w *consoleWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if w.watch == nil {
		return len(p), nil
	}
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.partial[:i]), "\r")
		w.partial = w.partial[i+1:]
		w.watch(line)
	}
	return len(p), nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
