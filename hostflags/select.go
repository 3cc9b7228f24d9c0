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

// ErrEmptySelection is returned (wrapped) by Select when every selector
// picks nothing: each is a "group:flag" naming a group that has no entries
// with that flag, or a flag no entry has. syslock's audit in quiet mode
// treats that as consistent (nothing to check). When only some selectors
// pick nothing, Select reports them and keeps the others.
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
				return nil, fmt.Errorf("unknown flag %q in -g %s (want %s)", truncate(flagName, 20), truncate(part, 60), flagChoices(p, false, false))
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
			return nil, fmt.Errorf("-g %s: %s", part, platformMismatch(sel.Flag, p))
		}
		sels = append(sels, sel)
	}
	return sels, nil
}

// Select returns the indexes of the entries that any selector picks, in
// configuration order; with no selectors, all of them. A selector naming a
// group the configuration does not have is an error. A selector with a flag
// that picks nothing is returned in empty, with the reason, and the others
// still apply; when every selector picks nothing the error wraps
// ErrEmptySelection.
func (c *Config) Select(sels []Selector) (idx []int, empty []string, err error) {
	groups := map[string]bool{}
	for _, g := range c.Groups {
		groups[g] = true
	}
	for _, s := range sels {
		if s.Group != "" && !groups[s.Group] {
			return nil, nil, fmt.Errorf("%w: group %q does not exist in %s (%s)", ErrNoSuchGroup, s.Group, c.File, c.groupList())
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
		if found {
			continue
		}
		if s.Group == "" {
			empty = append(empty, fmt.Sprintf("no entry of %s is managed with %s", c.File, s.Flag))
		} else {
			empty = append(empty, fmt.Sprintf("group %q has no entries managed with %s", s.Group, s.Flag))
		}
	}
	if len(sels) > 0 && len(empty) == len(sels) {
		return nil, nil, fmt.Errorf("%w: %s", ErrEmptySelection, strings.Join(empty, "; "))
	}
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
	return idx, empty, nil
}

// maxListedGroups bounds the group names an ErrNoSuchGroup message lists.
const maxListedGroups = 20

// groupList names the configuration's groups for an error message.
func (c *Config) groupList() string {
	switch n := len(c.Groups); {
	case n == 0:
		return "it defines no groups"
	case n > maxListedGroups:
		return fmt.Sprintf("its groups: %s and %d more", strings.Join(c.Groups[:maxListedGroups], ", "), n-maxListedGroups)
	}
	return "its groups: " + strings.Join(c.Groups, ", ")
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
