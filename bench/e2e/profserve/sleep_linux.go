package main

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// sleep blocks the thread in nanosleep with its timer slack at 1 ns (Linux
// lets a sleep run up to 50 µs late by default), so that the wait neither
// spins nor goes through Go's timers (whose sub-millisecond sleeps can
// become a millisecond when the thread parks in the poller).
func sleep(dur time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	ts := unix.NsecToTimespec(int64(dur))
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}
