package ext4

import (
	"slices"

	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// A watched htree's names are also looked up through its index as the
// kernel does (layout.DxFinds): an index whose entries point elsewhere
// (leaf pointers swapped, checksums made again) hides a name that is still
// in the directory, and the path leads nowhere for the host.

// dxMisses returns, sorted, the watched names that view v of an indexed
// directory holds but that the kernel's lookup would not find through its
// index. A name whose lookup cannot be followed to the end (an index the
// kernel would give up on and search linearly, a block not known, a run
// of equal hashes that crosses an index node) is not listed: only a
// lookup that surely misses is.
func (e *Engine) dxMisses(v *view) []string {
	if v.inode == nil || v.inode.Flags&layout.InodeFlagIndex == 0 || e.sb.FeatureCompat&layout.CompatDirIndex == 0 || len(v.named) == 0 {
		return nil
	}
	block := func(lb uint64) (b []byte, mapped bool) {
		if int64(lb)*e.bs >= v.size {
			return nil, false // past i_size: ext4_read_dirblock refuses it
		}
		m, ok := v.lookup(lb)
		if !ok || m.Unwritten {
			return nil, false
		}
		return v.used[m.Physical+lb-m.Logical], true
	}
	root, _ := block(0)
	if root == nil {
		return nil
	}
	var missed []string
	for name, ino := range v.named {
		if ino == namedTwice {
			continue // checkNames raises it
		}
		if found, sure := layout.DxFinds(e.sb, root, name, block); sure && !found {
			missed = append(missed, name)
		}
	}
	slices.Sort(missed)
	return missed
}
