package hostflags

import (
	"errors"
	"fmt"
	"strings"
)

// MaxSelectors bounds the comma-separated list of a -g option.
const MaxSelectors = 256

// Selector picks entries, as one element of syslock's -g option:
// "group" (every entry of the group), "group:flag" (the entries of the group
// managed with flag) or "flag" (every entry managed with flag).
type Selector struct {
	Group string // "" for any group
	Flag  Flag   // 0 for any flag
}

func (s Selector) String() string {
	switch {
	case s.Group == "":
		return s.Flag.String()
	case s.Flag == 0:
		return s.Group
	}
	return s.Group + ":" + s.Flag.String()
}

// ErrEmptySelection is returned (wrapped) by Select when a "group:flag"
// selector names an existing group that has no entries with that flag.
// syslock's audit in quiet mode treats that as consistent (nothing to check).
var ErrEmptySelection = errors.New("hostflags: selection is empty")

// ErrNoSuchGroup is returned (wrapped) by Select for a group the
// configuration does not define.
var ErrNoSuchGroup = errors.New("no such group")

// ParseSelectors parses a -g value: selectors separated by commas.
func ParseSelectors(s string, p Platform) ([]Selector, error) {
	parts := strings.Split(s, ",")
	if len(parts) > MaxSelectors {
		return nil, fmt.Errorf("more than %d groups in -g", MaxSelectors)
	}
	var sels []Selector
	for _, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("empty group name in -g %q", truncate(s, 60))
		}
		var sel Selector
		name, flagName, hasFlag := strings.Cut(part, ":")
		if hasFlag {
			sel.Group = name
			if sel.Flag = ParseFlag(flagName); sel.Flag == 0 {
				return nil, fmt.Errorf("unknown flag %q in -g %s (want %s)", truncate(flagName, 20), truncate(part, 60), flagChoices(p))
			}
		} else if f := ParseFlag(part); f != 0 {
			sel.Flag = f
		} else {
			sel.Group = part
		}
		if sel.Group != "" {
			if err := checkGroupName(sel.Group); err != "" {
				return nil, fmt.Errorf("group name %q in -g %s", truncate(sel.Group, 40), err)
			}
			if ParseFlag(sel.Group) != 0 {
				return nil, fmt.Errorf("-g %s: write the flag after the group, as group:%s", part, sel.Group)
			}
		}
		if sel.Flag != 0 && sel.Flag.Platform() != p {
			return nil, fmt.Errorf("-g %s: %s is a %s flag, but this is a %s system; use %s", part, sel.Flag, sel.Flag.Platform(), p, sel.Flag.hint())
		}
		sels = append(sels, sel)
	}
	return sels, nil
}

func flagChoices(p Platform) string {
	if p == Linux {
		return "+i or +a"
	}
	return "schg, uchg, sappnd or uappnd"
}

// Select returns the indexes of the entries that any selector picks, in
// configuration order; with no selectors, all of them. A selector naming a
// group the configuration does not have is an error, and so is a selector
// with a flag that picks nothing (wrapping ErrEmptySelection).
func (c *Config) Select(sels []Selector) ([]int, error) {
	groups := map[string]bool{}
	for _, g := range c.Groups {
		groups[g] = true
	}
	for _, s := range sels {
		if s.Group != "" && !groups[s.Group] {
			return nil, fmt.Errorf("%w: group %q does not exist in %s", ErrNoSuchGroup, s.Group, c.File)
		}
		// A group with no paths is legal (syslock accepts it); a flag
		// that picks nothing is a mistake worth reporting.
		found := s.Flag == 0
		for i := range c.Entries {
			if s.matches(&c.Entries[i]) {
				found = true
				break
			}
		}
		if !found {
			if s.Group == "" {
				return nil, fmt.Errorf("%w: no entry of %s is managed with %s", ErrEmptySelection, c.File, s.Flag)
			}
			return nil, fmt.Errorf("%w: group %q has no entries managed with %s", ErrEmptySelection, s.Group, s.Flag)
		}
	}
	var idx []int
	for i := range c.Entries {
		if len(sels) == 0 {
			idx = append(idx, i)
			continue
		}
		for _, s := range sels {
			if s.matches(&c.Entries[i]) {
				idx = append(idx, i)
				break
			}
		}
	}
	return idx, nil
}

func (s Selector) matches(e *Entry) bool {
	if s.Group != "" && !e.InGroup(s.Group) {
		return false
	}
	return s.Flag == 0 || s.Flag == e.Flag
}

// explicitSystem reports whether a selector names a BSD system flag, which
// makes securelevel restrictions errors rather than silent skips.
func explicitSystem(sels []Selector) bool {
	for _, s := range sels {
		if s.Flag.IsSystem() {
			return true
		}
	}
	return false
}
