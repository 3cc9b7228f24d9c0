package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/indelible-worm/indelible/seal"
	"github.com/indelible-worm/indelible/worm"
)

// devicePath resolves a path device.toml names (image, store, device_key):
// an absolute path as it is, a relative one inside the device directory dir.
// Every command that reads a device directory resolves them here, as
// worm.OpenDir does when the device is served.
func devicePath(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// deviceStore returns the sealed-log store device.toml names, or an error
// (with a hint) when it is missing or holds no .SEALFS.LOG: a device whose
// store is gone has lost its real logs, which is never "nothing recorded".
func deviceStore(dir string, cfg *worm.Config) (string, error) {
	store := devicePath(dir, cfg.Store)
	fi, err := os.Stat(store)
	switch {
	case err != nil:
		return "", fmt.Errorf("indelible: the store of device %s is missing: %w; device.toml says store = %q: restore the store from a copy, or correct that line", dir, err, cfg.Store)
	case !fi.IsDir():
		return "", fmt.Errorf("indelible: the store of device %s, %s, is not a directory; device.toml says store = %q", dir, store, cfg.Store)
	}
	if _, err := os.Stat(filepath.Join(store, seal.LogName)); err != nil {
		return "", fmt.Errorf("indelible: %s is not a sealed-log store: %w; its %s is gone (restore the store from a copy; `indelible verify` tells what survives)", store, err, seal.LogName)
	}
	return store, nil
}
