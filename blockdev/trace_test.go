package blockdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"
)

// traceBuf is a trace destination that is not an io.Closer.
type traceBuf struct{ bytes.Buffer }

func TestRecorderRoundTrip(t *testing.T) {
	f := newFile(t, 1<<20)
	faulty := &Faulty{Device: f, Fail: func(op Op, off, n int64) error {
		if op == OpWrite && off == 8192 {
			return ErrInjected
		}
		return nil
	}}
	var out traceBuf
	r, err := NewRecorder(faulty, &out)
	if err != nil {
		t.Fatal(err)
	}
	a, b := bytes.Repeat([]byte{1}, 4096), bytes.Repeat([]byte{2}, 512)
	r.WriteAt(a, 0)
	WriteFUA(r, b, 4096)
	if _, err := r.WriteAt(a, 8192); !errors.Is(err, ErrInjected) {
		t.Fatalf("injected failure: %v", err)
	}
	r.Flush()
	r.Trim(65536, 4096)
	r.WriteZeroes(131072, 8192, false)
	r.WriteZeroes(262144, 4096, true)
	landed := make([]byte, 4096)
	if _, err := f.ReadAt(landed, 0); err != nil || !bytes.Equal(landed, a) {
		t.Fatalf("the wrapped device did not get the write: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	want := []TraceOp{
		{Op: TraceWrite, Off: 0, Len: 4096, Data: a},
		{Op: TraceWriteFUA, Off: 4096, Len: 512, Data: b},
		{Op: TraceWrite, Failed: true, Off: 8192, Len: 4096, Data: a},
		{Op: TraceFlush},
		{Op: TraceTrim, Off: 65536, Len: 4096},
		{Op: TraceZero, Off: 131072, Len: 8192},
		{Op: TraceZeroPunch, Off: 262144, Len: 4096},
	}
	var got []TraceOp
	if err := ReadTrace(bytes.NewReader(out.Bytes()), func(op TraceOp) error {
		op.Data = bytes.Clone(op.Data)
		got = append(got, op)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, func(x, y TraceOp) bool {
		return x.Op == y.Op && x.Failed == y.Failed && x.Off == y.Off && x.Len == y.Len && bytes.Equal(x.Data, y.Data)
	}) {
		t.Fatalf("trace:\n got %+v\nwant %+v", got, want)
	}
	// Applied to another device, the trace writes what the first one got.
	g := newFile(t, 1<<20)
	for _, op := range got {
		if err := op.Apply(g); err != nil {
			t.Fatalf("applying %c: %v", op.Op, err)
		}
	}
	replayed := make([]byte, 4096+512)
	g.ReadAt(replayed, 0)
	if !bytes.Equal(replayed, append(bytes.Clone(a), b...)) {
		t.Fatal("the applied trace did not write what was recorded")
	}
	// A trace cut inside a record reports the complete records, then fails.
	cut := out.Bytes()[:out.Len()-5]
	n := 0
	err = ReadTrace(bytes.NewReader(cut), func(TraceOp) error { n++; return nil })
	if !errors.Is(err, ErrBadTrace) || n != len(want)-1 {
		t.Fatalf("cut trace: %d records, %v", n, err)
	}
	// A range whose end is past 2^63 is refused (it passed the device's
	// range checks, which add offset and length).
	rec := []byte(traceMagic + "T\x00")
	rec = binary.LittleEndian.AppendUint64(rec, 4096)
	rec = binary.LittleEndian.AppendUint64(rec, math.MaxInt64-100)
	if err := ReadTrace(bytes.NewReader(rec), func(TraceOp) error { return nil }); !errors.Is(err, ErrBadTrace) {
		t.Fatalf("trim of %d bytes at 4096: %v", int64(math.MaxInt64-100), err)
	}
}

func FuzzReadTrace(f *testing.F) {
	var seed traceBuf
	r, _ := NewRecorder(newFile(f, 1<<16), &seed)
	r.WriteAt([]byte("hello"), 10)
	r.Flush()
	r.WriteZeroes(0, 4096, true)
	r.Close()
	f.Add(seed.Bytes())
	f.Add([]byte(traceMagic + "W\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ReadTrace(bytes.NewReader(b), func(op TraceOp) error {
			if op.Off < 0 || op.Len < 0 || op.Off+op.Len < 0 || int64(len(op.Data)) > MaxTraceWrite {
				t.Fatalf("bad op %+v", op)
			}
			write := op.Op == TraceWrite || op.Op == TraceWriteFUA
			if write && int64(len(op.Data)) != op.Len || !write && op.Data != nil {
				t.Fatalf("op %c with %d data bytes for length %d", op.Op, len(op.Data), op.Len)
			}
			return nil
		})
	})
}
