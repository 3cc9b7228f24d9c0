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

// naiveCompare is Compare's definition, one byte at a time.
func naiveCompare(real, image []byte) []Range {
	var out []Range
	n := min(len(real), len(image))
	for i := 0; i < n; i++ {
		if real[i] == image[i] {
			continue
		}
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == int64(i) {
			out[k-1].Len++
		} else {
			out = append(out, Range{Kind: Altered, Off: int64(i), Len: 1})
		}
	}
	if len(real) > n {
		out = append(out, Range{Kind: Missing, Off: int64(n), Len: int64(len(real) - n)})
	}
	if len(image) > n {
		out = append(out, Range{Kind: Unsealed, Off: int64(n), Len: int64(len(image) - n)})
	}
	return out
}

// Ranges that run into, out of, across and exactly up to the chunk
// boundaries come out as one range each, as if compared whole.
func TestCompareAcrossChunks(t *testing.T) {
	const c = compareChunk
	real := make([]byte, 3*c+100)
	for i := range real {
		real[i] = byte(i % 251)
	}
	image := append([]byte(nil), real...)
	alter := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			image[i] ^= 0xFF
		}
	}
	alter(c-5, c+5)       // across the first boundary
	alter(2*c-10, 2*c)    // up to the second
	alter(2*c, 2*c+1)     // and on from it: one range with the previous
	alter(3*c-1, 3*c+100) // across the last boundary to the end
	alter(10, 11)
	for _, tc := range []struct {
		name        string
		real, image []byte
	}{
		{"same length", real, image},
		{"image longer", real[:3*c+50], image},
		{"real longer", real, image[:2*c+3]},
	} {
		want := naiveCompare(tc.real, tc.image)
		if got := Compare(tc.real, tc.image); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, want)
		}
	}
}
