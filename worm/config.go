package worm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// ConfigName is the device directory's configuration file.
const ConfigName = "device.toml"

// Response is what the device does when a write raises an indicator.
type Response string

const (
	// ResponseReadOnly fails the offending request with EPERM, and every later
	// write too; reads keep working. The default. What the engine can judge
	// only at a FLUSH (a forged journal transaction no write completed) has
	// landed by then: it is undone in the image, as under discard, so that
	// a recovery does not apply it, and the FLUSH fails.
	ResponseReadOnly Response = "readonly"
	// ResponseDiscard drops the offending bytes (the protected structure keeps
	// its old bytes) and lets the rest of the request land; the host sees
	// success.
	ResponseDiscard Response = "discard"
	// ResponseHoneypot lets the write land, stops taking appends for the
	// touched files, and records everything for the auditor's diff.
	ResponseHoneypot Response = "honeypot"
)

// Duration is a time.Duration that reads and writes as "1s", "250ms" in TOML.
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Protected is one protected file of the device.
type Protected struct {
	Path  string `toml:"path"`  // inside the filesystem, relative
	Inode uint64 `toml:"inode"` // its inode number, fixed at init
	// Generation is the inode's i_generation at init, absent from a
	// device.toml written before it was recorded. The kernel gives every
	// inode it allocates a random one, so a protected file deleted and
	// made again, which usually gets the freed inode number back, shows
	// another generation (indelible diff says it was replaced).
	Generation *uint32 `toml:"generation,omitempty"`
}

// Config is device.toml.
type Config struct {
	Version     int         `toml:"version"`
	FS          string      `toml:"fs"`           // "ext4"
	Image       string      `toml:"image"`        // relative to the device directory
	Store       string      `toml:"store"`        // sealed-log store directory
	DeviceKey   string      `toml:"device_key"`   // the device's keystream (burnt as used)
	Journal     string      `toml:"journal"`      // mode chosen at init: none|ordered|writeback|journal (informational: the engine follows the host's writes)
	OnViolation Response    `toml:"on_violation"` // readonly|discard|honeypot
	Commit      CommitTimes `toml:"commit"`
	// VolumeFullPercent raises an indicator when free blocks fall under this
	// share of the volume (0 disables).
	VolumeFullPercent float64     `toml:"volume_full_percent"`
	Protected         []Protected `toml:"protected"`
}

// CommitTimes are the coherence windows of DESIGN.md "Coherence".
type CommitTimes struct {
	// Quiescence: without a journal commit (writeback, no journal), an append
	// is sealed once no write touched the file for this long.
	Quiescence Duration `toml:"quiescence"`
	// Delay is added after the quiescence window (a fixed safety delay).
	Delay Duration `toml:"delay"`
	// OrderedMargin: in data=ordered, the margin after the jbd2 commit that
	// carried the size before sealing.
	OrderedMargin Duration `toml:"ordered_margin"`
	// LostAfter: a range below a protected file's size that the host has
	// not written since the metadata covering it arrived (a block never
	// written since allocation, or a hole or unwritten extent with data
	// after it) and that stays so, unchanged, for this long is sealed as
	// the host now reads it (old block contents, or zeroes), and a
	// lost-write notice is recorded. Such a range is data the host lost
	// when it crashed between writing a file's size and its data: it never
	// comes, and the file is not sealed past it. 0 (the default) keeps
	// invariant I1 strictly (nothing the host did not append is ever
	// sealed) and leaves such a file's sealing stopped there, shown by
	// status and the device log. A host that keeps dirty data unwritten
	// for longer than a non-zero window (Linux writes it back within about
	// 35 s by default) would see its late write refused as a change of
	// sealed data.
	LostAfter Duration `toml:"lost_after"`
	// SealInterval is the shortest time between the starts of two seal
	// batches: coherent bytes that become ready meanwhile wait and are
	// sealed together. Every batch costs the store a round of file syncs
	// (each a disk flush, on the disk that also carries the image) and its
	// per-batch work, and larger batches have their MACs computed sixteen
	// side by side: a busy device spends less CPU and disk time per sealed
	// byte, at the price of each byte being sealed up to this much later.
	// 0 starts a batch as soon as the last one is done. The default, 50 ms,
	// holds a busy device to 20 batches a second (each about twenty disk
	// flushes with sixteen files appended) and keeps the seal lag inside
	// its targets: bench/e2e measured p99 42-43 ms in data=journal (target
	// 100 ms) and 152-153 ms in data=ordered (its 100 ms margin + 100 ms).
	// On a slow disk the old default, 25 ms, held data=journal at 0.64 of
	// nbdkit's throughput against 0.77 at 50 ms (medians of four rounds,
	// bench/e2e/RESULTS.md, eleventh session).
	SealInterval Duration `toml:"seal_interval"`
}

