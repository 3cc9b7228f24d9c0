package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/revfs"
	"github.com/indelible-worm/indelible/worm"
)

// Each kind of stalled range says what will become of it.
func TestPrintStall(t *testing.T) {
	for _, c := range []struct {
		kind   revfs.StallKind
		window time.Duration
		want   string
	}{
		{revfs.StallNotWritten, 10 * time.Minute, "sealed as found in 9m48s (commit.lost_after)"},
		{revfs.StallHole, 0, "never sealed as found (commit.lost_after = 0)"},
		{revfs.StallTail, 10 * time.Minute, "sealed once the host writes it or appends after it"},
		{revfs.StallTail, 0, "sealed once the host writes it or appends after it"},
	} {
		var out strings.Builder
		s := worm.StallStatus{Kind: c.kind.String(), What: c.kind.Describe(), Off: 4096, Len: 100, ForMillis: 12_000}
		printStall(&Env{Stdout: &out}, "var/log/app.log", s, c.window)
		got := out.String()
		if !strings.HasPrefix(got, "  /var/log/app.log: bytes [4096,+100) "+c.kind.Describe()+", for 12s; ") || !strings.HasSuffix(got, c.want+"\n") {
			t.Errorf("%s, window %s: printed %q, want it to end %q", c.kind, c.window, got, c.want)
		}
	}
}
