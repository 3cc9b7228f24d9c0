package worm

import (
	"encoding/binary"
	"fmt"
	"path/filepath"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/revfs/ext4"
	"github.com/indelible-worm/indelible/seal"
)

// Opened is a device directory opened for service: the WORM device and the
// resources it runs on. Close releases them all.
type Opened struct {
	*Device
	Config  *Config
	Dir     string
	img     *blockdev.File
	store   *seal.Store
	written *WrittenSet
}

// OpenDir opens a device directory made by `indelible init`: it repairs the
// seal store after a crash, rebuilds the engine's view from the image (and its
// journal) and resumes sealing from the store's watermarks.
func OpenDir(dir string, opts Options) (*Opened, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	img, err := blockdev.OpenFile(cfg.path(dir, cfg.Image), false)
	if err != nil {
		return nil, fmt.Errorf("worm: image: %w", err)
	}
	o := &Opened{Config: cfg, Dir: dir, img: img}
	ok := false
	defer func() {
		if !ok {
			o.closeResources()
		}
	}()
	o.store, err = seal.Open(cfg.path(dir, cfg.Store), cfg.path(dir, cfg.DeviceKey), seal.Options{Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("worm: seal store: %w", err)
	}
	nblocks, err := fsBlocks(img)
	if err != nil {
		return nil, err
	}
	o.written, err = OpenWrittenSet(filepath.Join(dir, "state", "written.bits"), nblocks)
	if err != nil {
		return nil, err
	}
	files := make([]revfs.ProtectedFile, len(cfg.Protected))
	committed := map[revfs.FileID]int64{}
	for i, p := range cfg.Protected {
		files[i] = revfs.ProtectedFile{ID: revfs.FileID(p.Inode), Path: p.Path}
		committed[revfs.FileID(p.Inode)] = o.store.Watermark(p.Inode)
	}
	// A journal recovery at Open is compared with the real logs where it
	// would show committed bytes the home blocks do not.
	sealed := func(id revfs.FileID, p []byte, off int64) error { return o.store.ReadSealed(uint64(id), p, off) }
	eng, err := ext4.Open(img, img.Size(), files, o.written, ext4.Options{Logger: opts.Logger, Now: opts.Now, Committed: committed, Sealed: sealed})
	if err != nil {
		return nil, fmt.Errorf("worm: %s: %w", cfg.Image, err)
	}
	o.Device = New(img, eng, storeSealer{o.store}, o.written, *cfg, opts)
	readEvents := func(p []byte, off int64) error { return o.store.ReadSealed(EventLogID, p, off) }
	if err := o.Device.Restore(readEvents, o.store.Watermark(EventLogID), opts.Resume, filepath.Join(dir, "state", restorePointName)); err != nil {
		o.Device.Close()
		return nil, err
	}
	ok = true
	return o, nil
}

// fsBlocks reads the ext4 superblock's block count, so the written-block map
// is sized to the filesystem (1 KiB blocks are the worst case when it does not
// parse: the engine then refuses the image anyway).
func fsBlocks(img *blockdev.File) (uint64, error) {
	sb := make([]byte, 1024)
	if _, err := img.ReadAt(sb, 1024); err != nil {
		return 0, fmt.Errorf("worm: reading the superblock: %w", err)
	}
	logBS := binary.LittleEndian.Uint32(sb[0x18:])
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xEF53 || logBS > 6 {
		return uint64(img.Size() / 1024), nil
	}
	return uint64(img.Size()) >> (10 + logBS), nil
}

// Close stops the device, seals what is ready, and closes everything.
func (o *Opened) Close() error {
	var err error
	if o.Device != nil {
		err = o.Device.Close()
	}
	if cerr := o.closeResources(); err == nil {
		err = cerr
	}
	return err
}

func (o *Opened) closeResources() error {
	var first error
	keep := func(err error) {
		if first == nil {
			first = err
		}
	}
	if o.written != nil {
		keep(o.written.Close())
	}
	if o.store != nil {
		keep(o.store.Close())
	}
	if o.img != nil {
		keep(o.img.Close())
	}
	return first
}

// storeSealer adapts *seal.Store to Sealer and BatchSealer.
type storeSealer struct{ s *seal.Store }

var (
	_ Sealer      = storeSealer{}
	_ BatchSealer = storeSealer{}
)

func (a storeSealer) Append(id uint64, path string, off int64, data []byte) error {
	return a.s.Append(seal.FileRef{ID: id, Path: path}, off, data)
}
func (a storeSealer) Watermark(id uint64) int64 { return a.s.Watermark(id) }

// AppendBatch seals ops with one round of durability. seal.Store says which
// op failed only in its error, but ops are in order and name distinct files,
// so the ops done are the leading ones whose file reached its new watermark.
func (a storeSealer) AppendBatch(ops []SealOp) (int, error) {
	batch := make([]seal.AppendOp, len(ops))
	for i, op := range ops {
		batch[i] = seal.AppendOp{File: seal.FileRef{ID: op.ID, Path: op.Path}, Off: op.Off, Data: op.Data}
	}
	err := a.s.AppendBatch(batch)
	if err == nil {
		return len(ops), nil
	}
	done := 0
	for _, op := range ops {
		if a.s.Watermark(op.ID) < op.Off+int64(len(op.Data)) {
			break
		}
		done++
	}
	return done, err
}
func (a storeSealer) KeyUsage() (used, total int64) { return a.s.KeyUsage() }
