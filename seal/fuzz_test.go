package seal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// seedStore builds a small real store (closed, two files, one crash-free
// reopen) and returns its log, records and ratchet-state bytes.
func seedStore(f *testing.F) (*testStore, []byte, []byte, []byte) {
	ts := newTestStore(f, 2048, 3)
	s := ts.open(f, Options{})
	fill(f, s, twoFiles, 4)
	s.Close()
	lb, _ := os.ReadFile(filepath.Join(ts.store, LogName))
	rb, _ := os.ReadFile(filepath.Join(ts.store, RecordsName))
	sb, _ := os.ReadFile(ts.dev + StateSuffix)
	return ts, lb, rb, sb
}

func FuzzParseEntry(f *testing.F) {
	_, lb, _, _ := seedStore(f)
	for i := int64(0); entryPos(i+1) <= int64(len(lb)); i++ {
		f.Add(lb[entryPos(i):entryPos(i+1)])
	}
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEntry(b)
		if err != nil {
			if len(b) >= EntrySize {
				t.Fatalf("rejected %d bytes", len(b))
			}
			return
		}
		if got := e.AppendBinary(nil); !bytes.Equal(got, b[:EntrySize]) {
			t.Fatal("entry does not round-trip")
		}
		_ = e.String()
	})
}

func FuzzParseKeyHeader(f *testing.F) {
	ts, _, _, _ := seedStore(f)
	kb, _ := os.ReadFile(ts.dev)
	f.Add(kb[:KeyHeaderSize], int64(len(kb)))
	f.Add(kb[:8], int64(-1))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		h, err := ParseKeyHeader(b, size)
		if err != nil {
			return
		}
		if h.Burnt < KeyHeaderSize || (size >= 0 && h.Burnt > uint64(size)) {
			t.Fatalf("accepted burnt %d for size %d", h.Burnt, size)
		}
		out, _ := h.MarshalBinary()
		if !bytes.Equal(out, b[:KeyHeaderSize]) {
			t.Fatal("header does not round-trip")
		}
	})
}

func FuzzParseRecords(f *testing.F) {
	_, _, rb, _ := seedStore(f)
	f.Add(rb)
	rep, _ := encodeRecord(&Record{Type: RecordRepair, Entry: 9, Repair: &Repair{Committed: 9, Found: 11, DroppedEntries: 2, Files: []FileRepair{{ID: 3, OldSize: 10, NewSize: 5}}}})
	f.Add(append(rep, make([]byte, KeySize)...))
	tm, _ := encodeRecord(&Record{Type: RecordTime, Entry: 3})
	f.Add(append(tm, make([]byte, KeySize)...))
	tm[5] = 1 // a version 1 record, as stores written before anchors hold
	f.Add(append(tm, make([]byte, KeySize)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, end, err := ParseRecords(b)
		if err == nil && end != int64(len(b)) {
			t.Fatalf("no error but stopped at %d of %d", end, len(b))
		}
		var fe *FormatError
		if err != nil && !errors.As(err, &fe) {
			t.Fatalf("error %v is not a FormatError", err)
		}
		// The streaming reader agrees with the whole-buffer parser.
		rr := NewRecordReader(bytes.NewReader(b))
		for i := 0; ; i++ {
			r, err := rr.Next()
			if err != nil {
				if i != len(recs) || rr.Offset() != end {
					t.Fatalf("reader stopped after %d records at %d; parser %d at %d", i, rr.Offset(), len(recs), end)
				}
				break
			}
			if i >= len(recs) || r.Off != recs[i].Off || !bytes.Equal(r.Raw, recs[i].Raw) {
				t.Fatalf("reader record %d differs", i)
			}
		}
		for _, r := range recs {
			// Whatever parses re-encodes to the same bytes.
			out, err := encodeRecord(&r)
			if err != nil || !bytes.Equal(out, r.Raw) {
				t.Fatalf("record at %d does not round-trip: %v\n%x\n%x", r.Off, err, out, r.Raw)
			}
		}
	})
}

func FuzzParseRatchetState(f *testing.F) {
	_, _, _, sb := seedStore(f)
	f.Add(sb)
	if st, err := ParseRatchetState(sb); err == nil {
		f.Add(marshalStateV1(&st))
		st.Target += 3 // a commit in flight
		f.Add(st.marshal())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseRatchetState(b)
		if err != nil {
			return
		}
		if st.Version == 2 && !bytes.Equal(st.marshal(), b) {
			t.Fatal("state does not round-trip")
		}
		if st.Target < st.Committed {
			t.Fatal("target below committed")
		}
	})
}

// FuzzStoreFiles feeds hostile .SEALFS.LOG and side-record bytes to Verify
// and Open on an otherwise real store: they must report, never panic or hang.
func FuzzStoreFiles(f *testing.F) {
	ts, lb, rb, _ := seedStore(f)
	f.Add(lb, rb)
	f.Add(lb[:len(lb)-40], rb[:len(rb)/2])
	f.Add(lb[:8], []byte{})
	keyb, _ := os.ReadFile(ts.dev)
	stb, _ := os.ReadFile(ts.dev + StateSuffix)
	app, _ := os.ReadFile(filepath.Join(ts.store, "var/log/app.log"))
	auth, _ := os.ReadFile(filepath.Join(ts.store, "auth.log"))
	f.Fuzz(func(t *testing.T, logb, recb []byte) {
		d := t.TempDir()
		store := filepath.Join(d, "store")
		os.MkdirAll(filepath.Join(store, SealMetaDir), 0o750)
		os.MkdirAll(filepath.Join(store, "var/log"), 0o750)
		os.WriteFile(filepath.Join(store, LogName), logb, 0o640)
		os.WriteFile(filepath.Join(store, RecordsName), recb, 0o640)
		os.WriteFile(filepath.Join(store, ParamsName), []byte("3\n"), 0o640)
		os.WriteFile(filepath.Join(store, "var/log/app.log"), app, 0o640)
		os.WriteFile(filepath.Join(store, "auth.log"), auth, 0o640)
		dev := filepath.Join(d, "dev.key")
		os.WriteFile(dev, keyb, 0o600)
		os.WriteFile(dev+StateSuffix, stb, 0o600)
		// Verified side by side (where the CPU can) and one entry at a
		// time, the store gets the same report, in the same order.
		verify := func(vec bool) (*Summary, []string, error) {
			defer func(old bool) { vectorMAC = old }(vectorMAC)
			vectorMAC = vec
			var out []string
			sum, err := Verify(store, VerifyOptions{AuditorKey: ts.aud, DeviceKey: dev,
				OnProblem: func(p Problem) { out = append(out, p.String()) },
				OnEntry:   func(r EntryResult) { out = append(out, fmt.Sprint(r.Index, r.OK, r.Why)) }})
			return sum, out, err
		}
		sum, one, err := verify(false)
		if err == nil && sum.OK() && !bytes.Equal(logb, lb) {
			// Only the real log bytes may verify (or a prefix ending a block
			// whose cut is then caught through the device key).
			t.Fatalf("altered log verified: %v", sum)
		}
		if vectorMAC {
			sum2, many, err2 := verify(true)
			if (err == nil) != (err2 == nil) || !slices.Equal(one, many) || err == nil && sum.String() != sum2.String() {
				t.Fatalf("one at a time and side by side differ:\n%v %v %q\n%v %v %q", sum, err, one, sum2, err2, many)
			}
		}
		if s, err := Open(store, dev, Options{}); err == nil {
			s.Close()
		}
	})
}
