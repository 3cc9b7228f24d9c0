package seal

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CreateOptions tunes a new store.
type CreateOptions struct {
	// NRatchet is how many entries one keystream key seals through the
	// HMAC ratchet; 0 means DefaultNRatchet (31, as SealFS). 1 disables the
	// ratchet (every entry burns a key).
	NRatchet int
	// Logger receives warnings (auditor key placement); nil discards them.
	Logger *slog.Logger
}

// MaxKeyBytes bounds a keystream (1 TiB of keys seals 2^35 blocks; more is a
// typo, not a plan).
const MaxKeyBytes = 1 << 40

// KeyBytesFor returns the keystream size needed to seal appends entries
// with nratchet entries per key, plus 1 % slack for fillers and the anchors
// of map and repair records: ceil(appends/nratchet) keys of 32 bytes. The
// anchors of time records (one a minute with appends) are the caller's to
// count among appends.
func KeyBytesFor(appends int64, nratchet int) int64 {
	if nratchet <= 0 {
		nratchet = DefaultNRatchet
	}
	blocks := (appends + appends/100 + int64(nratchet) - 1) / int64(nratchet)
	return (blocks + 1) * KeySize
}

// Create makes a new store directory (with an empty .SEALFS.LOG) and a
// keystream pair of keyBytes of key material (rounded up to 32 bytes): the
// device copy at devKeyPath, burnt as it is used, and the auditor copy at
// auditorKeyPath, which must leave the device. Both keystreams hold the same
// random keys and share a random magic with the log. Nothing is overwritten:
// the store directory must be absent or empty and the key files absent.
func Create(storeDir, devKeyPath, auditorKeyPath string, keyBytes int64, opts CreateOptions) (err error) {
	nr := opts.NRatchet
	if nr == 0 {
		nr = DefaultNRatchet
	}
	if nr < 1 || nr > MaxNRatchet {
		return fmt.Errorf("seal: nratchet %d outside [1, %d]", nr, MaxNRatchet)
	}
	if keyBytes < KeySize || keyBytes > MaxKeyBytes {
		return fmt.Errorf("seal: keystream size %d outside [%d, %d]", keyBytes, KeySize, int64(MaxKeyBytes))
	}
	keyBytes = (keyBytes + KeySize - 1) / KeySize * KeySize
	if sameFile(devKeyPath, auditorKeyPath) {
		return errors.New("seal: the device and auditor keystreams must be different files")
	}
	if w := KeyPlacementWarning(storeDir, devKeyPath, auditorKeyPath); w != "" && opts.Logger != nil {
		opts.Logger.Warn(w)
	}
	if err := os.MkdirAll(storeDir, 0o750); err != nil {
		return fmt.Errorf("seal: create store: %w", err)
	}
	if ents, err := os.ReadDir(storeDir); err != nil {
		return fmt.Errorf("seal: create store: %w", err)
	} else if len(ents) != 0 {
		return fmt.Errorf("seal: create store: %s is not empty; choose a new directory", storeDir)
	}
	var mb [8]byte
	for binary.LittleEndian.Uint64(mb[:]) == 0 {
		if _, err := rand.Read(mb[:]); err != nil {
			return err
		}
	}
	magic := binary.LittleEndian.Uint64(mb[:])

	if err := os.MkdirAll(filepath.Join(storeDir, SealMetaDir), 0o750); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(storeDir, LogName), mb[:], 0o640); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(storeDir, ParamsName), []byte(strconv.Itoa(nr)+"\n"), 0o640); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(storeDir, RecordsName), nil, 0o640); err != nil {
		return err
	}
	for _, p := range []string{devKeyPath, auditorKeyPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("seal: create keystream directory: %w", err)
		}
	}
	if err := writeKeyPair(devKeyPath, auditorKeyPath, magic, keyBytes); err != nil {
		return err
	}
	st := RatchetState{KeyMagic: magic, NRatchet: nr, BurnFrom: KeyHeaderSize}
	if err := writeNew(devKeyPath+StateSuffix, st.marshal(), 0o600); err != nil {
		return err
	}
	for _, d := range []string{storeDir, filepath.Join(storeDir, MetaDir), filepath.Join(storeDir, SealMetaDir), filepath.Dir(devKeyPath), filepath.Dir(auditorKeyPath)} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// KeyPlacementWarning returns a loud message when the auditor keystream is
// about to live on the device (inside the store or next to the device
// keystream), where an attacker who takes the device would find it.
func KeyPlacementWarning(storeDir, devKeyPath, auditorKeyPath string) string {
	a, _ := filepath.Abs(auditorKeyPath)
	for _, d := range []string{storeDir, filepath.Dir(devKeyPath)} {
		d, _ = filepath.Abs(d)
		if a == d || strings.HasPrefix(a, d+string(filepath.Separator)) {
			return fmt.Sprintf("WARNING: the auditor keystream %s is inside %s, on the device; "+
				"anyone who takes the device can then forge every sealed entry. "+
				"Move it to the auditor's machine or offline media and delete it here.", auditorKeyPath, d)
		}
	}
	return ""
}

func sameFile(a, b string) bool {
	aa, _ := filepath.Abs(a)
	bb, _ := filepath.Abs(b)
	return aa == bb
}

// writeKeyPair writes both keystreams in one pass over fresh randomness.
func writeKeyPair(devPath, audPath string, magic uint64, keyBytes int64) (err error) {
	hdr, _ := KeyHeader{Magic: magic, Burnt: KeyHeaderSize}.MarshalBinary()
	var files []*os.File
	defer func() {
		for _, f := range files {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			for _, f := range files {
				os.Remove(f.Name())
			}
		}
	}()
	for _, p := range []string{devPath, audPath} {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("seal: create keystream: %w", err)
		}
		files = append(files, f)
	}
	w := io.MultiWriter(files[0], files[1])
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	if _, err := io.CopyN(w, rand.Reader, keyBytes); err != nil {
		return fmt.Errorf("seal: write keystream: %w", err)
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return nil
}

func writeNew(p string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(d string) error {
	f, err := os.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("seal: sync %s: %w", d, err)
	}
	return nil
}
