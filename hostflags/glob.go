package hostflags

import (
	"path"
	"strings"
	"unicode/utf8"
)

// Globs match one element of a path with path.Match, plus the shell's rule
// for hidden names: a name starting with "." is matched only by a pattern
// starting with ".".

// matchesDot reports whether the hidden-name rule lets pattern match name.
func matchesDot(pattern, name string) bool {
	return !strings.HasPrefix(name, ".") || strings.HasPrefix(pattern, ".")
}

// globTok is one element of a path.Match pattern.
type globTok struct {
	kind   byte // 'c' one rune, '?' any rune, '*' any runes, '[' a class
	r      rune
	neg    bool
	ranges [][2]rune
}

// has reports whether t consumes r (for '*', one rune of the sequence).
func (t *globTok) has(r rune) bool {
	switch t.kind {
	case 'c':
		return r == t.r
	case '[':
		in := false
		for _, rg := range t.ranges {
			if rg[0] <= r && r <= rg[1] {
				in = true
			}
		}
		return in != t.neg
	}
	return true
}

// globTokens splits a pattern the way path.Match reads it (escapes, classes
// with ^ and ranges). ok is false for a malformed pattern, which path.Match
// would refuse too, or one that is not valid UTF-8 (path.Match compares
// literal bytes but classes and ? by rune; the overlap check works on runes).
func globTokens(pat string) (toks []globTok, ok bool) {
	if !utf8.ValidString(pat) {
		return nil, false
	}
	esc := func(i int) (rune, int, bool) {
		if i >= len(pat) || pat[i] == '-' || pat[i] == ']' {
			return 0, i, false
		}
		if pat[i] == '\\' {
			if i++; i >= len(pat) {
				return 0, i, false
			}
		}
		r, n := utf8.DecodeRuneInString(pat[i:])
		return r, i + n, i+n < len(pat)
	}
	for i := 0; i < len(pat); {
		switch pat[i] {
		case '*':
			if len(toks) == 0 || toks[len(toks)-1].kind != '*' {
				toks = append(toks, globTok{kind: '*'})
			}
			i++
		case '?':
			toks = append(toks, globTok{kind: '?'})
			i++
		case '[':
			t := globTok{kind: '['}
			if i++; i < len(pat) && pat[i] == '^' {
				t.neg = true
				i++
			}
			for {
				if i < len(pat) && pat[i] == ']' && len(t.ranges) > 0 {
					i++
					break
				}
				lo, j, ok := esc(i)
				if !ok {
					return nil, false
				}
				hi := lo
				if pat[j] == '-' {
					if hi, j, ok = esc(j + 1); !ok {
						return nil, false
					}
				}
				t.ranges = append(t.ranges, [2]rune{lo, hi})
				i = j
			}
			toks = append(toks, t)
		default:
			if pat[i] == '\\' {
				if i++; i >= len(pat) {
					return nil, false
				}
			}
			r, n := utf8.DecodeRuneInString(pat[i:])
			toks = append(toks, globTok{kind: 'c', r: r})
			i += n
		}
	}
	return toks, true
}

// globOverlapCost bounds the states globOverlap visits for p and q.
func globOverlapCost(p, q string) int { return 2 * (len(p) + 1) * (len(q) + 1) }

// globOverlap reports whether some file name matches both patterns (under
// the hidden-name rule), and returns the shortest such name. It searches
// the product of the two patterns' automata breadth first: a state is a
// position in each pattern and whether a rune was consumed yet; a step
// consumes one rune both tokens accept. Which rune does not matter beyond
// which side of each class boundary it lies on, so only the boundaries are
// tried (the ends of ranges, just past them, and the runes next to the
// excluded "/" and ".").
func globOverlap(p, q string) (string, bool) {
	if strings.HasPrefix(p, ".") != strings.HasPrefix(q, ".") {
		return "", false // one matches only hidden names, the other none
	}
	dotOK := strings.HasPrefix(p, ".")
	pt, ok1 := globTokens(p)
	qt, ok2 := globTokens(q)
	if !ok1 || !ok2 {
		return "", false
	}
	w := len(qt) + 1
	id := func(i, j int, started bool) int {
		s := 0
		if started {
			s = 1
		}
		return (i*w+j)*2 + s
	}
	n := (len(pt) + 1) * w * 2
	type from struct {
		prev int
		r    rune // the rune consumed, or -1 for a star's empty match
	}
	seen := make([]bool, n)
	back := make([]from, n)
	queue := []int{id(0, 0, false)}
	seen[queue[0]] = true
	push := func(prev, next int, r rune) {
		if !seen[next] {
			seen[next], back[next] = true, from{prev, r}
			queue = append(queue, next)
		}
	}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		started := cur%2 == 1
		i, j := cur/2/w, cur/2%w
		if i == len(pt) && j == len(qt) && started {
			var b []rune
			for c := cur; c != id(0, 0, false); c = back[c].prev {
				if back[c].r >= 0 {
					b = append(b, back[c].r)
				}
			}
			for l, r := 0, len(b)-1; l < r; l, r = l+1, r-1 {
				b[l], b[r] = b[r], b[l]
			}
			return string(b), true
		}
		if i < len(pt) && pt[i].kind == '*' {
			push(cur, id(i+1, j, started), -1)
		}
		if j < len(qt) && qt[j].kind == '*' {
			push(cur, id(i, j+1, started), -1)
		}
		if i == len(pt) || j == len(qt) {
			continue
		}
		r, ok := commonRune(&pt[i], &qt[j], !started && !dotOK)
		if !ok {
			continue
		}
		ni, nj := i+1, j+1
		if pt[i].kind == '*' {
			ni = i
		}
		if qt[j].kind == '*' {
			nj = j
		}
		push(cur, id(ni, nj, true), r)
	}
	return "", false
}

// commonRune finds a rune both tokens accept that can be in a file name
// (not NUL, not "/", not "." when noDot).
func commonRune(a, b *globTok, noDot bool) (rune, bool) {
	cands := []rune{'a', 1, '/' + 1, '.' + 1, 0xE000, utf8.MaxRune} // 0xE000: past the surrogates
	for _, t := range [2]*globTok{a, b} {
		if t.kind == 'c' {
			cands = append(cands, t.r)
		}
		for _, rg := range t.ranges {
			cands = append(cands, rg[0], rg[1]+1)
		}
	}
	for _, r := range cands {
		if r <= 0 || r > utf8.MaxRune || r == '/' || (noDot && r == '.') || !utf8.ValidRune(r) {
			continue
		}
		if a.has(r) && b.has(r) {
			return r, true
		}
	}
	return 0, false
}

// globMatch is path.Match with the hidden-name rule.
func globMatch(pattern, name string) bool {
	ok, _ := path.Match(pattern, name)
	return ok && matchesDot(pattern, name)
}
