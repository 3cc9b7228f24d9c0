//go:build unix

package hostflags

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// TestConfigOwnerRefused: a configuration owned by someone else is refused
// with the fix in the message.
func TestConfigOwnerRefused(t *testing.T) {
	testenv.RequireRoot(t)
	p := filepath.Join(t.TempDir(), "syslock.conf")
	if err := os.WriteFile(p, []byte("group: etc\n/etc/fstab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 65534, -1); err != nil {
		t.Fatal(err)
	}
	_, _, err := ReadConfigFile(p, ParseOptions{Platform: Native()})
	if err == nil || !strings.Contains(err.Error(), "must be owned by root or by uid 0, not uid 65534; chown root "+p) {
		t.Errorf("err = %v", err)
	}
}
