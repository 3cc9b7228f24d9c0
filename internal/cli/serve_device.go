package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

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

// openDeviceDir opens a device directory for serving.
func openDeviceDir(env *Env, dir string) (*servedDevice, string, error) {
	logger := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dev, err := worm.OpenDir(dir, worm.Options{Logger: logger})
	if err != nil {
		return nil, "", fmt.Errorf("indelible: cannot open device %s: %w", dir, err)
	}
	s := &servedDevice{Opened: dev, stop: make(chan struct{}), published: make(chan struct{})}
	go func() {
		defer close(s.published)
		dev.PublishStatus(dir, time.Second, s.stop)
	}()
	n := len(dev.Config.Protected)
	what := fmt.Sprintf("WORM device %s (ext4, journal %s, %d protected file%s, on_violation %s)",
		dir, dev.Config.Journal, n, plural(n), dev.Config.OnViolation)
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
