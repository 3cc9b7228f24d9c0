// Package sha256x16 computes the SHA-256 of many independent messages at
// once, sixteen lanes side by side in AVX-512 registers.
//
// Why: the real logs are sealed and verified with one HMAC-SHA256 per entry,
// and one SHA-256 stream is bound by the latency and throughput of the
// CPU's SHA instructions (about 1 GB/s on the Xeon this project is measured
// on). Sixteen streams in the vector unit hash more than twice as fast, and
// sealing and verification always have many entries to hash at once.
//
// Messages of unequal lengths leave lanes idle once the short ones are
// done, so when few lanes are left busy Sum finishes them with one
// crypto/sha256 stream each, from the lanes' state (handoffLanes).
//
// Available reports whether the vector kernel runs here; without it Sum
// still gives the right answers (a plain Go block function) but slowly, so
// callers use crypto/sha256 instead.
package sha256x16

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"hash"
	"unsafe"
)

// Lanes is how many messages are hashed side by side.
const Lanes = 16

// Available reports whether the 16-lane kernel runs on this CPU.
func Available() bool { return hasKernel }

// Message is one message to hash: the concatenation of Parts (a prefix, a
// header and a body, say, without copying them together). Sum fills Sum.
type Message struct {
	Parts [3][]byte
	Sum   [32]byte
}

// Hasher holds the lanes' state and scratch blocks; the zero value is
// ready. A Hasher is not safe for concurrent use. It is large (about 3 KiB);
// keep one and reuse it.
type Hasher struct {
	state   [8][Lanes]uint32
	ptrs    [Lanes]uintptr // for the kernel
	segs    [Lanes][]byte  // the same, for blocksGeneric
	strides [Lanes]uintptr
	lanes   [Lanes]lane
	scratch [Lanes][128]byte
	idle    [64]byte  // what lanes without a message hash
	scalar  hash.Hash // crypto/sha256, for the lanes Sum hands off
}

// lane is where one lane stands in its message. Positions are kept as
// part and offset, and turned into addresses only right before each call
// of the kernel: Go may move stacks (and with them any message that lives
// on one) between calls, never during one.
type lane struct {
	m      *Message
	part   int    // current part of m
	off    int    // offset in Parts[part]
	length uint64 // bytes of m consumed so far (for the padding)
	left   int    // blocks left in the current segment
	inBuf  bool   // the segment is in scratch (assembled or padded)
	bufOff int    // its next block in scratch
	last   bool   // the segment ends the message
}

// Prefetch asks the CPU to start fetching the beginning and the end of b
// into its cache. Sum reads those bytes with ordinary loads (to assemble a
// message's first and last blocks) while the lanes wait, so a caller that
// queues many messages before hashing them can hide the memory latency by
// prefetching each one as it is queued. Prefetching never faults: bytes not
// mapped are simply not fetched.
func Prefetch(b []byte) {
	if len(b) > 0 {
		prefetch(unsafe.SliceData(b), len(b))
	}
}

var iv = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

// Sum computes the SHA-256 of every message in ms into its Sum field.
func (h *Hasher) Sum(ms []Message) {
	next, active := 0, 0
	for i := range Lanes {
		if next < len(ms) {
			h.start(i, &ms[next])
			next++
			active++
		} else {
			h.lanes[i].m = nil
		}
	}
	for active > 0 {
		n := int(^uint(0) >> 1)
		for i := range h.lanes {
			l := &h.lanes[i]
			var seg []byte
			switch {
			case l.m == nil:
				seg, h.strides[i] = h.idle[:], 0
			case l.inBuf:
				seg, h.strides[i] = h.scratch[i][64*l.bufOff:], 64
				n = min(n, l.left)
			default:
				seg, h.strides[i] = l.m.Parts[l.part][l.off:], 64
				n = min(n, l.left)
			}
			h.segs[i] = seg
		}
		h.run(n)
		for i := range h.lanes {
			l := &h.lanes[i]
			if l.m == nil {
				continue
			}
			l.left -= n
			if l.inBuf {
				l.bufOff += n
			} else {
				l.off += 64 * n
			}
			if l.left > 0 {
				continue
			}
			if !l.last {
				h.segment(i)
				continue
			}
			for j := range 8 {
				binary.BigEndian.PutUint32(l.m.Sum[4*j:], h.state[j][i])
			}
			l.m = nil
			active--
			if next < len(ms) {
				h.start(i, &ms[next])
				next++
				active++
			}
		}
		if next == len(ms) && active > 0 && active <= handoffLanes {
			for i := range h.lanes {
				if h.handOff(i) {
					active--
				}
			}
		}
	}
}

