// Package revfs defines the Reverse File System engine: the part of the WORM
// device that watches the raw blocks a host's filesystem driver writes and
// infers, for each protected file, which bytes were appended and whether any
// write attacks protected data. Filesystem-specific engines live in
// subpackages (revfs/ext4, revfs/exfat); the device core (package worm) owns
// policy, timing and sealing, and talks to an engine only through Engine.
package revfs

import (
	"fmt"
	"time"
)

// FileID identifies a protected file for the life of the device. For ext4 it
// is the inode number; it is also the "inode" recorded in SealFS entries.
type FileID uint64

// ProtectedFile names a file whose appends are sealed.
type ProtectedFile struct {
	ID   FileID
	Path string // path inside the filesystem, relative, slash-separated ("var/log/app.log")
}

// Kind classifies an indicator of compromise.
type Kind int

const (
	KindDataChanged    Kind = iota + 1 // committed bytes of a protected file changed
	KindSizeDecreased                  // size below the committed watermark
	KindInodeFreed                     // inode freed, link count 0, or mode cleared
	KindMappingChanged                 // extent mapping of the committed range changed
	KindTypeChanged                    // no longer a regular file, or no longer uses extents
	KindDirEntry                       // directory entry of a protected file removed or redirected
	KindLayoutChanged                  // superblock/descriptors/journal changed layout (mkfs, resize)
	KindDiscard                        // TRIM or WRITE_ZEROES over committed data or watched metadata
	KindVolumeFull                     // free blocks under the threshold
	KindUnparseable                    // watched metadata no longer parses
)

