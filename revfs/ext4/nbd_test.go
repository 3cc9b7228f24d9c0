package ext4

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/nbd/nbdtest"
	"github.com/indelible-worm/indelible/revfs"
)

// engineDevice feeds every request the NBD server receives to an engine,
// in the order the kernel really sends them, as the device core would:
// CheckWrite, write, Wrote; FLUSH then Flushed.
type engineDevice struct {
	blockdev.Device
	mu         sync.Mutex
	e          *Engine
	violations []revfs.Violation
}

func (d *engineDevice) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.violations = append(d.violations, d.e.CheckWrite(off, p)...)
	n, err := d.Device.WriteAt(p, off)
	if err == nil {
		d.e.Wrote(off, p)
	}
	return n, err
}

func (d *engineDevice) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.Device.Flush()
	d.e.Flushed()
	return err
}

func (d *engineDevice) Trim(off, length int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.violations = append(d.violations, d.e.CheckDiscard(off, length)...)
	err := d.Device.Trim(off, length)
	d.e.Discarded(off, length)
	return err
}

func (d *engineDevice) WriteZeroes(off, length int64, mayPunch bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.violations = append(d.violations, d.e.CheckDiscard(off, length)...)
	err := d.Device.WriteZeroes(off, length, mayPunch)
	d.e.Discarded(off, length)
	return err
}

// TestNBDKernelOrder serves an image through the in-process NBD server to
// the real kernel (nbdfuse, loop, ext4) with the engine behind it, so the
// engine sees the kernel's true write order over several connections.
func TestNBDKernelOrder(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ name, img, opts string }{
		{"ordered", "b4k-journal.img", "data=ordered"},
		{"journal", "b4k-journal-data.img", "data=journal"},
		{"writeback", "b4k-journal.img", "data=writeback"},
		{"nojournal", "b4k-nojournal.img", ""},
		{"ordered-1k", "b1k-journal.img", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := loadImage(t, tc.img)
			files := []string{"var/log/empty.log", "var/log/app.log"}
			// The rig resolves the IDs; the engine itself reads the file
			// the NBD server writes.
			ids := openRig(t, path, nil, files...).ids
			file, err := blockdev.OpenFile(path, false)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { file.Close() })
			var pf []revfs.ProtectedFile
			for _, p := range files {
				pf = append(pf, revfs.ProtectedFile{ID: ids[p], Path: p})
			}
			e, err := Open(file, file.Size(), pf, blockSet{}, Options{Committed: map[revfs.FileID]int64{ids["var/log/app.log"]: 5000}})
			if err != nil {
				t.Fatal(err)
			}
			dev := &engineDevice{Device: file, e: e}
			uri := nbdtest.StartDevice(t, dev)
			m := testenv.MountNBD(t, uri, "ext4", tc.opts)
			rng := rand.New(rand.NewPCG(7, uint64(len(tc.name))))
			verified := map[revfs.FileID]int64{ids["var/log/app.log"]: 5000}
			state := func(id revfs.FileID) revfs.FileState {
				for _, s := range e.Files() {
					if s.ID == id {
						return s
					}
				}
				t.Fatalf("no file %d", id)
				return revfs.FileState{}
			}
			real := map[string][]byte{}
			lag := 0
			check := func(when string) {
				dev.mu.Lock()
				defer dev.mu.Unlock()
				if len(dev.violations) > 0 {
					t.Fatalf("%s: violations %v", when, dev.violations)
				}
				for _, p := range files {
					st := state(ids[p])
					if st.Coherent > int64(len(real[p])) {
						t.Fatalf("%s: %s coherent %d beyond the real size %d", when, p, st.Coherent, len(real[p]))
					}
					from := verified[st.ID]
					if st.Coherent > from {
						got := make([]byte, st.Coherent-from)
						if err := e.ReadFile(st.ID, got, from); err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(got, real[p][from:st.Coherent]) {
							t.Fatalf("%s: %s coherent bytes [%d,%d) differ from the kernel's", when, p, from, st.Coherent)
						}
						verified[st.ID] = st.Coherent
						e.SetCommitted(st.ID, st.Coherent)
					}
				}
			}
			for round := 0; round < 25; round++ {
				for _, p := range files {
					n := []int{1, 100, 4095, 4097, 20000, 70000}[rng.IntN(6)]
					f, err := os.OpenFile(filepath.Join(m.Dir, p), os.O_WRONLY|os.O_APPEND, 0)
					if err != nil {
						t.Fatal(err)
					}
					b := bytes.Repeat([]byte{byte('a' + round%26)}, n)
					b[n-1] = '\n'
					f.Write(b)
					if rng.IntN(3) == 0 {
						f.Sync()
					}
					f.Close()
					if real[p], err = os.ReadFile(filepath.Join(m.Dir, p)); err != nil {
						t.Fatal(err)
					}
				}
				if round%3 == 0 {
					os.WriteFile(filepath.Join(m.Dir, fmt.Sprintf("other%d", round)), bytes.Repeat([]byte("o"), 9000), 0o644)
				}
				m.Sync()
				check(fmt.Sprintf("round %d", round))
				// Liveness: after sync every appended byte is coherent.
				dev.mu.Lock()
				for _, p := range files {
					if st := state(ids[p]); st.Coherent != int64(len(real[p])) {
						lag++
						t.Logf("round %d: %s coherent %d of %d after sync", round, p, st.Coherent, len(real[p]))
					}
				}
				dev.mu.Unlock()
			}
			if lag > 2 {
				t.Errorf("coherence lagged behind sync %d times", lag)
			}
			m.Unmount()
			check("after unmount")
			for _, p := range files {
				st := state(ids[p])
				if st.Coherent != int64(len(real[p])) {
					t.Errorf("%s after unmount: %+v, real %d", p, st, len(real[p]))
				}
				t.Logf("%s: %d bytes coherent, journalled %v, data-journalled %v", p, st.Coherent, st.Journalled, st.DataJournalled)
			}
		})
	}
}