// handoffLanes: once Sum has no message left to start and at most this
// many lanes are still busy, it finishes those one after another with
// crypto/sha256. A call of the kernel costs the same however many lanes
// are idle, so the few long messages left at the end of a batch of
// unequal lengths would otherwise hash at a few sixteenths of its speed:
// sixteen messages of 128 to 896 KiB hashed at about the speed of one
// crypto/sha256 stream, against 1.6 times that when the stragglers are
// handed off (BenchmarkSumUnequal). One stream with the SHA extensions is
// worth about eight busy lanes (the best threshold measured 4 to 6), without
// them two or three. 0: never (no kernel, or a crypto/sha256 whose saved
// state Sum cannot write).
var handoffLanes = func() int {
	switch {
	case !hasKernel || !stateFormatOK():
		return 0
	case hasSHAExt:
		return 6
	default:
		return 2
	}
}()

// The layout of crypto/sha256's saved state (encoding.BinaryMarshaler):
// a magic, the eight state words, the partial block, and the length
// hashed so far, all big-endian. stateFormatOK checks it at start-up
// against the state crypto/sha256 itself saves.
const (
	stateMagic = "sha\x03"
	stateSize  = len(stateMagic) + 8*4 + 64 + 8
)

// putState writes the saved state of a SHA-256 at a block boundary: words
// st after n bytes (a multiple of 64).
func putState(b *[stateSize]byte, st *[8]uint32, n uint64) {
	copy(b[:], stateMagic)
	for j, w := range st {
		binary.BigEndian.PutUint32(b[len(stateMagic)+4*j:], w)
	}
	clear(b[len(stateMagic)+32 : stateSize-8])
	binary.BigEndian.PutUint64(b[stateSize-8:], n)
}

func stateFormatOK() bool {
	d := sha256.New()
	d.Write(make([]byte, 64))
	want, err := d.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return false
	}
	var h Hasher
	for j := range 8 {
		h.state[j][0] = iv[j]
	}
	h.segs[0], h.strides[0] = make([]byte, 64), 64
	for i := 1; i < Lanes; i++ {
		h.segs[i] = h.idle[:]
	}
	blocksGeneric(&h.state, &h.segs, &h.strides, 1)
	var st [8]uint32
	for j := range 8 {
		st[j] = h.state[j][0]
	}
	var got [stateSize]byte
	putState(&got, &st, 64)
	if !bytes.Equal(got[:], want) {
		return false
	}
	// And it reads back: the same state hashes on to the right sum.
	var m Message
	m.Parts[0] = make([]byte, 200)
	h = Hasher{}
	h.start(0, &m)
	if !h.handOff(0) {
		return false
	}
	return m.Sum == sha256.Sum256(m.Parts[0])
}

// handOff finishes lane i's message with crypto/sha256 from the lane's
// state, when the lane stands at a block boundary inside the message
// (not in a block Sum assembled from parts or padded), and reports
// whether it did.
func (h *Hasher) handOff(i int) bool {
	l := &h.lanes[i]
	if l.m == nil || l.inBuf {
		return false
	}
	var st [8]uint32
	for j := range 8 {
		st[j] = h.state[j][i]
	}
	var b [stateSize]byte
	putState(&b, &st, l.length-64*uint64(l.left)) // l.length counts the whole segment
	if h.scalar == nil {
		h.scalar = sha256.New()
	}
	if err := h.scalar.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[:]); err != nil {
		return false
	}
	h.scalar.Write(l.m.Parts[l.part][l.off:])
	for _, p := range l.m.Parts[l.part+1:] {
		h.scalar.Write(p)
	}
	h.scalar.Sum(l.m.Sum[:0])
	h.scalar.Reset() // an HMAC's inner state is as good as its key
	clear(b[:])
	l.m = nil
	return true
}

