package ext4

import (
	"bytes"
	"crypto/sha256"
	"slices"

	"github.com/indelible-worm/indelible/revfs/ext4/jbd2"
)

// A journal replay (the kernel's at mount, or e2fsck's) writes every
// committed copy still in the live log to its home block in tid order, so
// older versions of a block may land before newer ones. A replay only
// happens after a crash: when Open finds the log not clean, the engine
// remembers a digest of every committed copy in it, until the host next
// writes the journal superblock (both replays end by doing so). Meanwhile
// a watched write whose every watched block is byte-identical to one of
// those copies, but not the newest version the engine holds, is a replay:
// it is accepted without a violation and leaves the model alone (the
// newest committed version stays the truth, and the replay writes it
// last). Once the log has been written clean no replay is possible, and
// an old copy written home is judged as any other write.

// rememberReplay records the copies a recovery of txs would write home.
func (j *journal) rememberReplay(txs []jbd2.Transaction) {
	j.replay = map[uint64][][sha256.Size]byte{}
	for _, tx := range txs {
		for _, lb := range tx.Blocks {
			c, err := j.readCopy(journalCopy{jblock: lb.JBlock, escaped: lb.Escaped})
			if err != nil {
				continue
			}
			j.replay[lb.Home] = append(j.replay[lb.Home], sha256.Sum256(c))
		}
	}
}

// isReplay reports whether w is an older committed copy being replayed
// home (see above).
func (j *journal) isReplay(w *hostWrite) bool {
	e := j.e
	if j.replay == nil {
		return false
	}
	newest := true
	watched := false
	for b := w.first; b <= w.last; b++ {
		_, meta := e.roles[b]
		if !meta && len(e.dataAt(b, b)) == 0 {
			continue
		}
		watched = true
		nb := w.block(b)
		if !slices.Contains(j.replay[b], sha256.Sum256(nb)) {
			return false
		}
		cur, ok := e.meta[b]
		if !ok {
			var err error
			if cur, err = e.readNewest(b); err != nil {
				return false
			}
		}
		newest = newest && bytes.Equal(cur, nb)
	}
	return watched && !newest
}
