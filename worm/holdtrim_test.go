package worm

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/revfs"
)

// holdingEngine holds every TRIM that starts at hold (revfs.TrimHolder).
type holdingEngine struct {
	*scriptedEngine
	hold int64
	asks int
}

func (e *holdingEngine) HoldTrim(off, n int64) bool {
	e.asks++
	return off == e.hold
}

var _ revfs.TrimHolder = (*holdingEngine)(nil)

// A TRIM the engine holds is answered with success and left undone: the
// blocks keep their bytes, the engine hears of no discard, nothing is
// raised. WRITE_ZEROES, which must zero, is never held.
func TestHeldTrimLeftUndone(t *testing.T) {
	var h *holdingEngine
	r := newRigWith(t, ResponseReadOnly, func(e *scriptedEngine) revfs.Engine {
		h = &holdingEngine{scriptedEngine: e, hold: e.dataStart}
		return h
	}, nil)
	r.appendBytes(t, []byte("committed"))
	r.clk.add(2 * time.Second)
	waitSealed(t, r, 9)
	before := make([]byte, 4096)
	r.img.ReadAt(before, r.eng.dataStart)
	if err := r.dev.Trim(r.eng.dataStart, 4096); err != nil {
		t.Fatalf("held trim: %v", err)
	}
	after := make([]byte, 4096)
	r.img.ReadAt(after, r.eng.dataStart)
	if !bytes.Equal(before, after) || r.eng.discarded != 0 || h.asks != 1 {
		t.Fatalf("held trim: bytes kept %v, discarded %d, asked %d", bytes.Equal(before, after), r.eng.discarded, h.asks)
	}
	if st := r.dev.Status(); st.Indicators != 0 || st.ReadOnly {
		t.Fatalf("held trim raised: %+v", st)
	}
	if err := r.dev.WriteZeroes(r.eng.dataStart, 4096, true); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("zeroing committed data: %v", err)
	}
	if h.asks != 1 {
		t.Fatal("WRITE_ZEROES asked to be held")
	}
}
