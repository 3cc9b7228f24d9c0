package jbd2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Fixtures are the used prefix of journals written by the real kernel
// (testdata/make.sh runs TestKernelJournal with JBD2_FIXTURES set): NAME.jnl
// holds journal blocks 0..n concatenated, NAME.json the facts to check.

func writeFixture(t *testing.T, dir, name string, blocks [][]byte, f kernelFacts) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name+".jnl"), bytes.Join(blocks, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	js, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".json"), append(js, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

type fixture struct {
	name  string
	facts kernelFacts
	bs    int
	raw   []byte
}

// blocks splits the fixture into journal blocks, padded with empty blocks
// up to the journal length so scans see the log end as they would on disk.
func (fx fixture) blocks(t testing.TB) [][]byte {
	t.Helper()
	sb, err := ParseSuperblock(fx.raw)
	if err != nil {
		t.Fatalf("%s: %v", fx.name, err)
	}
	var out [][]byte
	for off := 0; off+fx.bs <= len(fx.raw); off += fx.bs {
		out = append(out, fx.raw[off:off+fx.bs])
	}
	zero := make([]byte, fx.bs)
	for len(out) < int(sb.MaxLen()) {
		out = append(out, zero)
	}
	return out
}

func loadFixtures(t testing.TB) []fixture {
	t.Helper()
	names, err := filepath.Glob("testdata/*.jnl")
	if err != nil {
		t.Fatal(err)
	}
	var fxs []fixture
	for _, n := range names {
		raw, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		js, err := os.ReadFile(strings.TrimSuffix(n, ".jnl") + ".json")
		if err != nil {
			t.Fatal(err)
		}
		fx := fixture{name: filepath.Base(n), raw: raw}
		if err := json.Unmarshal(js, &fx.facts); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		fx.bs = int(be.Uint32(raw[0xC:]))
		if fx.bs < 1024 || fx.bs > 65536 || len(raw)%fx.bs != 0 {
			t.Fatalf("%s: block size %d, length %d", n, fx.bs, len(raw))
		}
		fxs = append(fxs, fx)
	}
	return fxs
}

// TestFixtures replays the kernel checks on the committed journal
// snapshots, so they run without root.
func TestFixtures(t *testing.T) {
	fxs := loadFixtures(t)
	if len(fxs) == 0 {
		t.Fatal("no fixtures in testdata; run testdata/make.sh as root")
	}
	for _, fx := range fxs {
		t.Run(fx.name, func(t *testing.T) {
			checkJournal(t, fx.blocks(t), fx.facts)
		})
	}
}

// TestFixturesDamaged flips one byte inside a journalled copy of each real
// journal: with csum v2/v3 the copy must be reported skipped, with checksum
// v1 the whole transaction (and the log after it) must be dropped, and
// without checksums nothing can notice.
func TestFixturesDamaged(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			blocks := fx.blocks(t)
			sb, err := ParseSuperblock(blocks[0])
			if err != nil {
				t.Fatal(err)
			}
			txs, _, _, err := Scan(sb, sb.Start(), sb.Sequence(), readerOf(blocks), len(blocks))
			if err != nil {
				t.Fatal(err)
			}
			// Damage the last transaction that logged blocks (some carry
			// only revoke records).
			vi := len(txs) - 1
			for vi >= 0 && len(txs[vi].Blocks) == 0 {
				vi--
			}
			if vi < 0 {
				t.Fatalf("no transaction logs a block: %+v", txs)
			}
			victim := txs[vi].Blocks[0]
			damaged := append([]byte(nil), blocks[victim.JBlock]...)
			damaged[len(damaged)/2] ^= 0x40
			blocks[victim.JBlock] = damaged
			got, _, _, err := Scan(sb, sb.Start(), sb.Sequence(), readerOf(blocks), len(blocks))
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case sb.HasCsumV2V3():
				if len(got) != len(txs) || len(got[vi].Skipped) != 1 || got[vi].Skipped[0] != victim ||
					len(got[vi].Blocks) != len(txs[vi].Blocks)-1 {
					t.Errorf("csum v2/v3: damaged copy %+v not skipped: %+v", victim, got[vi])
				}
			case sb.HasChecksumV1():
				if len(got) != vi {
					t.Errorf("checksum v1: %d transactions survive damage to tx %d (#%d)", len(got), txs[vi].Sequence, vi)
				}
			default:
				if len(got) != len(txs) {
					t.Errorf("no checksums: %d transactions, want %d", len(got), len(txs))
				}
			}
		})
	}
}

func readerOf(snap [][]byte) func(uint32) ([]byte, error) {
	return func(jb uint32) ([]byte, error) {
		if int(jb) >= len(snap) {
			return nil, fmt.Errorf("journal block %d beyond %d", jb, len(snap))
		}
		return snap[jb], nil
	}
}

