package bitnames

import "testing"

func TestFormat(t *testing.T) {
	table := []Name{{0x1, "a"}, {0x4, "c"}}
	for v, want := range map[uint32]string{0: "0", 1: "a", 5: "a|c", 0x13: "a|0x12"} {
		if got := Format(v, table); got != want {
			t.Errorf("Format(%#x) = %q, want %q", v, got, want)
		}
	}
}
