package seal

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"hash"
)

// mac is HMAC-SHA256 (RFC 2104) with reusable digests: sealing and
// verification rekey for every entry, and crypto/hmac would allocate each
// time. The result is identical to crypto/hmac's (see TestMACMatchesStdlib).
// Scratch buffers live in the struct: a local array passed to the digest
// through the hash.Hash interface escapes, one allocation per use.
type mac struct {
	inner, outer hash.Hash
	ipad, opad   [sha256.BlockSize]byte
	sum          [KeySize]byte
	scratch      [entryHeadSize]byte
}

func newMAC() *mac {
	return &mac{inner: sha256.New(), outer: sha256.New()}
}

// putPad writes an HMAC-SHA256 pad block for a key of KeySize bytes (keys
// are always that long here) into dst: the key XORed with the pad byte,
// then the pad byte alone.
func putPad(dst []byte, key *[KeySize]byte, pad byte) {
	w := uint64(pad) * 0x0101010101010101
	for k := 0; k < KeySize; k += 8 {
		binary.LittleEndian.PutUint64(dst[k:], binary.LittleEndian.Uint64(key[k:])^w)
	}
	for k := KeySize; k < sha256.BlockSize; k += 8 {
		binary.LittleEndian.PutUint64(dst[k:], w)
	}
}

// reset starts a MAC under key (always KeySize bytes here).
func (m *mac) reset(key *[KeySize]byte) {
	putPad(m.ipad[:], key, 0x36)
	putPad(m.opad[:], key, 0x5c)
	m.inner.Reset()
	m.inner.Write(m.ipad[:])
}

func (m *mac) Write(p []byte) (int, error) { return m.inner.Write(p) }

func (m *mac) writeU64(v uint64) {
	binary.LittleEndian.PutUint64(m.scratch[:8], v)
	m.inner.Write(m.scratch[:8])
}

// final returns the MAC; the slice is valid until the next call.
func (m *mac) final() *[KeySize]byte {
	in := m.inner.Sum(m.sum[:0])
	m.outer.Reset()
	m.outer.Write(m.opad[:])
	m.outer.Write(in)
	m.outer.Sum(m.sum[:0])
	return &m.sum
}

// ratchet replaces key by HMAC(key, le64(roff) ‖ le64(nratchet)): SealFS's
// ratchet_key. The first key of a block is the keystream key ratcheted
// with roff 0 (unless nratchet is 1); key roff is key roff-1 ratcheted with roff.
func (m *mac) ratchet(key *[KeySize]byte, roff uint64, nratchet int) {
	m.reset(key)
	m.writeU64(roff)
	m.writeU64(uint64(nratchet))
	*key = *m.final()
}

// startEntry begins the MAC of an entry: the five header fields in order;
// the caller then writes the appended bytes and calls final.
func (m *mac) startEntry(key *[KeySize]byte, e *Entry) {
	m.reset(key)
	m.inner.Write(entryHead(&m.scratch, e))
}

// recordKeyLabel derives the key that seals indelible's side records bound
// to an entry from that entry's key, so a record is as hard to forge as the
// entry itself and needs no key material of its own.
const recordKeyLabel = "indelible side-record key v1"

var recordKeyLabelBytes = []byte(recordKeyLabel) // converted once: it escapes into the digest

func (m *mac) recordKey(entryKey *[KeySize]byte) [KeySize]byte {
	m.reset(entryKey)
	m.inner.Write(recordKeyLabelBytes)
	return *m.final()
}

// wipe forgets the key of the last MAC, ratchet step or record key: the
// pads are the key XORed with a constant, the digests' states after the pad
// block are as good as the key (they finish any MAC under it), and sum holds
// the last result (after recordKey, a key). The store calls it after every
// step: an attacker who takes a running device must find in its memory no
// key of an acknowledged entry, only the next key, which the ratchet state
// holds anyway. (Reset restores the digests' initial state; the partial
// block left in their buffers is message bytes and, in the outer digest,
// the inner hash, from which the key cannot be had.) The verifier does not
// wipe: its keys come from the auditor's keystream, which it holds whole.
func (m *mac) wipe() {
	clear(m.ipad[:])
	clear(m.opad[:])
	clear(m.sum[:])
	clear(m.scratch[:])
	m.inner.Reset()
	m.outer.Reset()
}

func macEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
