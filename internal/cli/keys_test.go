package cli

import (
	"regexp"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/seal"
)

// Every size keys --help gives as an example is one --size accepts (it
// said "3.6G", which parseSize refuses), and the sizing examples hold:
// enough keys for the appends they name, within 1 %.
func TestKeysHelpSizes(t *testing.T) {
	long := commands["keys"].Long
	for _, m := range regexp.MustCompile(`\b\d+(\.\d+)?[KMGT]\b`).FindAllString(long, -1) {
		if _, err := parseSize(m); err != nil {
			t.Errorf("keys --help gives the size %q: %v", m, err)
		}
	}
	for _, c := range []struct {
		appends int64
		size    string
	}{
		{3_650_000_000, "3630M"}, // 10 million lines a day for a year
		{(1 << 40) / (4 << 10), "267M"},
	} {
		if !strings.Contains(long, "--size "+c.size) {
			t.Errorf("keys --help does not give --size %s", c.size)
			continue
		}
		got, _ := parseSize(c.size)
		need := seal.KeyBytesFor(c.appends, seal.DefaultNRatchet)
		if got < need || float64(got) > 1.01*float64(need) {
			t.Errorf("--size %s for %d appends: %d bytes, need %d", c.size, c.appends, got, need)
		}
	}
}
