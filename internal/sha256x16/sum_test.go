package sha256x16

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// randomMessages returns n messages of up to three parts whose lengths
// cluster around block boundaries, where padding and part joins go wrong.
func randomMessages(r *rand.Rand, n int) []Message {
	lengths := []int{0, 1, 3, 40, 55, 56, 63, 64, 65, 119, 120, 128, 129, 4096, 4136}
	ms := make([]Message, n)
	for i := range ms {
		for j := range ms[i].Parts {
			var ln int
			if r.IntN(3) == 0 {
				ln = r.IntN(5000)
			} else {
				ln = lengths[r.IntN(len(lengths))]
			}
			p := make([]byte, ln)
			for k := range p {
				p[k] = byte(r.Uint32())
			}
			ms[i].Parts[j] = p
		}
	}
	return ms
}

func want(m *Message) [32]byte {
	return sha256.Sum256(bytes.Join(m.Parts[:], nil))
}

func TestSumMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Hasher
	for _, n := range []int{0, 1, 2, 15, 16, 17, 33, 100} {
		ms := randomMessages(r, n)
		h.Sum(ms)
		for i := range ms {
			if w := want(&ms[i]); ms[i].Sum != w {
				t.Fatalf("%d messages: message %d (parts %d/%d/%d bytes): got %x, want %x", n, i,
					len(ms[i].Parts[0]), len(ms[i].Parts[1]), len(ms[i].Parts[2]), ms[i].Sum, w)
			}
		}
	}
	t.Logf("vector kernel available: %v; SHA extensions: %v; stragglers handed off at %d busy lanes or fewer", Available(), hasSHAExt, handoffLanes)
}

// TestKernelMatchesGeneric runs the block function the package uses (the
// AVX-512 kernel where there is one) against the plain Go one on the same
// lanes: different data, strides and starting states per lane.
func TestKernelMatchesGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const n = 5
	var data [Lanes][64 * n]byte
	var s1, s2 [8][Lanes]uint32
	var p1, p2, st [Lanes]uintptr
	var segs [Lanes][]byte
	for i := range Lanes {
		for k := range data[i] {
			data[i][k] = byte(r.Uint32())
		}
		for j := range 8 {
			s1[j][i] = r.Uint32()
		}
		st[i] = 64 * uintptr(i%2) // odd lanes advance, even lanes repeat their first block
	}
	s2 = s1
	for i := range Lanes {
		p1[i] = uintptr(unsafe.Pointer(&data[i][0]))
		segs[i] = data[i][:]
	}
	p2 = p1
	if !Available() {
		t.Skip("no AVX-512 here: only the plain Go block function runs")
	}
	blocks(&s1, &p1, &st, n)
	blocksGeneric(&s2, &segs, &st, n)
	for i := range Lanes {
		p2[i] += st[i] * n
	}
	if s1 != s2 {
		t.Fatalf("kernel and generic states differ:\n%x\n%x", s1, s2)
	}
	if p1 != p2 {
		t.Fatalf("kernel and generic pointers differ")
	}
}

// pad pads m as SHA-256 does.
func pad(m []byte) []byte {
	p := append(bytes.Clone(m), 0x80)
	for len(p)%64 != 56 {
		p = append(p, 0)
	}
	return binary.BigEndian.AppendUint64(p, uint64(len(m))*8)
}

func TestSumPaddedMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var h Hasher
	for _, size := range []int{0, 16, 55, 56, 80, 96, 200} {
		for _, count := range []int{1, 7, 16} {
			msgs := make([][]byte, count)
			padded := make([][]byte, count)
			for i := range msgs {
				msgs[i] = make([]byte, size)
				for k := range msgs[i] {
					msgs[i][k] = byte(r.Uint32())
				}
				padded[i] = pad(msgs[i])
			}
			out := make([][32]byte, count)
			h.SumPadded(padded, out)
			for i := range msgs {
				if w := sha256.Sum256(msgs[i]); out[i] != w {
					t.Fatalf("%d messages of %d bytes: message %d: got %x, want %x", count, size, i, out[i], w)
				}
			}
		}
	}
}

