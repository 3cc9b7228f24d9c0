package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The directories above a protected file are watched (a name on the path
// that comes to name another inode, or with a journal names nothing, is an
// indicator), but honest work in them is not: a hard link, attributes,
// renames of other entries, and thousands of entries in the root and in
// the file's own directory, which turn them into htrees. Those conversions
// raised false indicators (a directory block's checksum refused, a name on
// the path seen gone, the file's entry seen removed): the transaction that
// indexes a directory logs its inode and its new dx_root block, and a
// checkpoint of the inode's previous version in the same flush epoch made
// the engine drop the logged inode and read the dx_root block against the
// old linear one (Engine.staleHome).
func TestAncestorsHonestWork(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			root := k.m.Dir
			appendFile(t, p, line(0), true)
			k.waitSealed(sealTimeout)
			step := func(name string, fn func() error) {
				t.Helper()
				if err := fn(); err != nil {
					t.Fatalf("%s: %v%s", name, err, k.eventSummary())
				}
				k.m.Sync()
				time.Sleep(300 * time.Millisecond)
				if st := k.dev.Status(); st.Indicators != 0 || st.ReadOnly {
					t.Fatalf("after %s: false positive:%s", name, k.eventSummary())
				}
			}
			step("hard link", func() error { return os.Link(p, p+".link") })
			step("unlink the link", func() error { return os.Remove(p + ".link") })
			step("chmod, chown, touch", func() error {
				os.Chmod(filepath.Join(root, "var"), 0o700)
				os.Chown(filepath.Join(root, "var"), 1000, 1000)
				then := time.Now().Add(-time.Hour)
				return os.Chtimes(filepath.Dir(p), then, then)
			})
			step("renames of other entries", func() error {
				os.WriteFile(filepath.Join(filepath.Dir(p), "other"), []byte("x"), 0o644)
				os.Mkdir(filepath.Join(root, "other"), 0o755)
				if err := os.Rename(filepath.Join(filepath.Dir(p), "other"), filepath.Join(filepath.Dir(p), "other2")); err != nil {
					return err
				}
				return os.Rename(filepath.Join(root, "other"), filepath.Join(root, "other2"))
			})
			step("many entries in the root", func() error {
				for i := 0; i < 3000; i++ {
					if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("f%05d-with-a-long-name-to-fill-blocks", i)), nil, 0o644); err != nil {
						return err
					}
				}
				return nil
			})
			step("many entries beside the protected file", func() error {
				for i := 0; i < 3000; i++ {
					if err := os.WriteFile(filepath.Join(filepath.Dir(p), fmt.Sprintf("g%05d-with-a-long-name-to-fill-blocks", i)), nil, 0o644); err != nil {
						return err
					}
				}
				return nil
			})
			step("removing them again", func() error {
				for i := 0; i < 3000; i += 2 {
					if err := os.Remove(filepath.Join(filepath.Dir(p), fmt.Sprintf("g%05d-with-a-long-name-to-fill-blocks", i))); err != nil {
						return err
					}
					if err := os.Remove(filepath.Join(root, fmt.Sprintf("f%05d-with-a-long-name-to-fill-blocks", i))); err != nil {
						return err
					}
				}
				return nil
			})
			appendFile(t, p, line(1), true)
			k.waitSealed(sealTimeout)
			k.noIndicators()
		})
	}
}
