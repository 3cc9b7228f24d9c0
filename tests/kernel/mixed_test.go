package kernel

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// TestNoFalsePositives: a long mixed workload on unprotected files —
// creating, rewriting, deleting, a large copy, unmount/mount cycles, chattr
// on the protected files — never disturbs the real logs and never raises an
// indicator, while the protected files keep growing.
func TestNoFalsePositives(t *testing.T) {
	testenv.RequireLong(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond, size: 256 << 20,
				logs: []string{"var/log/app.log", "var/log/other.log"}})
			rng := rand.New(rand.NewSource(42))
			work := filepath.Join(k.m.Dir, "work")
			os.MkdirAll(work, 0o755)
			n := 0
			for round := 0; round < 3; round++ {
				for i := 0; i < 150; i++ {
					name := filepath.Join(work, fmt.Sprintf("f%03d", rng.Intn(60)))
					switch rng.Intn(6) {
					case 0, 1:
						buf := make([]byte, rng.Intn(200000))
						rng.Read(buf)
						os.WriteFile(name, buf, 0o644)
					case 2:
						os.Remove(name)
					case 3:
						if f, err := os.OpenFile(name, os.O_RDWR, 0); err == nil {
							f.WriteAt([]byte("rewritten"), int64(rng.Intn(4096)))
							f.Close()
						}
					case 4:
						os.Rename(name, name+".old")
					default:
						os.MkdirAll(filepath.Join(work, fmt.Sprintf("d%d/e%d", rng.Intn(5), rng.Intn(5))), 0o755)
					}
					appendFile(t, k.path(k.logs[n%2]), line(n), rng.Intn(10) == 0)
					n++
				}
				// A large copy of an unprotected file.
				big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB
				os.WriteFile(filepath.Join(work, "big"), big, 0o644)
				testenv.Run(t, "cp", filepath.Join(work, "big"), filepath.Join(work, "big2"))
				os.Remove(filepath.Join(work, "big"))
				// The host flag manager sets and clears +a on purpose.
				testenv.Run(t, "chattr", "+a", k.path(k.logs[0]))
				appendFile(t, k.path(k.logs[0]), line(n), false)
				n++
				testenv.Run(t, "chattr", "-a", k.path(k.logs[0]))
				k.waitSealed(sealTimeout)
				k.m.Unmount()
				// The unmounted image is consistent as the kernel left it.
				if out, err := exec.Command("e2fsck", "-fn", filepath.Join(k.dir, "image.ext4")).CombinedOutput(); err != nil {
					t.Fatalf("e2fsck -fn on the image: %v\n%s", err, out)
				}
				k.m.Mount("ext4", "")
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
		})
	}
}