// maxSealInterval bounds commit.seal_interval: beyond it, the delay would
// dominate every mode's seal lag (data=journal's target is 100 ms).
const maxSealInterval = time.Second

// DefaultConfig returns the settings `indelible init` writes unless told otherwise.
func DefaultConfig() Config {
	return Config{
		Version:     1,
		FS:          "ext4",
		Image:       "image.ext4",
		Store:       "store",
		DeviceKey:   "device.key",
		Journal:     "ordered",
		OnViolation: ResponseReadOnly,
		Commit: CommitTimes{
			Quiescence:    Duration{time.Second},
			Delay:         Duration{0},
			OrderedMargin: Duration{100 * time.Millisecond},
			SealInterval:  Duration{50 * time.Millisecond},
		},
		VolumeFullPercent: 1,
	}
}

// LoadConfig reads dir/device.toml and validates it.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, ConfigName)
	c := DefaultConfig()
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s is not a device directory (no %s); create one with `indelible init`", dir, ConfigName)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%s: unknown settings %s", path, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// Validate checks the settings for consistency.
func (c *Config) Validate() error {
	if c.Version != 1 {
		return fmt.Errorf("version %d not supported (this indelible reads version 1)", c.Version)
	}
	if c.FS != "ext4" {
		return fmt.Errorf("fs %q not supported yet (ext4 only)", c.FS)
	}
	switch c.OnViolation {
	case ResponseReadOnly, ResponseDiscard, ResponseHoneypot:
	default:
		return fmt.Errorf("on_violation %q: want readonly, discard or honeypot", c.OnViolation)
	}
	switch c.Journal {
	case "none", "ordered", "writeback", "journal":
	default:
		return fmt.Errorf("journal %q: want none, ordered, writeback or journal", c.Journal)
	}
	if c.Commit.SealInterval.Duration > maxSealInterval {
		return fmt.Errorf("commit.seal_interval %v: at most %v (it delays every seal; 50ms is the default)", c.Commit.SealInterval.Duration, maxSealInterval)
	}
	if len(c.Protected) == 0 {
		return errors.New("no [[protected]] files")
	}
	seen := map[uint64]bool{}
	for _, p := range c.Protected {
		if p.Inode == 0 || p.Path == "" {
			return fmt.Errorf("protected file %q: path and inode are required", p.Path)
		}
		if seen[p.Inode] {
			return fmt.Errorf("protected file %q: inode %d listed twice", p.Path, p.Inode)
		}
		seen[p.Inode] = true
	}
	for _, p := range []string{c.Image, c.Store, c.DeviceKey} {
		if p == "" {
			return errors.New("image, store and device_key are required")
		}
	}
	return nil
}

// Save writes the config to dir/device.toml atomically.
func (c *Config) Save(dir string) error {
	var b strings.Builder
	b.WriteString("# indelible device configuration. Written by `indelible init`; see `indelible help init`.\n")
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return err
	}
	tmp := filepath.Join(dir, ConfigName+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, ConfigName))
}

// path resolves a config path relative to the device directory.
func (c *Config) path(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}
