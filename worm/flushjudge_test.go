package worm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/revfs"
)

// judgingEngine is a scriptedEngine that finds violations at a flush, as
// revfs/ext4 does for journal transactions no write completed.
type judgingEngine struct {
	*scriptedEngine
	atFlush []revfs.Violation
}

func (e *judgingEngine) FlushViolations() []revfs.Violation {
	vs := e.atFlush
	e.atFlush = nil
	return vs
}

// DiscardAtFlush writes a marker at offset 0, for the test to find.
func (e *judgingEngine) DiscardAtFlush(write func(b []byte, off int64) error) error {
	return write([]byte("undone"), 0)
}

// What an engine judges at a FLUSH gets the configured response there.
func TestFlushViolations(t *testing.T) {
	for _, resp := range []Response{ResponseReadOnly, ResponseDiscard, ResponseHoneypot} {
		t.Run(string(resp), func(t *testing.T) {
			var eng *judgingEngine
			r := newRigWith(t, resp, func(se *scriptedEngine) revfs.Engine {
				eng = &judgingEngine{scriptedEngine: se}
				return eng
			}, nil)
			if err := r.dev.Flush(); err != nil {
				t.Fatalf("a flush with nothing to judge: %v", err)
			}
			r.dev.mu.Lock()
			eng.atFlush = []revfs.Violation{{Kind: revfs.KindInodeFreed, File: 12, Detail: "forged transaction"}}
			r.dev.mu.Unlock()
			err := r.dev.Flush()
			_, werr := r.dev.WriteAt([]byte("x"), 4096)
			switch resp {
			case ResponseReadOnly:
				if !errors.Is(err, blockdev.ErrRefused) || !errors.Is(werr, blockdev.ErrRefused) {
					t.Fatalf("flush: %v, later write: %v; want both refused", err, werr)
				}
			default:
				if err != nil || werr != nil {
					t.Fatalf("flush: %v, later write: %v; want both to succeed", err, werr)
				}
			}
			r.dev.mu.Lock()
			frozen := r.dev.frozen[12]
			r.dev.mu.Unlock()
			if frozen != (resp == ResponseHoneypot) {
				t.Fatalf("file frozen: %v under %s", frozen, resp)
			}
			mark := make([]byte, 6)
			r.img.ReadAt(mark, 0)
			if undone := string(mark) == "undone"; undone != (resp != ResponseHoneypot) {
				t.Fatalf("the engine's undo ran: %v under %s", undone, resp)
			}
			waitEvents(t, r, 1)
			if ev := r.sealer.get(EventLogID); !bytes.Contains(ev, []byte(`"op":"flush"`)) || !bytes.Contains(ev, []byte("forged transaction")) {
				t.Fatalf("event log: %s", ev)
			}
		})
	}
}
