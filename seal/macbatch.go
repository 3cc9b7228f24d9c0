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
	pads [2][64]byte // K⊕ipad, K⊕opad
}

// entryHead is the part of an entry its MAC covers before the appended
// bytes (the five header fields, as mac.startEntry writes them).
func entryHead(b *[40]byte, e *Entry) []byte {
	binary.LittleEndian.PutUint64(b[0:], e.RatchetOffset)
	binary.LittleEndian.PutUint64(b[8:], e.Inode)
	binary.LittleEndian.PutUint64(b[16:], e.Offset)
	binary.LittleEndian.PutUint64(b[24:], e.Count)
	binary.LittleEndian.PutUint64(b[32:], e.KeyOffset)
	return b[:]
}

// macBatch computes many HMACs at once on the 16-lane SHA-256 (see
// internal/sha256x16): all inner hashes side by side, then all outer ones.
// The result is the same as mac's (TestMACBatchMatchesMAC).
type macBatch struct {
	h    sha256x16.Hasher
	msgs []sha256x16.Message
}

var padTemplate = func() (p [2][64]byte) {
	for k := KeySize; k < 64; k++ {
		p[0][k], p[1][k] = 0x36, 0x5c
	}
	return p
}()

func (b *macBatch) compute(jobs []macJob) {
	if cap(b.msgs) < len(jobs) {
		b.msgs = make([]sha256x16.Message, len(jobs))
	}
	msgs := b.msgs[:len(jobs)]
	for i := range jobs {
		j := &jobs[i]
		// Keys are KeySize bytes: the pads' second halves are constants.
		j.pads = padTemplate
		for k := 0; k < KeySize; k += 8 {
			kw := binary.LittleEndian.Uint64(j.key[k:])
			binary.LittleEndian.PutUint64(j.pads[0][k:], kw^0x3636363636363636)
			binary.LittleEndian.PutUint64(j.pads[1][k:], kw^0x5c5c5c5c5c5c5c5c)
		}
		msgs[i].Parts = [3][]byte{j.pads[0][:], j.head, j.data}
	}
	b.h.Sum(msgs)
	for i := range jobs {
		msgs[i].Parts = [3][]byte{jobs[i].pads[1][:], msgs[i].Sum[:], nil}
	}
	b.h.Sum(msgs)
	for i := range jobs {
		jobs[i].sum = msgs[i].Sum
		jobs[i].pads = [2][64]byte{} // they are the key
		msgs[i] = sha256x16.Message{}
	}
}
