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
// keys of entries that do not exist yet (or, while a commit is in flight,
// of entries not yet acknowledged), so it helps an attacker no more than the
// unburnt keystream does (forward integrity is kept).
//
// Version 2 adds the commit in flight (target count, its next key, and the
// keystream's burnt offset when it started): written before a commit burns
// keys, it lets Open finish that commit when the burn already reached the
// disk (see Store.commit). Version 1 files (96 bytes) are still read.
const (
	// StateSuffix is appended to the device keystream path to name the state file.
	StateSuffix  = ".ratchet"
	stateMagicV1 = "IDLRATCH"
	stateMagic   = "IDLRATC2"
	stateSizeV1  = 96
	stateSize    = 144
)

// RatchetState is the decoded state file.
type RatchetState struct {
	KeyMagic  uint64 // magic of the keystream (and log) it belongs to
	NRatchet  int
	Committed int64         // entries acknowledged durable
	NextKey   [KeySize]byte // key of entry Committed; zero at a block boundary
	// Target is the entry count the commit in flight makes durable
	// (Committed when none is), TargetKey the key of entry Target.
	Target    int64
	TargetKey [KeySize]byte
	// BurnFrom is the keystream's burnt offset when the latest commit
	// started: keys from there up to what Committed (or Target) needs may
	// have been burnt by it, and Open checks that they really were.
	BurnFrom int64
	// Version is the layout the state was read from (1 or 2); marshal
	// always writes version 2.
	Version int
}

func (s *RatchetState) marshal() []byte {
	b := make([]byte, 0, stateSize)
	b = append(b, stateMagic...)
	b = binary.LittleEndian.AppendUint64(b, s.KeyMagic)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.NRatchet))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Committed))
	b = append(b, s.NextKey[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Target))
	b = append(b, s.TargetKey[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.BurnFrom))
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// ParseRatchetState decodes a state file (hostile bytes), version 1 or 2.
func ParseRatchetState(b []byte) (RatchetState, error) {
	bad := func(msg string) (RatchetState, error) {
		return RatchetState{}, &FormatError{File: "ratchet state", Struct: "ratchet state", Msg: msg}
	}
	var s RatchetState
	switch {
	case len(b) == stateSizeV1 && string(b[:8]) == stateMagicV1:
		s.Version = 1
	case len(b) == stateSize && string(b[:8]) == stateMagic:
		s.Version = 2
	case len(b) != stateSizeV1 && len(b) != stateSize:
		return bad(fmt.Sprintf("%d bytes, want %d (or %d for version 1)", len(b), stateSize, stateSizeV1))
	default:
		return bad("bad magic")
	}
	body := b[:len(b)-sha256.Size]
	sum := sha256.Sum256(body)
	if !macEqual(sum[:], b[len(body):]) {
		return bad("checksum mismatch (torn or altered write)")
	}
	s.KeyMagic = binary.LittleEndian.Uint64(b[8:])
	nr := binary.LittleEndian.Uint64(b[16:])
	if nr < 1 || nr > MaxNRatchet {
		return bad(fmt.Sprintf("nratchet %d outside [1, %d]", nr, MaxNRatchet))
	}
	s.NRatchet = int(nr)
	// Counts beyond 2^56 entries (4.6 EB of .SEALFS.LOG) are not real.
	const maxCount = 1 << 56
	c := binary.LittleEndian.Uint64(b[24:])
	if c > maxCount {
		return bad(fmt.Sprintf("committed count %d implausible", c))
	}
	s.Committed = int64(c)
	copy(s.NextKey[:], b[32:64])
	s.Target, s.TargetKey = s.Committed, s.NextKey
	if s.Version == 1 {
		return s, nil
	}
	t := binary.LittleEndian.Uint64(b[64:])
	if t < c || t > maxCount {
		return bad(fmt.Sprintf("target count %d outside [%d, 2^56]", t, c))
	}
	s.Target = int64(t)
	copy(s.TargetKey[:], b[72:104])
	bf := binary.LittleEndian.Uint64(b[104:])
	if bf < KeyHeaderSize || (bf-KeyHeaderSize)%KeySize != 0 || bf > MaxKeyBytes+KeyHeaderSize {
		return bad(fmt.Sprintf("burn-from offset %d is not a key boundary", bf))
	}
	s.BurnFrom = int64(bf)
	return s, nil
}
