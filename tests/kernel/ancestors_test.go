package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The directories above a protected file are watched (a name on the path
// that comes to name another inode is an indicator), but honest work in
// them is not: a hard link, attributes, renames of other entries, and
// thousands of entries in the root, which turn it into an htree. A review's
// kernel test found the root's htree conversion raising false indicators:
// a checksum check of new directory blocks, then an entry on the path seen
// gone (both dropped; see checkNames). The same conversion of the file's
// own directory raised "entry removed": the transaction that indexes the
// directory logs its inode, and a checkpoint of an older inode version in
// the same flush epoch made the engine drop that copy and read the new
// dx_root block against the old, linear inode.
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
