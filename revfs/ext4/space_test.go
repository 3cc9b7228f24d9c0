package ext4

import (
	"bytes"
	"testing"

	"github.com/indelible-worm/indelible/revfs/ext4/layout"
)

// FreeBlocks follows the group descriptors as the host writes them: it
// starts at what mkfs and debugfs left (debugfs keeps the superblock's
// count exact) less ext4's metadata reserve, and grows when a file is
// removed.
func TestFreeBlocksFollowsDescriptors(t *testing.T) {
	r := openRig(t, loadImage(t, "b4k-nojournal.img"), nil, "var/log/app.log")
	info, err := layout.Inspect(bytes.NewReader(r.img.b))
	if err != nil {
		t.Fatal(err)
	}
	free, total := r.e.FreeBlocks()
	resv := min(info.BlocksCount/50, 4096)
	if free != info.FreeBlocks-resv || total != info.BlocksCount {
		t.Fatalf("at open: %d/%d, superblock says %d/%d (reserve %d)", free, total, info.FreeBlocks, info.BlocksCount, resv)
	}
	next := r.debugfs("rm var/log/big.log")
	if vs := r.feed(next, changedBlocks(r.img.b, next, r.bs)); len(vs) != 0 {
		t.Fatalf("rm: %v", vs)
	}
	after, _ := r.e.FreeBlocks()
	want := free + (70000+uint64(r.bs)-1)/uint64(r.bs)
	if after != want {
		t.Fatalf("after rm of a 70000-byte file: %d free, want %d", after, want)
	}
	// The count kept up to date descriptor by descriptor is the full sum.
	r.e.freeValid = false
	if full, _ := r.e.FreeBlocks(); full != after {
		t.Fatalf("incremental count %d, full sum %d", after, full)
	}
	// A descriptor block that no longer parses counts as full, never as
	// more free space than the volume has.
	gdt := int64(r.e.gdtFirst) * r.bs
	r.write(gdt, bytes.Repeat([]byte{0xff}, int(r.bs)))
	if f, tot := r.e.FreeBlocks(); f > tot {
		t.Fatalf("forged descriptors: %d free of %d", f, tot)
	}
}

// PendingRecord's count, taken between CheckWrite and Wrote of a commit
// block, is the one FreeBlocks reports once Wrote has applied the
// transaction; other writes are not expensive to record.
func TestPendingRecordPredictsFreeBlocks(t *testing.T) {
	r := openRig(t, loadImage(t, "b4k-journal.img"), nil, "var/log/app.log")
	before, _ := r.e.FreeBlocks()
	next := r.debugfs("rm var/log/big.log")
	homes := changedBlocks(r.img.b, next, r.bs)
	copies := make([][]byte, len(homes))
	for i, h := range homes {
		copies[i] = next[int64(h)*r.bs : int64(h+1)*r.bs]
	}
	w := newTxWriter(r)
	if vs := r.e.CheckWrite(0, r.img.b[:r.bs]); len(vs) != 0 {
		t.Fatalf("rewriting block 0: %v", vs)
	}
	if expensive, free, _ := r.e.PendingRecord(); expensive || free != before {
		t.Fatalf("block 0: expensive %v, free %d (now %d)", expensive, free, before)
	}
	r.e.Wrote(0, r.img.b[:r.bs])
	off, commit := w.stage(homes, copies)
	if vs := r.e.CheckWrite(off, commit); len(vs) != 0 {
		t.Fatalf("commit of the rm: %v", vs)
	}
	expensive, predicted, total := r.e.PendingRecord()
	copy(r.img.b[off:], commit)
	r.e.Wrote(off, commit)
	free, tot := r.e.FreeBlocks()
	if !expensive || predicted != free || total != tot {
		t.Fatalf("commit block: expensive %v, predicted %d/%d, FreeBlocks after Wrote %d/%d", expensive, predicted, total, free, tot)
	}
	if free <= before {
		t.Fatalf("the rm freed nothing: %d free before, %d after", before, free)
	}
}
