package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/nbd"
	"github.com/indelible-worm/indelible/worm"
)

// defaultListen is the IANA NBD port on loopback only: reachable by clients on
// this machine, not by the network, unless the user says otherwise.
const defaultListen = "tcp:127.0.0.1:10809"

// shutdownTimeout bounds how long a signal waits for in-flight requests.
const shutdownTimeout = 30 * time.Second

func init() {
	register(&Command{
		Name:           "serve",
		WatchesContext: true,
		Args:           "[--listen unix:PATH|tcp:HOST:PORT] [--read-only] [--resume] [--export NAME] [IMAGE|DEVICE_DIR]",
		Short:          "serve a disk image to NBD clients over TCP or a Unix socket",
		Long: `Serves IMAGE (a file or block device) with the NBD protocol. Any NBD client
can attach it: the Linux kernel through nbd-client, nbdfuse, qemu, nbdinfo,
nbdcopy. The client sees a plain disk it can format and mount.

With no IMAGE, serves the default device: a 64 MiB ext4 image created on
first use in $INDELIBLE_HOME/default (default $XDG_DATA_HOME/indelible, or
~/.local/share/indelible). Creating it needs mkfs.ext4 (e2fsprogs).

SIGINT or SIGTERM stops the server gracefully: requests in flight finish,
new ones are refused with ESHUTDOWN, and the image is flushed to disk. A
second SIGINT or SIGTERM during that shutdown exits at once (status 1)
without waiting: a WORM device loses at most its unsealed tail, and the next
serve resumes from the store's watermarks.

A WORM device directory (made by indelible init) is served with its protected
files watched and sealed. Its response to an indicator of compromise
(on_violation in device.toml) outlives a restart: a device that went
read-only stays read-only, and honeypot files stay frozen, because serve
replays the sealed event log at start, whatever on_violation says now. While
it is read-only the host cannot even mount it read-only if its journal needs
recovery (mount -o ro,noload shows the home blocks). After investigating
(indelible events, indelible diff), an operator starts it again with --resume,
which clears both and seals the resume in the event log.

The default device keeps its auditor key beside it (DIR/auditor.key), which
is for demonstrations only: serve warns on every start while it is there.

Security: NBD has no authentication and no encryption. Whoever can connect
can read and overwrite the whole disk. The default listens on loopback only.
Listening on another address (--listen tcp:0.0.0.0:10809) exposes the disk
to that network: do it only on a dedicated, trusted link between the host
and this device, or reach a loopback listener through an SSH tunnel. A Unix
socket is protected by its file permissions.

Examples:
  indelible serve
  indelible serve --listen unix:/run/indelible.sock disk.img
  indelible serve --resume /srv/worm      (after a read-only trip, investigated)
  nbdinfo nbd://127.0.0.1:10809
  nbd-client -N '' 127.0.0.1 10809 /dev/nbd0`,
		Flags: func(fs *flag.FlagSet) {
			fs.String("listen", defaultListen, "where to listen: `unix:PATH or tcp:HOST:PORT`")
			fs.Bool("read-only", false, "refuse writes (clients see a read-only disk)")
			fs.Bool("resume", false, "device directory: clear a read-only trip and honeypot freezes recorded in the sealed event log (the resume is sealed too)")
			fs.String("export", "", "export `NAME` clients ask for (\"\" is the default export)")
		},
		Run: runServe,
	})
}

func runServe(env *Env, fs *flag.FlagSet, args []string) error {
	if len(args) > 1 {
		return usageErrorf("serve takes at most one IMAGE, got %d arguments", len(args))
	}
	listen := fs.Lookup("listen").Value.String()
	readOnly := fs.Lookup("read-only").Value.(flag.Getter).Get().(bool)
	resume := fs.Lookup("resume").Value.(flag.Getter).Get().(bool)
	exportName := fs.Lookup("export").Value.String()
	network, addr, err := parseListen(listen)
	if err != nil {
		return err
	}

	target := ""
	if len(args) == 1 {
		target = args[0]
	} else if target, err = ensureDefaultTarget(env); err != nil {
		return err
	}
	// One logger for the server and the device it serves.
	logger := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dev, what, err := openServeTarget(target, readOnly, resume, logger)
	if err != nil {
		return err
	}
	if env.WrapDevice != nil {
		wrapped, err := env.WrapDevice(dev)
		if err != nil {
			dev.Close()
			return err
		}
		dev = wrapped
	}
	defer dev.Close()

	srv, err := nbd.NewServer(nbd.Config{
		Exports: []nbd.Export{{Name: exportName, Description: what, Device: dev, ReadOnly: readOnly}},
		Logger:  logger,
	})
	if err != nil {
		return fmt.Errorf("indelible: cannot serve %s: %w", what, err)
	}
	ln, err := listenOn(network, addr)
	if err != nil {
		return err
	}
	if network == "unix" {
		defer os.Remove(addr)
	}
	printConnectHelp(env, ln, exportName, what)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("indelible: serving stopped: %w", err)
	case <-env.Context.Done():
	}
	fmt.Fprintln(env.Stderr, "indelible: shutting down: finishing requests in flight, flushing the image")
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(ctx)
	<-served
	if cerr := dev.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("indelible: shutdown: %w", err)
	}
	fmt.Fprintln(env.Stderr, "indelible: stopped; the image is flushed")
	return nil
}