// TestSumHandsOff: with stragglers handed off to crypto/sha256 at every
// threshold (also where the vector kernel does not run), the sums stay
// right, for messages of many parts and for long single-part ones.
func TestSumHandsOff(t *testing.T) {
	if !stateFormatOK() {
		t.Fatal("Sum cannot write crypto/sha256's saved state (its layout changed?): stragglers are no longer handed off")
	}
	saved := handoffLanes
	defer func() { handoffLanes = saved }()
	r := rand.New(rand.NewPCG(5, 6))
	for threshold := 1; threshold <= Lanes; threshold++ {
		handoffLanes = threshold
		handed := false
		for _, n := range []int{1, 5, 16, 17, 40} {
			ms := randomMessages(r, n)
			for i := range min(n, 6) { // a few long single-part messages of unequal lengths
				ms[i].Parts = [3][]byte{make([]byte, 1000+r.IntN(40000)), nil, nil}
				for k := range ms[i].Parts[0] {
					ms[i].Parts[0][k] = byte(r.Uint32())
				}
			}
			var h Hasher
			h.Sum(ms)
			for i := range ms {
				if w := want(&ms[i]); ms[i].Sum != w {
					t.Fatalf("hand-off below %d lanes, %d messages: message %d: got %x, want %x", threshold, n, i, ms[i].Sum, w)
				}
			}
			handed = handed || h.scalar != nil
		}
		if !handed {
			t.Fatalf("hand-off below %d lanes: no lane was ever handed off", threshold)
		}
	}
}

func FuzzSum(f *testing.F) {
	f.Add([]byte("abc"), uint16(3), uint16(0), uint8(17))
	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint16, count uint8) {
		n := int(count % 40)
		ms := make([]Message, n)
		for i := range ms {
			d := data[min(i, len(data)):]
			a := min(int(cut1)+i, len(d))
			b := min(a+int(cut2), len(d))
			ms[i].Parts = [3][]byte{d[:a], d[a:b], d[b:]}
		}
		var h Hasher
		h.Sum(ms)
		for i := range ms {
			if w := want(&ms[i]); ms[i].Sum != w {
				t.Fatalf("message %d: got %x, want %x", i, ms[i].Sum, w)
			}
		}
	})
}

func BenchmarkSum4KiB(b *testing.B) {
	ms := make([]Message, 64)
	buf := make([]byte, 4096*len(ms))
	for i := range ms {
		ms[i].Parts[0] = buf[4096*i : 4096*(i+1)]
	}
	var h Hasher
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		h.Sum(ms)
	}
}

// BenchmarkSumUnequal: sixteen messages of 128 to 896 KiB, as a seal
// batch of files that grew by different amounts; the long ones finish with
// few lanes busy (see handoffLanes).
func BenchmarkSumUnequal(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	ms := make([]Message, Lanes)
	total := 0
	for i := range ms {
		ms[i].Parts[0] = make([]byte, 128<<10+r.IntN(768<<10))
		total += len(ms[i].Parts[0])
	}
	var h Hasher
	b.SetBytes(int64(total))
	for b.Loop() {
		h.Sum(ms)
	}
}

func BenchmarkStdlib4KiB(b *testing.B) {
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	for b.Loop() {
		sha256.Sum256(buf)
	}
}

// BenchmarkSumShort: sixteen 80-byte messages (an HMAC ratchet step's
// inner hash), where the per-message work around the kernel dominates.
func BenchmarkSumShort(b *testing.B) {
	ms := make([]Message, Lanes)
	pad := make([]byte, 64)
	head := make([]byte, 16)
	for i := range ms {
		ms[i].Parts = [3][]byte{pad, head, nil}
	}
	var h Hasher
	b.SetBytes(80 * Lanes)
	for b.Loop() {
		h.Sum(ms)
	}
}
