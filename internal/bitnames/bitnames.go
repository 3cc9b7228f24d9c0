// Package bitnames prints bitmasks with names, for the String methods of the
// on-disk format packages' flag and feature types.
package bitnames

import (
	"fmt"
	"strings"
)

// Name names one bit (or group of bits) of a mask. It is an alias of an
// unnamed struct so that format packages write their tables as plain
// {bit, "name"} pairs.
type Name = struct {
	Bit  uint32
	Name string
}

// Format names the set bits of v from table, joined by "|"; bits the table
// does not name print in hex, and zero prints as "0".
func Format(v uint32, table []Name) string {
	if v == 0 {
		return "0"
	}
	var parts []string
	for _, n := range table {
		if v&n.Bit != 0 {
			parts = append(parts, n.Name)
			v &^= n.Bit
		}
	}
	if v != 0 {
		parts = append(parts, fmt.Sprintf("%#x", v))
	}
	return strings.Join(parts, "|")
}
