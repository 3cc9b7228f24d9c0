package audit

import (
	"reflect"
	"testing"
)

func TestCompare(t *testing.T) {
	cases := []struct {
		name        string
		real, image string
		want        []Range
	}{
		{"same", "abcdef", "abcdef", nil},
		{"empty", "", "", nil},
		{"pending", "abc", "abcdef", []Range{{Unsealed, 3, 3}}},
		{"truncated", "abcdef", "ab", []Range{{Missing, 2, 4}}},
		{"wiped", "abcdef", "", []Range{{Missing, 0, 6}}},
		{"one byte", "abcdef", "abXdef", []Range{{Altered, 2, 1}}},
		{"two ranges and more", "abcdefgh", "XbcYYfgh-", []Range{{Altered, 0, 1}, {Altered, 3, 2}, {Unsealed, 8, 1}}},
	}
	for _, c := range cases {
		got := Compare([]byte(c.real), []byte(c.image))
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func FuzzCompare(f *testing.F) {
	f.Add([]byte("abc"), []byte("abd"))
	f.Fuzz(func(t *testing.T, real, image []byte) {
		var covered int64
		last := int64(-1)
		for _, r := range Compare(real, image) {
			if r.Off < last || r.Len <= 0 {
				t.Fatalf("ranges out of order or empty: %v", r)
			}
			last = r.Off + r.Len
			covered += r.Len
		}
		if len(real) == len(image) && string(real) == string(image) && covered != 0 {
			t.Fatal("equal inputs reported divergent")
		}
	})
}
