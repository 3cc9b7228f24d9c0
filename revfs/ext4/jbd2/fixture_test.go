package jbd2

import (
	"bytes"
	"encoding/json"
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
