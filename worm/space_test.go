package worm

import (
	"errors"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/revfs"
)

// spaceEngine is a scriptedEngine that also reports free space.
type spaceEngine struct {
	*scriptedEngine
	free, total uint64
}

func (e *spaceEngine) FreeBlocks() (uint64, uint64) { return e.free, e.total }

func newSpaceRig(t *testing.T, resp Response) (*Device, *spaceEngine, *memSealer) {
	t.Helper()
	var eng *spaceEngine
	r := newRigWith(t, resp, func(se *scriptedEngine) revfs.Engine {
		eng = &spaceEngine{scriptedEngine: se, free: 500, total: 1000}
		return eng
	}, func(c *Config) { c.VolumeFullPercent = 10 })
	return r.dev, eng, r.sealer
}

// volume-full is raised once, by the watched write that takes free space
// under the threshold, and again only after space rose above it.
func TestVolumeFullRaisedOnceAndRearmed(t *testing.T) {
	d, eng, s := newSpaceRig(t, ResponseHoneypot)
	write := func(free uint64) {
		t.Helper()
		eng.free = free
		if _, err := d.WriteAt([]byte("x"), eng.dataStart+100); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int { return strings.Count(string(s.get(EventLogID)), "volume-full") }
	write(200)
	if st := d.Status(); st.Indicators != 0 {
		t.Fatalf("20%% free raised %d indicators", st.Indicators)
	}
	write(99) // 9.9%: crossed
	write(50)
	write(10)
	if st := d.Status(); st.Indicators != 1 || st.Recent[0].Kind != "volume-full" || st.Recent[0].Off != eng.dataStart+100 || st.Recent[0].Len != 1 {
		t.Fatalf("after crossing: %+v", st)
	}
	write(100) // exactly 10%: no longer under, re-armed
	write(80)
	if st := d.Status(); st.Indicators != 2 {
		t.Fatalf("after re-arming and crossing again: %d indicators", st.Indicators)
	}
	waitEvents(t, &rig{sealer: s}, 2)
	if count() != 2 {
		t.Fatalf("event log: %q", s.get(EventLogID))
	}
}

// Under the readonly response the crossing write fails and the device
// refuses everything after it.
func TestVolumeFullReadOnly(t *testing.T) {
	d, eng, _ := newSpaceRig(t, ResponseReadOnly)
	eng.free = 5
	if _, err := d.WriteAt([]byte("x"), eng.dataStart); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("crossing write: %v, want ErrRefused", err)
	}
	if _, err := d.WriteAt([]byte("x"), 0); !errors.Is(err, blockdev.ErrRefused) {
		t.Fatalf("later write: %v", err)
	}
	if !d.Status().ReadOnly {
		t.Fatal("not read-only")
	}
}
