package cli

import "testing"

func TestParseSize(t *testing.T) {
	good := map[string]int64{"512": 512, "64K": 64 << 10, "128M": 128 << 20, "1G": 1 << 30, "2GiB": 2 << 30, "1t": 1 << 40, "10MB": 10 << 20}
	for in, want := range good {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1M", "1.5G", "12Q", "99999999999T"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
	for n, want := range map[int64]string{3 << 20: "3 MiB", 1536 << 20: "1.5 GiB", 100: "100 B", 1 << 40: "1 TiB"} {
		if s := formatSize(n); s != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, s, want)
		}
	}
}