// parseListen splits "unix:PATH" or "tcp:HOST:PORT".
func parseListen(s string) (network, addr string, err error) {
	network, addr, ok := strings.Cut(s, ":")
	switch {
	case ok && network == "unix" && addr != "":
		return network, addr, nil
	case ok && network == "tcp":
		if _, _, err := net.SplitHostPort(addr); err == nil {
			return network, addr, nil
		}
	}
	return "", "", usageErrorf("indelible: bad --listen %q; use unix:PATH or tcp:HOST:PORT (e.g. %s)", s, defaultListen)
}

// listenOn listens, replacing a stale Unix socket left by a crashed server
// but never one that still has a listener.
func listenOn(network, addr string) (net.Listener, error) {
	if network == "unix" {
		if fi, err := os.Lstat(addr); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("indelible: %s is in use by another server; stop it or pick another --listen path", addr)
			}
			os.Remove(addr)
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("indelible: listen on %s:%s: %w; is another server using it? try another --listen", network, addr, err)
	}
	return ln, nil
}

// printConnectHelp tells the user how clients reach the export; what says
// what is served, and how (see openServeTarget).
func printConnectHelp(env *Env, ln net.Listener, name, what string) {
	var uri, nbdClient string
	switch a := ln.Addr().(type) {
	case *net.UnixAddr:
		uri = "nbd+unix:///" + url.PathEscape(name) + "?socket=" + a.Name
		nbdClient = fmt.Sprintf("nbd-client -N '%s' -unix %s /dev/nbd0", name, a.Name)
	default:
		host, port, _ := net.SplitHostPort(a.String())
		uri = "nbd://" + net.JoinHostPort(host, port)
		if name != "" {
			uri += "/" + url.PathEscape(name)
		}
		nbdClient = fmt.Sprintf("nbd-client -N '%s' %s %s /dev/nbd0", name, host, port)
	}
	export := "the default export (\"\")"
	if name != "" {
		export = fmt.Sprintf("export %q", name)
	}
	fmt.Fprintf(env.Stdout, `indelible: serving %s as %s at %s
connect with:
  nbdinfo '%s'
  nbdfuse DIR '%s'            (then: losetup --find --show DIR/nbd; mount /dev/loopN MOUNTPOINT)
  %s     (kernel NBD client, as root)
stop with Ctrl-C (SIGINT) or SIGTERM; a second one exits at once
`, what, export, uri, uri, uri, nbdClient)
}

// openServeTarget opens what `indelible serve` exports: a WORM device
// directory, or a plain image file or block device. what describes it for
// the banner and the NBD export description: "WORM device DIR (ext4, ...)"
// or "disk.img (8 MiB, read-write)".
func openServeTarget(arg string, readOnly, resume bool, logger *slog.Logger) (dev blockdev.Device, what string, err error) {
	if isDeviceDir(arg) {
		if readOnly {
			return nil, "", usageErrorf("--read-only is for plain images; a WORM device directory is already append-only for its protected files")
		}
		return openDeviceDir(arg, resume, logger)
	}
	if resume {
		return nil, "", usageErrorf("--resume is for WORM device directories: a plain image has no responses to clear")
	}
	if fi, err := os.Stat(arg); err == nil && fi.IsDir() {
		return nil, "", fmt.Errorf("indelible: %s is not a device directory (no %s); create one with `indelible init`, or serve an image file", arg, worm.ConfigName)
	}
	f, err := blockdev.OpenFile(arg, readOnly)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", fmt.Errorf("indelible: %s does not exist; create an image with `truncate -s 64M %s && mkfs.ext4 %s`, or run `indelible serve` with no argument for the default device", arg, arg, arg)
		}
		return nil, "", fmt.Errorf("indelible: open %s: %w", arg, err)
	}
	if f.Size() == 0 {
		f.Close()
		return nil, "", fmt.Errorf("indelible: %s is empty; give it a size first (truncate -s 64M %s)", arg, arg)
	}
	if f.Size()%nbd.DefaultMinBlock != 0 {
		f.Close()
		return nil, "", fmt.Errorf("indelible: %s is %d bytes, not a multiple of %d; resize it (truncate -s 64M %s)", arg, f.Size(), nbd.DefaultMinBlock, arg)
	}
	mode := "read-write"
	if readOnly {
		mode = "read-only"
	}
	return f, fmt.Sprintf("%s (%s, %s)", arg, formatSize(f.Size()), mode), nil
}

// ensureDefaultTarget returns the default device's image, creating it (a
// 64 MiB ext4 image) the first time.
func ensureDefaultTarget(env *Env) (string, error) {
	home := env.Getenv("INDELIBLE_HOME")
	if home == "" {
		data := env.Getenv("XDG_DATA_HOME")
		if data == "" {
			h := env.Getenv("HOME")
			if h == "" {
				return "", errors.New("indelible: cannot find a place for the default device: HOME is not set; set INDELIBLE_HOME or pass an IMAGE")
			}
			data = filepath.Join(h, ".local", "share")
		}
		home = filepath.Join(data, "indelible")
	}
	return ensureDefaultDevice(env, filepath.Join(home, "default"))
}
