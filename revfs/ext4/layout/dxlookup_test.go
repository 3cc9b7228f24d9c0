package layout

import (
	"encoding/binary"
	"testing"
)

// dxLeaf is a 1 KiB directory block holding one live entry per name.
func dxLeaf(t *testing.T, names ...string) []byte {
	t.Helper()
	le := binary.LittleEndian
	b := make([]byte, 1024)
	off := 0
	for i, n := range names {
		rec := (8 + len(n) + 3) &^ 3
		if i == len(names)-1 {
			rec = len(b) - off
		}
		le.PutUint32(b[off:], uint32(100+i))
		le.PutUint16(b[off+4:], uint16(rec))
		b[off+6] = byte(len(n))
		b[off+7] = 1
		copy(b[off+8:], n)
		off += rec
	}
	return b
}

func TestDxIndexIsTheKernelsSearch(t *testing.T) {
	entries := []DxEntry{{Hash: 0x100, Block: 2}, {Hash: 0x201, Block: 3}, {Hash: 0x400, Block: 4}}
	for _, tc := range []struct {
		hash uint32
		want int
	}{
		{0x0, -1}, {0xFE, -1}, {0x100, 0}, {0x1FE, 0},
		{0x200, 0}, // below 0x201: the continuation bit counts in the comparison
		{0x202, 1}, {0x400, 2}, {0xFFFFFFFC, 2},
	} {
		if got := dxIndex(entries, tc.hash); got != tc.want {
			t.Errorf("hash %#x: entry %d, want %d", tc.hash, got, tc.want)
		}
	}
	if got := dxIndex(nil, 5); got != -1 {
		t.Errorf("no entries: %d", got)
	}
}

// dxFind reads the leaf the index leads to and the following leaves of a
// run of equal hashes; it is sure of a miss only when the kernel's lookup
// surely misses.
func TestDxFind(t *testing.T) {
	leaves := map[uint64][]byte{
		1: dxLeaf(t, "a"),
		2: dxLeaf(t, "b"),
		3: dxLeaf(t, "c"),
		4: dxLeaf(t, "d"),
	}
	block := func(lb uint64) ([]byte, bool) {
		if lb >= 10 {
			return nil, false // past the directory's end
		}
		return leaves[lb], true // nil for a block not known yet
	}
	root := &DxRoot{Block0: 1, Entries: []DxEntry{{Hash: 0x100, Block: 2}, {Hash: 0x101, Block: 3}, {Hash: 0x300, Block: 4}}}
	for _, tc := range []struct {
		what        string
		hash        uint32
		name        string
		found, sure bool
	}{
		{"in block0's leaf", 0x10, "a", true, true},
		{"in another leaf", 0x10, "b", false, true},
		{"in the run's second leaf", 0x100, "c", true, true},
		{"after the run", 0x100, "d", false, true},
		{"in the last leaf", 0x300, "d", true, true},
		{"missing from the last leaf", 0x300, "a", false, true},
	} {
		found, sure := dxFind(block, root, tc.hash, tc.name)
		if found != tc.found || sure != tc.sure {
			t.Errorf("%s: found %v sure %v, want %v %v", tc.what, found, sure, tc.found, tc.sure)
		}
	}

	// A pointer past the directory's end: the kernel's lookup fails.
	bad := &DxRoot{Block0: 1, Entries: []DxEntry{{Hash: 0x100, Block: 12}}}
	if found, sure := dxFind(block, bad, 0x200, "b"); found || !sure {
		t.Errorf("pointer past the end: found %v sure %v", found, sure)
	}
	// A leaf not known yet: not judged.
	unknown := &DxRoot{Block0: 1, Entries: []DxEntry{{Hash: 0x100, Block: 7}}}
	if _, sure := dxFind(block, unknown, 0x200, "b"); sure {
		t.Error("a leaf not known yet was judged")
	}
	// With an index node, a run that reaches the node's last entry may go
	// on in the next node: not judged.
	le := binary.LittleEndian
	leaves[5] = make([]byte, 1024)
	le.PutUint16(leaves[5][4:], 1024)     // the fake dirent over the node
	le.PutUint16(leaves[5][0x8:], 2)      // limit
	le.PutUint16(leaves[5][0xA:], 2)      // count
	le.PutUint32(leaves[5][0xC:], 2)      // block for hashes below the entry
	le.PutUint32(leaves[5][0x10:], 0x100) // entry 1: hash
	le.PutUint32(leaves[5][0x14:], 3)     // entry 1: block
	deep := &DxRoot{Info: DxRootInfo{IndirectLevels: 1}, Block0: 5}
	if found, sure := dxFind(block, deep, 0x100, "d"); found || sure {
		t.Errorf("a run at a node's end: found %v sure %v", found, sure)
	}
	if found, sure := dxFind(block, deep, 0x100, "c"); !found || !sure {
		t.Errorf("through the node: found %v sure %v", found, sure)
	}
}
