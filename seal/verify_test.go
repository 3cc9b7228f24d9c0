package seal

import "testing"

// A problem reads "kind: place: message", or "kind: message" when it has
// no place in a file (it read "kind:: message").
func TestProblemString(t *testing.T) {
	for _, c := range []struct {
		p    Problem
		want string
	}{
		{Problem{Kind: ProblemKeystream, Entry: -1, Msg: "device keystream missing"}, "keystream: device keystream missing"},
		{Problem{Kind: ProblemAltered, File: "a.log", Entry: 3, Off: 10, Len: 5, Msg: "HMAC mismatch"}, "altered: a.log offset 10 length 5 (entry 3): HMAC mismatch"},
		{Problem{Kind: ProblemStructure, Entry: 7, Msg: "bad magic"}, "structure: (entry 7): bad magic"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.p, got, c.want)
		}
	}
}
