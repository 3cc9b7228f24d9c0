package layout

// An indexed directory (htree) is searched by hash: the kernel hashes the
// name, follows the index from the root (block 0) down to one leaf block
// and reads only that leaf, and the ones after it while their index
// entries carry the same hash (ext4_dx_find_entry, dx_probe and
// ext4_htree_next_block in fs/ext4/namei.c). A valid index whose entries
// point elsewhere hides a name that is still in the directory: the
// kernel's lookup misses it, though every entry is where it was.

// dxMaxLeaves bounds the leaves one lookup reads after the first, through
// a run of equal hashes.
const dxMaxLeaves = 64

// DxFinds reports whether the kernel's lookup of name in an indexed
// directory finds a live entry of that name, following the index of root
// (the directory's block 0) with the hash of sb's seed and flags. block
// returns a logical block of the directory, and whether the directory maps
// it (a block it maps but whose bytes are not known is nil, true). sure is
// false when the lookup cannot be followed to the end: an index the kernel
// would give up on and search linearly (a root that does not parse, an
// unknown hash version), a block not known, an index node that does not
// parse, a run of equal hashes that crosses an index node.
func DxFinds(sb *SuperBlock, root []byte, name string, block func(lb uint64) ([]byte, bool)) (found, sure bool) {
	r, err := ParseDxRoot(root)
	if err != nil {
		return false, false // dx_probe gives up: the kernel searches linearly
	}
	hv, err := sb.DirHashVersion(r.Info.HashVersion)
	if err != nil {
		return false, false
	}
	major, _, err := DirHash(hv, sb.HashSeed, []byte(name))
	if err != nil {
		return false, false
	}
	return dxFind(block, r, major, name)
}

// dxFind follows the index of root to the leaf the kernel reads for hash,
// and the leaves after it in the same run of equal hashes, and reports
// whether one holds a live entry called name; sure is false when the walk
// cannot be completed. A pointer to a block the directory does not map
// fails the kernel's lookup (ext4_read_dirblock: a hole or a block past
// the end is corruption): surely not found.
func dxFind(block func(lb uint64) ([]byte, bool), root *DxRoot, hash uint32, name string) (found, sure bool) {
	block0, entries := root.Block0, root.Entries
	for range root.Info.IndirectLevels {
		node, mapped := block(uint64(dxBlock(dxPick(block0, entries, hash))))
		if !mapped {
			return false, true // a hole or past the end: EFSCORRUPTED
		}
		if node == nil {
			return false, false
		}
		var err error
		if _, block0, entries, err = ParseDxNode(node); err != nil {
			return false, false
		}
	}
	// The leaf, then the next ones while the next index entry's hash,
	// without its continuation bit, is the name's (ext4_htree_next_block
	// with the lookup's hash: the low bit of a computed hash is clear).
	i := dxIndex(entries, hash) // -1: block0
	for range dxMaxLeaves {
		lb := block0
		if i >= 0 {
			lb = entries[i].Block
		}
		leaf, mapped := block(uint64(dxBlock(lb)))
		if !mapped {
			return false, true
		}
		if leaf == nil {
			return false, false
		}
		ents, err := ParseDirBlock(leaf)
		if err != nil {
			return false, false
		}
		for _, en := range LiveEntries(ents) {
			if en.Name == name {
				return true, true
			}
		}
		i++
		if i >= len(entries) {
			// Without index nodes this was the last leaf; with them the
			// run may go on in the next node, which is not followed.
			return false, root.Info.IndirectLevels == 0
		}
		if entries[i].Hash&^1 != hash {
			return false, true
		}
	}
	return false, false
}

// dxIndex returns the index of the entry dx_probe stops at for hash: the
// last whose stored hash (continuation bit included) is at most hash, or
// -1 for block0. It is the kernel's binary search step for step, so that
// entries out of order (forged) lead where they lead the kernel.
func dxIndex(entries []DxEntry, hash uint32) int {
	lo, hi := 0, len(entries)-1
	for lo <= hi {
		m := lo + (hi-lo)/2
		if entries[m].Hash > hash {
			hi = m - 1
		} else {
			lo = m + 1
		}
	}
	return lo - 1
}

// dxPick returns the block dx_probe descends to for hash.
func dxPick(block0 uint32, entries []DxEntry, hash uint32) uint32 {
	if i := dxIndex(entries, hash); i >= 0 {
		return entries[i].Block
	}
	return block0
}

// dxBlock is dx_get_block: the logical block of an index entry, without
// the high bits the kernel masks off.
func dxBlock(b uint32) uint32 { return b & 0x0fffffff }
