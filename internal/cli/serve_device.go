package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/indelible-worm/indelible/provision"
	"github.com/indelible-worm/indelible/seal"
	"github.com/indelible-worm/indelible/worm"
)

// isDeviceDir reports whether path is a device directory made by `indelible init`.
func isDeviceDir(path string) bool {
	_, err := os.Stat(filepath.Join(path, worm.ConfigName))
	return err == nil
}

// servedDevice is an opened WORM device that also publishes its status for
// `indelible status` while it is served.
type servedDevice struct {
	*worm.Opened
	stop      chan struct{}
	published chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// openDeviceDir opens a device directory for serving; resume clears the
// responses its sealed event log holds (worm.Device.Restore).
func openDeviceDir(dir string, resume bool, logger *slog.Logger) (*servedDevice, string, error) {
	dev, err := worm.OpenDir(dir, worm.Options{Logger: logger, Resume: resume})
	if err != nil {
		return nil, "", fmt.Errorf("indelible: cannot open device %s: %w", dir, err)
	}
	s := &servedDevice{Opened: dev, stop: make(chan struct{}), published: make(chan struct{})}
	go func() {
		defer close(s.published)
		dev.PublishStatus(dir, time.Second, s.stop)
	}()
	n := len(dev.Config.Protected)
	what := fmt.Sprintf("WORM device %s (%s, journal %s, %d protected file%s, on_violation %s)",
		dir, dev.Config.FS, dev.Config.Journal, n, plural(n), dev.Config.OnViolation)
	return s, what, nil
}

// Close stops publishing, then closes the device (sealing what is ready).
// It is safe to call more than once.
func (s *servedDevice) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.published
		// Stop the scheduler (its last pass seals what is ready), publish the
		// final watermarks, then release the image, store and keys.
		s.Opened.Device.Close()
		worm.WriteStatusFile(s.Dir, s.Status())
		s.closeErr = s.Opened.Close()
	})
	return s.closeErr
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// The built-in default device: small, data=ordered, one protected file.
const (
	defaultImageSize = 64 << 20
	defaultLogPath   = "log/app.log"
	defaultKeyName   = "auditor.key"
)

// ensureDefaultDevice returns the default WORM device directory, creating it
// the first time: a 64 MiB ext4 image with one protected file, its seal
// store, and the auditor key beside it (with a loud warning: on a real device
// that key must leave the machine).
func ensureDefaultDevice(env *Env, dir string) (string, error) {
	key := filepath.Join(dir, defaultKeyName)
	if isDeviceDir(dir) {
		// Again on every serve, as long as the key is there.
		if _, err := os.Stat(key); err == nil {
			warnAuditorKey(env, key, "is still at")
		}
		return dir, nil
	}
	if _, err := os.Stat(dir); err == nil {
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			return "", fmt.Errorf("indelible: %s exists but is not a device directory; move it away, or serve a device made with `indelible init`", dir)
		}
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return "", fmt.Errorf("indelible: create %s: %w", filepath.Dir(dir), err)
	}
	// Build next to the final place and rename, so an interrupted creation
	// never leaves a half-made device that later runs would serve.
	tmp := dir + ".creating"
	os.RemoveAll(tmp)
	_, err := provision.Create(provision.Options{
		Dir: tmp, Size: defaultImageSize, Journal: "ordered", Logs: []string{defaultLogPath},
		AuditorKey: filepath.Join(tmp, defaultKeyName), KeyBytes: defaultKeyBytes(defaultImageSize),
		Config: worm.DefaultConfig(),
		CreateStore: func(store, devKey, audKey string, kb int64) error {
			return seal.Create(store, devKey, audKey, kb, seal.CreateOptions{})
		},
	})
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("indelible: creating the default device: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("indelible: %w", err)
	}
	fmt.Fprintf(env.Stderr, "indelible: created the default device %s (64 MiB ext4, data=ordered, protected file /%s)\n", dir, defaultLogPath)
	warnAuditorKey(env, key, "was written to")
	return dir, nil
}

// warnAuditorKey warns that the default device's auditor key lies beside
// it; verb says whether it was just written or is still there.
func warnAuditorKey(env *Env, key, verb string) {
	fmt.Fprintf(env.Stderr, "indelible: WARNING: the auditor key %s %s, on this machine.\n"+
		"  This is a demo default. On a real device, move that key to the auditor now and delete it here:\n"+
		"  whoever holds it can forge the sealed logs. Create real devices with `indelible init`.\n", verb, key)
}

// auditorKeyOnDevice returns DEVICE_DIR/auditor.key when it exists (the
// default device keeps its auditor key there), else "".
func auditorKeyOnDevice(dir string) string {
	key := filepath.Join(dir, defaultKeyName)
	if fi, err := os.Stat(key); err == nil && fi.Mode().IsRegular() {
		return key
	}
	return ""
}
