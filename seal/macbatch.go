package seal

import (
	"encoding/binary"

	"github.com/indelible-worm/indelible/internal/sha256x16"
)

// minBatchMAC is the fewest HMACs worth computing side by side: the
// 16-lane kernel costs the same per step however many lanes carry a
// message, and one lane of it is several times slower than one stream on
// the SHA instructions, so it pays only with most lanes full.
const minBatchMAC = 8

// vectorMAC says whether macBatch runs on the 16-lane kernel (tests turn it
// off to exercise the other paths on machines that have the kernel).
var vectorMAC = sha256x16.Available()

// batchMAC reports whether n HMACs are best computed by a macBatch.
func batchMAC(n int) bool { return n >= minBatchMAC && vectorMAC }

// macJob is one HMAC-SHA256 (RFC 2104) of a macBatch: of head followed by
// data, under key. compute fills sum.
type macJob struct {
	key  [KeySize]byte
	head []byte
	data []byte
	sum  [KeySize]byte
}

// macBatch computes many HMACs at once on the 16-lane SHA-256 (see
// internal/sha256x16): all inner hashes side by side, then the outer ones.
// The results are the same as mac's (TestMACBatchMatchesMAC). Outer hashes,
// and both hashes of a ratchet step, have a fixed size: their blocks are
// laid out here, padded, and hashed with SumPadded.
type macBatch struct {
	h      sha256x16.Hasher
	msgs   []sha256x16.Message
	ipads  [][64]byte
	fixed  [sha256x16.Lanes][128]byte // padded two-block messages
	blocks [sha256x16.Lanes][]byte    // fixed[i][:], for SumPadded
	sums   [sha256x16.Lanes][32]byte
}

// putFixed lays out in b the padded message pad-block ‖ msg, msg at most
// 55 bytes: two blocks.
func putFixed(b *[128]byte, key *[KeySize]byte, pad byte, msg []byte) {
	putPad(b[:64], key, pad)
	n := copy(b[64:119], msg)
	b[64+n] = 0x80
	clear(b[65+n : 120])
	binary.BigEndian.PutUint64(b[120:], uint64(64+n)*8)
}

// finish computes, side by side, the outer hashes of up to Lanes HMACs
// whose inner hashes are inner[i] under keys[i], into out[i].
func (b *macBatch) finish(keys []*[KeySize]byte, inner [][32]byte, out [][KeySize]byte) {
	for i, k := range keys {
		putFixed(&b.fixed[i], k, 0x5c, inner[i][:])
		b.blocks[i] = b.fixed[i][:]
	}
	b.h.SumPadded(b.blocks[:len(keys)], out)
}

func (b *macBatch) compute(jobs []macJob) {
	if cap(b.msgs) < len(jobs) {
		b.msgs = make([]sha256x16.Message, len(jobs))
		b.ipads = make([][64]byte, len(jobs))
	}
	msgs := b.msgs[:len(jobs)]
	for i := range jobs {
		putPad(b.ipads[i][:], &jobs[i].key, 0x36)
		msgs[i].Parts = [3][]byte{b.ipads[i][:], jobs[i].head, jobs[i].data}
	}
	b.h.Sum(msgs)
	var keys [sha256x16.Lanes]*[KeySize]byte
	var inner [sha256x16.Lanes][32]byte
	for lo := 0; lo < len(jobs); lo += sha256x16.Lanes {
		n := min(len(jobs)-lo, sha256x16.Lanes)
		for i := range n {
			keys[i], inner[i] = &jobs[lo+i].key, msgs[lo+i].Sum
		}
		b.finish(keys[:n], inner[:n], b.sums[:n])
		for i := range n {
			jobs[lo+i].sum = b.sums[i]
		}
	}
	clear(msgs)
	clear(b.ipads[:len(jobs)]) // they are the keys
	clear(b.fixed[:])
}

// ratchet replaces each of up to Lanes keys by
// HMAC(key, le64(roff) ‖ le64(nratchet)), side by side (see mac.ratchet).
func (b *macBatch) ratchet(keys [][KeySize]byte, roff uint64, nratchet int) {
	var msg [16]byte
	binary.LittleEndian.PutUint64(msg[0:], roff)
	binary.LittleEndian.PutUint64(msg[8:], uint64(nratchet))
	var kp [sha256x16.Lanes]*[KeySize]byte
	for i := range keys {
		putFixed(&b.fixed[i], &keys[i], 0x36, msg[:])
		b.blocks[i] = b.fixed[i][:]
		kp[i] = &keys[i]
	}
	inner := b.sums[:len(keys)]
	b.h.SumPadded(b.blocks[:len(keys)], inner)
	b.finish(kp[:len(keys)], inner, keys)
	clear(b.fixed[:])
}
