package kernel

import (
	"bytes"
	"math/rand"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Honest writers that make only part of a file durable: the device must
// neither seal bytes the host never wrote (zeroes of a block it has not
// written again) nor call the host's later write of them an attack. Both
// used to happen (found by a false-positive hunt against the kernel).

// data=journal: sync_file_range after each append writes the partial last
// block home (a checkpoint) and, in the same flush epoch, logs the
// completed block in the next transaction; the copy is the newer version.
func TestSyncFileRangeAppends(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			f, err := os.OpenFile(k.path(k.logs[0]), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			rng := rand.New(rand.NewSource(0))
			var want []byte
			for i := 0; i < 400; i++ {
				rec := bytes.Repeat(line(i), 1+rng.Intn(100))
				if _, err := f.Write(rec); err != nil {
					t.Fatalf("append %d: %v%s", i, err, k.eventSummary())
				}
				want = append(want, rec...)
				const how = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
				if err := unix.SyncFileRange(int(f.Fd()), 0, 0, how); err != nil {
					t.Fatalf("sync_file_range %d: %v%s", i, err, k.eventSummary())
				}
			}
			k.waitSealed(sealTimeout)
			k.noIndicators()
			if got := k.realLog(k.logs[0]); !bytes.Equal(got, want) {
				t.Fatalf("real log: %d bytes, want the %d appended (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
		})
	}
}

// An O_DSYNC append makes only its own range durable and commits the size
// past a block that a plain append completed in the page cache only: that
// block's older, partial version is all the disk holds until writeback.
func TestODsyncAppendLeavesEarlierBlockDirty(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			k := newDevice(t, devOpts{journal: mode, quiescence: 300 * time.Millisecond})
			p := k.path(k.logs[0])
			rec := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
			appendFile(t, p, rec(5000, 'a'), true) // the second block home with 904 bytes
			k.waitSealed(sealTimeout)
			appendFile(t, p, rec(4000, 'b'), false) // completes it in the page cache only
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|unix.O_DSYNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(rec(8000, 'c')); err != nil {
				t.Fatal(err)
			}
			f.Close()
			time.Sleep(2 * time.Second) // the device would have sealed up to 17000 by now
			if got := k.realLog(k.logs[0]); bytes.IndexByte(got[min(len(got), 5000):], 0) >= 0 {
				t.Fatalf("the real log holds zeroes the host never wrote, from %d", 5000+bytes.IndexByte(got[5000:], 0))
			}
			k.waitSealed(sealTimeout) // syncs: the second block goes home
			k.noIndicators()
			want := append(append(rec(5000, 'a'), rec(4000, 'b')...), rec(8000, 'c')...)
			if got := k.realLog(k.logs[0]); !bytes.Equal(got, want) {
				t.Fatalf("real log: %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
		})
	}
}