// SumPadded computes, side by side, the SHA-256 of up to Lanes messages
// that the caller has already padded (FIPS 180-4 §5.1.1) to one common
// length, a multiple of 64 bytes: out[i] is the hash of the message
// msgs[i] was padded from. It skips Sum's assembly of blocks from parts,
// which dominates for short messages of a fixed size such as the two hashes
// of an HMAC under a fresh key.
func (h *Hasher) SumPadded(msgs [][]byte, out [][32]byte) {
	if len(msgs) == 0 {
		return
	}
	n := len(msgs[0]) / 64
	if len(msgs) > Lanes || len(out) < len(msgs) || n == 0 || len(msgs[0])%64 != 0 {
		panic("sha256x16: SumPadded needs 1 to 16 messages of 64·n bytes and room for their sums")
	}
	for i := range Lanes {
		seg, stride := h.idle[:], uintptr(0)
		if i < len(msgs) {
			if len(msgs[i]) != 64*n {
				panic("sha256x16: SumPadded messages differ in length")
			}
			seg, stride = msgs[i], 64
		}
		for j := range 8 {
			h.state[j][i] = iv[j]
		}
		h.segs[i], h.strides[i] = seg, stride
	}
	h.run(n)
	for i := range msgs {
		for j := range 8 {
			binary.BigEndian.PutUint32(out[i][4*j:], h.state[j][i])
		}
	}
}

// run compresses n blocks in every lane, lane i reading from h.segs[i]
// and advancing by h.strides[i], then lets go of the segments. The kernel
// gets their addresses only here, right before the call: Go may move a
// stack (and a message that lives on it) between calls, never during one.
func (h *Hasher) run(n int) {
	if hasKernel {
		for i, seg := range h.segs {
			h.ptrs[i] = uintptr(unsafe.Pointer(unsafe.SliceData(seg)))
		}
		blocks(&h.state, &h.ptrs, &h.strides, n)
	} else {
		blocksGeneric(&h.state, &h.segs, &h.strides, n)
	}
	clear(h.segs[:])
}

// start puts m in lane i.
func (h *Hasher) start(i int, m *Message) {
	h.lanes[i] = lane{m: m}
	for j := range 8 {
		h.state[j][i] = iv[j]
	}
	h.segment(i)
}

// segment sets up lane i's next run of blocks: whole blocks straight from
// the current part when it has any left, else one block assembled in
// scratch from the parts' remaining bytes, or the last one or two blocks
// with the padding.
func (h *Hasher) segment(i int) {
	l := &h.lanes[i]
	for l.part < len(l.m.Parts) && l.off == len(l.m.Parts[l.part]) {
		l.part, l.off = l.part+1, 0
	}
	if l.part < len(l.m.Parts) {
		if n := (len(l.m.Parts[l.part]) - l.off) / 64; n > 0 {
			l.left, l.inBuf = n, false
			l.length += uint64(64 * n)
			return
		}
	}
	buf := &h.scratch[i]
	k := 0
	for k < 64 && l.part < len(l.m.Parts) {
		c := copy(buf[k:64], l.m.Parts[l.part][l.off:])
		k += c
		l.off += c
		if l.off == len(l.m.Parts[l.part]) {
			l.part, l.off = l.part+1, 0
		}
	}
	for l.part < len(l.m.Parts) && l.off == len(l.m.Parts[l.part]) {
		l.part, l.off = l.part+1, 0
	}
	l.length += uint64(k)
	l.inBuf, l.bufOff = true, 0
	if k == 64 && l.part < len(l.m.Parts) {
		l.left = 1 // more message follows
		return
	}
	if k == 64 {
		// The message ends on this block: the padding is a block of its own.
		l.left = 2
		clear(buf[64:])
		buf[64] = 0x80
		binary.BigEndian.PutUint64(buf[120:], l.length*8)
		l.last = true
		return
	}
	buf[k] = 0x80
	clear(buf[k+1:])
	l.left = 1
	if k+1+8 > 64 {
		l.left = 2
	}
	binary.BigEndian.PutUint64(buf[64*l.left-8:], l.length*8)
	l.last = true
}