// kernelFacts is what a kernel run learned, checked against the journal
// snapshot (live, or from a fixture file).
type kernelFacts struct {
	Inode      uint64 // inode number of the appended file
	ITable     uint64 // fs block of its inode-table block
	ITableOff  int    // byte offset of the inode in that block
	Data       uint64 // fs block of its first data block
	Size       uint64 // final file size
	DataPrefix string // first bytes of the file
	Journal    bool   // data=journal
}

// checkJournal scans a journal snapshot as the engine would, and checks it
// against what the kernel was asked to do. It returns the scan result.
func checkJournal(t *testing.T, snap [][]byte, f kernelFacts) (*Superblock, []Transaction, uint32, uint32) {
	t.Helper()
	sb, err := ParseSuperblock(snap[0])
	if err != nil {
		t.Fatalf("journal superblock: %v", err)
	}
	if sb.Clean() {
		t.Fatalf("journal clean while mounted after sync: %v", sb)
	}
	if int(sb.MaxLen()) != len(snap) {
		t.Fatalf("s_maxlen %d, journal inode has %d blocks", sb.MaxLen(), len(snap))
	}
	txs, next, nextSeq, err := Scan(sb, sb.Start(), sb.Sequence(), readerOf(snap), len(snap))
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if len(txs) == 0 {
		t.Fatalf("no transactions found from %v", sb)
	}
	if txs[0].Start != sb.Start() || txs[0].Sequence != sb.Sequence() {
		t.Errorf("first transaction %d at %d; superblock says %d at %d", txs[0].Sequence, txs[0].Start, sb.Sequence(), sb.Start())
	}
	for i, tx := range txs {
		if tx.Sequence != sb.Sequence()+uint32(i) || tx.Commit.Sequence != tx.Sequence {
			t.Errorf("tx %d has sequence %d (commit %d), want %d", i, tx.Sequence, tx.Commit.Sequence, sb.Sequence()+uint32(i))
		}
		if i > 0 && tx.Start != txs[i-1].End+1 {
			t.Errorf("tx %d starts at %d, previous commit at %d", tx.Sequence, tx.Start, txs[i-1].End)
		}
		if sb.HasChecksumV1() && (tx.Commit.ChecksumType != ChecksumTypeCRC32 || tx.Commit.ChecksumSize != ChecksumSizeCRC32) {
			t.Errorf("tx %d: checksum v1 journal with commit checksum type %d size %d", tx.Sequence, tx.Commit.ChecksumType, tx.Commit.ChecksumSize)
		}
		if len(tx.Skipped) != 0 {
			t.Errorf("tx %d: copies with bad checksums: %+v", tx.Sequence, tx.Skipped)
		}
		if i > 0 && tx.Commit.Sec < txs[i-1].Commit.Sec {
			t.Errorf("tx %d committed at %d, before tx %d at %d", tx.Sequence, tx.Commit.Sec, txs[i-1].Sequence, txs[i-1].Commit.Sec)
		}
	}
	if nextSeq != txs[len(txs)-1].Sequence+1 || next != txs[len(txs)-1].End+1 {
		t.Errorf("next %d/%d after last commit %d/%d", next, nextSeq, txs[len(txs)-1].End, txs[len(txs)-1].Sequence)
	}

	plan := ReplayPlan(txs)
	it, ok := plan[f.ITable]
	if !ok {
		t.Fatalf("inode-table block %d of inode %d is in no transaction; plan %v", f.ITable, f.Inode, plan)
	}
	cp := append([]byte(nil), snap[it.JBlock]...)
	if it.Escaped {
		Unescape(cp)
	}
	size := uint64(binary.LittleEndian.Uint32(cp[f.ITableOff+4:])) | uint64(binary.LittleEndian.Uint32(cp[f.ITableOff+0x6C:]))<<32
	if size != f.Size {
		t.Errorf("latest journalled inode says size %d, file has %d", size, f.Size)
	}
	d, ok := plan[f.Data]
	switch {
	case f.Journal && !ok:
		t.Errorf("data=journal but data block %d is in no transaction", f.Data)
	case f.Journal:
		cp := append([]byte(nil), snap[d.JBlock]...)
		if d.Escaped {
			Unescape(cp)
		}
		if !bytes.HasPrefix(cp, []byte(f.DataPrefix)) {
			t.Errorf("journalled data block starts %q, want %q", cp[:len(f.DataPrefix)], f.DataPrefix)
		}
	case ok:
		t.Errorf("data block %d journalled without data=journal", f.Data)
	}
	return sb, txs, next, nextSeq
}
