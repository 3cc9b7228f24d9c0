package worm

import (
	"testing"
	"time"

	"github.com/indelible-worm/indelible/revfs"
)

// Fourth red-team round, device side of rule 2 (commit 0d81df7): a
// protected file's committed range under overlapping extents that agree
// is an unknown range (revfs.StallUnknownTree), which the device raises
// only once it has stayed for unknownTreeAfter (commit.lost_after, or 10
// minutes). The running kernel refuses such an inode outright
// (ext4_valid_extent_entries: "structure needs cleaning"; revfs/ext4
// TestRedTeam4OverlapKernelRefuses): while it lasts, the committed data is
// hidden from every reader on the host.

// TestRedTeam4UnknownTreeToggleNeverRaised: watchStalls keeps an
// unknown-tree range's window while a range of that kind starts at the
// same offset (Kind+Off). The host alternates between two forged inodes,
// each hiding the committed range (e.g. big.log with its first extent
// duplicated, unknown from 0, and with its last extent duplicated,
// unknown from 24576: both refused by the kernel), every 5 minutes: each
// check finds a "new" range and starts its window again. The file stays
// unreadable for ever and the indicator never comes. (With one offset it
// comes after 10 minutes: checked first, as the control.)
func TestRedTeam4UnknownTreeToggleNeverRaised(t *testing.T) {
	const hidden = 70000 // the committed size the forged inodes hide
	unknownAt := func(off int64) revfs.Stall {
		return revfs.Stall{Kind: revfs.StallUnknownTree, Off: off, Len: hidden - off, Device: -1}
	}
	setStall := func(r *rig, se *stallEngine, s revfs.Stall) {
		r.dev.mu.Lock()
		se.stalls = []revfs.Stall{s}
		r.eng.coherent = 6 // the committed prefix: nothing past it is sealed
		r.dev.mu.Unlock()
	}
	indicators := func(r *rig) int {
		_, st := r.fileStatus(t)
		return st.Indicators
	}

	// Control: one offset for 10 minutes raises the indicator.
	r, se := newStallRig(t, 0)
	r.appendBytes(t, []byte("hello\n"))
	waitSealed(t, r, 6)
	r.dev.mu.Lock()
	r.eng.size = hidden
	r.dev.mu.Unlock()
	setStall(r, se, unknownAt(0))
	r.waitPass(t)
	r.clk.add(defaultUnknownTreeAfter)
	r.waitPass(t)
	if n := indicators(r); n != 1 {
		t.Fatalf("control: %d indicators after %v under one unknown range, want 1", n, defaultUnknownTreeAfter)
	}

	// The attack: the start moves every 5 minutes, for 2 hours.
	r, se = newStallRig(t, 0)
	r.appendBytes(t, []byte("hello\n"))
	waitSealed(t, r, 6)
	r.dev.mu.Lock()
	r.eng.size = hidden
	r.dev.mu.Unlock()
	offs := []int64{0, 24576}
	setStall(r, se, unknownAt(offs[0]))
	r.waitPass(t)
	var hiddenFor time.Duration
	for i := 1; hiddenFor < 2*time.Hour; i++ {
		r.clk.add(5*time.Minute - time.Second)
		r.waitPass(t)
		setStall(r, se, unknownAt(offs[i%2]))
		r.clk.add(time.Second) // the next check (stallCheckEvery) sees the other inode
		r.waitPass(t)
		hiddenFor += 5 * time.Minute
	}
	if n := indicators(r); n == 0 {
		t.Fatalf("HOLE: the committed range stayed under forged overlapping extents (unreadable by the kernel) for %v, "+
			"its unknown range moving between offsets %v every 5 minutes: no indicator (unknownTreeAfter is %v)",
			hiddenFor, offs, defaultUnknownTreeAfter)
	}
}

// TestRedTeam4UnknownTreeDutyCycle: with the unknown-tree ranges of a
// file judged as one episode (the mend of the toggle hole), an episode
// ends after checks have seen no unknown range for unknownClearAfter (a
// minute). The host keeps the committed range under forged overlapping
// extents for 9 minutes, shows the whole copy (the sealed map) for a
// little over a minute, and hides it again: each episode ends before the
// deadline, and the committed data is unreadable by the kernel 90% of
// the time, for ever, without an indicator. (On 0d81df7, without the
// episode rule, the minute of the whole copy clears the marks too: it
// fails there as well.)
func TestRedTeam4UnknownTreeDutyCycle(t *testing.T) {
	const hidden = 70000
	r, se := newStallRig(t, 0)
	r.appendBytes(t, []byte("hello\n"))
	waitSealed(t, r, 6)
	set := func(stalls []revfs.Stall) {
		r.dev.mu.Lock()
		r.eng.size = hidden
		se.stalls = stalls
		r.eng.coherent = 6
		if len(stalls) == 0 {
			r.eng.coherent = hidden // the whole copy: nothing unknown, nothing stalled
		}
		r.dev.mu.Unlock()
	}
	unknown := []revfs.Stall{{Kind: revfs.StallUnknownTree, Off: 0, Len: hidden, Device: -1}}
	set(unknown)
	r.waitPass(t)
	var hiddenFor, shownFor time.Duration
	for hiddenFor < 3*time.Hour {
		for step := 0; step < 9; step++ { // 9 minutes hidden, a check every minute
			r.clk.add(time.Minute)
			r.waitPass(t)
		}
		hiddenFor += 9 * time.Minute
		set(nil)
		r.clk.add(time.Second)
		r.waitPass(t)
		r.clk.add(61 * time.Second)
		r.waitPass(t)
		shownFor += 62 * time.Second
		set(unknown)
		r.clk.add(time.Second)
		r.waitPass(t)
	}
	if _, st := r.fileStatus(t); st.Indicators == 0 {
		t.Fatalf("HOLE: the committed range was hidden (forged overlapping extents, unreadable by the kernel) for %v and shown for %v, "+
			"in 9-minute episodes separated by a minute of the whole copy: no indicator (unknownTreeAfter %v)",
			hiddenFor, shownFor, defaultUnknownTreeAfter)
	}
}
