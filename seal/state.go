package seal

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// The ratchet state is the device's only copy of the key that seals the
// next entry of a partly used ratchet block, with the number of entries
// acknowledged so far. SealFS keeps it in kernel memory and cannot survive a
// crash in the middle of a block; indelible writes it beside the device
// keystream before it acknowledges an entry, overwriting the previous one,
// so that after a crash the block continues with valid keys. It holds only
// the key of an entry that does not exist yet, so it helps an attacker no
// more than the unburnt keystream does (forward integrity is kept).
const (
	// StateSuffix is appended to the device keystream path to name the state file.
	StateSuffix = ".ratchet"
	stateMagic  = "IDLRATCH"
	stateSize   = 96
)

// RatchetState is the decoded state file.
type RatchetState struct {
	KeyMagic  uint64 // magic of the keystream (and log) it belongs to
	NRatchet  int
	Committed int64         // entries acknowledged durable
	NextKey   [KeySize]byte // key of entry Committed; zero at a block boundary
}

func (s *RatchetState) marshal() []byte {
	b := make([]byte, 0, stateSize)
	b = append(b, stateMagic...)
	b = binary.LittleEndian.AppendUint64(b, s.KeyMagic)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.NRatchet))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Committed))
	b = append(b, s.NextKey[:]...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// ParseRatchetState decodes a state file (hostile bytes).
func ParseRatchetState(b []byte) (RatchetState, error) {
	bad := func(msg string) (RatchetState, error) {
		return RatchetState{}, &FormatError{File: "ratchet state", Struct: "ratchet state", Msg: msg}
	}
	if len(b) != stateSize {
		return bad(fmt.Sprintf("%d bytes, want %d", len(b), stateSize))
	}
	if string(b[:8]) != stateMagic {
		return bad("bad magic")
	}
	sum := sha256.Sum256(b[:64])
	if !macEqual(sum[:], b[64:]) {
		return bad("checksum mismatch (torn or altered write)")
	}
	var s RatchetState
	s.KeyMagic = binary.LittleEndian.Uint64(b[8:])
	nr := binary.LittleEndian.Uint64(b[16:])
	if nr < 1 || nr > MaxNRatchet {
		return bad(fmt.Sprintf("nratchet %d outside [1, %d]", nr, MaxNRatchet))
	}
	s.NRatchet = int(nr)
	c := binary.LittleEndian.Uint64(b[24:])
	if c > 1<<56 {
		return bad(fmt.Sprintf("committed count %d implausible", c))
	}
	s.Committed = int64(c)
	copy(s.NextKey[:], b[32:64])
	return s, nil
}
