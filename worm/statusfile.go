package worm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// StatusFile is where a serving device publishes its Status for
// `indelible status`, relative to the device directory.
const StatusFile = "state/status.json"

// WriteStatusFile publishes st atomically.
func WriteStatusFile(dir string, st Status) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, StatusFile), b)
}

// writeAtomic replaces the file at p with b, so that a reader sees the old
// file or the new one, never part of either.
func writeAtomic(p string, b []byte) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// ReadStatusFile reads the last published status and its age.
func ReadStatusFile(dir string, now time.Time) (*Status, time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(dir, StatusFile))
	if err != nil {
		return nil, 0, err
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, 0, err
	}
	return &st, now.Sub(st.Time), nil
}

// PublishStatus writes the status file every interval until stop is closed,
// and once more at the end.
func (d *Device) PublishStatus(dir string, interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		st := d.Status()
		st.Serving = true
		if err := WriteStatusFile(dir, st); err != nil {
			d.log.Warn("indelible: cannot publish status", "err", err)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