var kindNames = map[Kind]string{
	KindDataChanged:    "data-changed",
	KindSizeDecreased:  "size-decreased",
	KindInodeFreed:     "inode-freed",
	KindMappingChanged: "mapping-changed",
	KindTypeChanged:    "type-changed",
	KindDirEntry:       "dir-entry",
	KindLayoutChanged:  "layout-changed",
	KindDiscard:        "discard",
	KindVolumeFull:     "volume-full",
	KindUnparseable:    "unparseable",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Violation is one indicator of compromise raised by a host request.
type Violation struct {
	Kind Kind
	File FileID // 0 when no single protected file is concerned (layout, volume)
	// Off and Len are the device byte range of the offending bytes inside the
	// request: the bytes that a "discard" response restores to their old
	// contents so that everything else in the request can still land.
	Off, Len int64
	Detail   string // human-readable, e.g. "size 4096 -> 0 (committed 4096)"
}

func (v Violation) String() string {
	return fmt.Sprintf("%s file=%d bytes=[%d,+%d) %s", v.Kind, v.File, v.Off, v.Len, v.Detail)
}

// FileState is what an engine knows of a protected file's append progress.
type FileState struct {
	ID FileID
	// Size is the newest file size the host has made visible (inode, journal or
	// directory entry), whether or not its data has arrived.
	Size int64
	// Coherent is the length of the longest prefix whose every byte is backed
	// by a block that is mapped, initialised (not an unwritten extent) and
	// written by the host since it was allocated to the file, according to
	// metadata that has reached its point of coherence (a jbd2 commit, or a
	// home write when there is no journal). Coherent <= Size.
	Coherent int64
	// Journalled is true when Coherent was established by a jbd2 commit that
	// carried the size (data=ordered or data=journal): the device may seal at
	// once (journal) or after a short margin (ordered).
	Journalled bool
	// DataJournalled is true when the file's data travels through the journal
	// (data=journal or the inode's JOURNAL_DATA flag).
	DataJournalled bool
	// LastTouch is when a write last touched the file's data or metadata.
	LastTouch time.Time
	// UnknownMap is true when part of the file's block map below its size
	// lies under an extent tree block the host has not written: the
	// device watches it as a StallUnknownTree range even when the
	// coherent prefix has caught up with the size.
	UnknownMap bool
}

// BlockSet is a set of filesystem block numbers. The device core supplies a
// persistent one so that "written since allocation" survives a restart.
type BlockSet interface {
	Add(first, n uint64)
	Remove(first, n uint64)
	// Contains reports whether every block in [first, first+n) is in the set.
	Contains(first, n uint64) bool
}

// Engine is a Reverse File System for one filesystem image. It is not safe
// for concurrent use: the device core serialises calls.
type Engine interface {
	// Watches reports whether the device byte range touches anything the
	// engine must see (protected data, watched metadata, the journal). A write
	// (TRIM, WRITE_ZEROES) that touches nothing watched still goes through
	// Wrote (Discarded), but may be applied to the image before the device
	// core takes its lock, and is not checked.
	Watches(off, length int64) bool
	// CheckWrite returns the violations the write of p at off would cause,
	// without changing any state. The image still holds the old contents.
	CheckWrite(off int64, p []byte) []Violation
	// Wrote records that p now lies at off in the image.
	Wrote(off int64, p []byte)
	// CheckDiscard is CheckWrite for TRIM and WRITE_ZEROES.
	CheckDiscard(off, length int64) []Violation
	// Discarded records a TRIM or WRITE_ZEROES that landed (reads as zeroes).
	Discarded(off, length int64)
	// Flushed marks a host FLUSH: every write before it has landed.
	Flushed()
	// Files returns the state of every protected file, in a stable order.
	Files() []FileState
	// ReadFile reads the file's bytes [off, off+len(p)) from the newest
	// coherent version (the image, or a journalled copy not yet written home).
	// It fails unless the whole range lies within Coherent.
	ReadFile(id FileID, p []byte, off int64) error
	// SetCommitted tells the engine how many bytes of the file are sealed: from
	// then on, any change to them is a violation.
	SetCommitted(id FileID, n int64)
}

// SpaceReporter is implemented by engines that can tell how full the
// filesystem is from the newest metadata the host wrote or committed. The
// device core uses it to raise KindVolumeFull.
type SpaceReporter interface {
	// FreeBlocks returns the free and total block counts.
	FreeBlocks() (free, total uint64)
}

// StallKind says why a range of a protected file holds the coherent prefix
// back although the metadata that maps it is known and trusted.
type StallKind int

const (
	StallNotWritten StallKind = iota + 1 // mapped and initialised, but not written by the host since it was allocated
	StallUnwritten                       // an unwritten extent (reads as zeroes), with file data after it
	StallHole                            // no block mapped (reads as zeroes), with file data after it
	// StallTail is the end of the file reading as zeroes (holes or
	// unwritten extents up to the size, no data after them): usually the
	// host's writeback still to come; after a crash, data the host lost.
	// Reported so that status can say why the prefix stops there, never
	// taken as found: nothing the host appended follows it.
	StallTail
	// StallPartial is a block written while the file ended inside it,
	// whose later bytes the host has not written since although the file
	// grew past them (a block completed in the page cache only, while a
	// later range was made durable; after a crash, data the host lost).
	StallPartial
	// StallUnknownTree is a range whose block map lies under an extent
	// tree block the host has not written (without a journal the parent
	// may land first, for moments). Never taken as found: the device
	// raises an indicator once it stays so (the kernel cannot read the
	// file there: a forged tree).
	StallUnknownTree
)

var stallNames = map[StallKind]string{
	StallNotWritten:  "not-written",
	StallUnwritten:   "unwritten-extent",
	StallHole:        "hole",
	StallTail:        "tail",
	StallPartial:     "partial-block",
	StallUnknownTree: "unknown-tree",
}

func (k StallKind) String() string {
	if s, ok := stallNames[k]; ok {
		return s
	}
	return fmt.Sprintf("stall(%d)", int(k))
}

// TakenAsFound reports whether a range of this kind is ever taken as
// found after commit.lost_after: every kind but StallTail, after which
// nothing the host appended waits, and StallUnknownTree, whose bytes are
// not known to be the file's at all.
func (k StallKind) TakenAsFound() bool { return k != StallTail && k != StallUnknownTree }

// Describe says in words what such a range is, for people (status, the
// lost-write notice).
func (k StallKind) Describe() string {
	switch k {
	case StallNotWritten:
		return "blocks not written by the host since they were allocated to the file"
	case StallUnwritten:
		return "an unwritten extent (reads as zeroes) with file data after it"
	case StallHole:
		return "a hole (reads as zeroes) with file data after it"
	case StallTail:
		return "the end of the file reads as zeroes (holes or unwritten extents up to its size): not written by the host yet, or data it lost in a crash"
	case StallPartial:
		return "a block written while the file ended inside it, whose later bytes the host has not written since"
	case StallUnknownTree:
		return "its block map lies under an extent tree block the host has not written"
	}
	return k.String()
}

// Stall is a range of a protected file, below its size, that the host has
// not written since the metadata covering it arrived. Normally the data is
// on its way (a write reordered within a flush epoch, dirty pages the host
// writes back within seconds). But when the host or the device crashed
// between the metadata write and the data write, the host lost that data:
// after its reboot it reads what the device holds there (old block
// contents, or zeroes), appends after it, and never writes the range again.
// Without help the file's coherent prefix would stop there for good.
type Stall struct {
	Kind StallKind
	// Off and Len are the file byte range: whole blocks, the last one
	// clipped at the size.
	Off, Len int64
	// Device is the device byte offset of the range (StallNotWritten;
	// -1 for the kinds that have no blocks).
	Device int64
}

// StallReporter is implemented by engines that can say which ranges hold a
// file's coherent prefix back, and take one "as found": the device core
// calls AcceptAsFound once a range has stayed stalled, unchanged, for the
// configured commit.lost_after window, and records that it did.
type StallReporter interface {
	// Stalls returns up to most stalled ranges of the file, in file order,
	// from its coherent prefix on; a StallTail range comes last.
	Stalls(id FileID, most int) []Stall
	// AcceptAsFound makes s part of the file's coherent prefix as the host
	// reads it now (the blocks' current contents, or zeroes for a hole or
	// an unwritten extent). It returns false, changing nothing, when s is
	// no longer exactly a stalled range of the file, and always for a
	// StallTail range.
	AcceptAsFound(id FileID, s Stall) bool
}

// TrimHolder is implemented by engines that may have the device core
// accept a TRIM without carrying it out. A TRIM promises nothing about what
// the blocks read afterwards (WRITE_ZEROES does), so leaving them as they
// are is a valid answer to it.
type TrimHolder interface {
	// HoldTrim reports whether the TRIM of [off, off+length), which
	// touches something the engine watches, is to be answered with
	// success and left undone. The device core asks before CheckDiscard;
	// when it returns true, neither CheckDiscard nor Discarded follows.
	HoldTrim(off, length int64) bool
}

// FlushJudge is implemented by engines that judge some changes only at the
// host's FLUSH, when the host's writes up to it are known to be complete
// (revfs/ext4: a journal transaction whose commit block landed but some of
// whose blocks the host never wrote, which a journal replay would still
// apply). The device core asks after every Flushed and responds to what
// it returns as it does for a write.
type FlushJudge interface {
	// FlushViolations returns, once, the violations the last Flushed found.
	FlushViolations() []Violation
	// DiscardAtFlush undoes in the image, through write, what makes the
	// violations FlushViolations last returned reach a replay (the discard
	// response; the others leave the image as it is).
	DiscardAtFlush(write func(b []byte, off int64) error) error
}
