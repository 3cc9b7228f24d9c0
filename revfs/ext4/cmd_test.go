package ext4

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
)

func runCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	p := testenv.RequireCommand(t, name)
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
