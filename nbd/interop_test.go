package nbd_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/indelible-worm/indelible/nbd"
	"github.com/indelible-worm/indelible/nbd/nbdtest"
)

// These tests drive the server with real NBD clients (libnbd's nbdinfo and
// nbdcopy, fio's nbd engine, and the kernel through nbdfuse and a loop
// device). Each skips when its client is missing (and fails under CI=true).

func runOut(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = t.TempDir() // fio drops verify state files in its working directory
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr)
	}
	return out
}

func TestNbdinfo(t *testing.T) {
	nbdinfo := testenv.RequireCommand(t, "nbdinfo")
	checkGoroutines(t)
	srv := nbdtest.Start(t, nbd.Config{Exports: []nbd.Export{
		{Name: "", Description: "main disk", Device: newFile(t, 3<<20)},
		{Name: "ro", Description: "frozen", Device: newFile(t, 1<<20), ReadOnly: true, MinBlock: 4096, PrefBlock: 8192, MaxPayload: 1 << 20},
	}})
	type export struct {
		Name       string `json:"export-name"`
		Desc       string `json:"description"`
		Size       int64  `json:"export-size"`
		ReadOnly   bool   `json:"is_read_only"`
		Cache      bool   `json:"can_cache"`
		DF         bool   `json:"can_df"`
		FastZero   bool   `json:"can_fast_zero"`
		Flush      bool   `json:"can_flush"`
		FUA        bool   `json:"can_fua"`
		MultiConn  bool   `json:"can_multi_conn"`
		Trim       bool   `json:"can_trim"`
		Zero       bool   `json:"can_zero"`
		MinBlock   int64  `json:"block_size_minimum"`
		PrefBlock  int64  `json:"block_size_preferred"`
		MaxPayload int64  `json:"block_size_maximum"`
	}
	var info struct {
		Protocol   string   `json:"protocol"`
		Structured bool     `json:"structured"`
		Exports    []export `json:"exports"`
	}
	if err := json.Unmarshal(runOut(t, nbdinfo, "--json", srv.URI), &info); err != nil {
		t.Fatal(err)
	}
	want := export{Name: "", Desc: "main disk", Size: 3 << 20, Cache: true, DF: true, FastZero: true, Flush: true, FUA: true,
		MultiConn: true, Trim: true, Zero: true, MinBlock: 512, PrefBlock: 4096, MaxPayload: nbd.HardMaxPayload}
	if info.Protocol != "newstyle-fixed" || !info.Structured || len(info.Exports) != 1 || info.Exports[0] != want {
		t.Fatalf("nbdinfo --json:\n got %+v\nwant %+v", info, want)
	}

	info.Exports = nil
	if err := json.Unmarshal(runOut(t, nbdinfo, "--list", "--json", srv.URI), &info); err != nil {
		t.Fatal(err)
	}
	wantRO := export{Name: "ro", Desc: "frozen", Size: 1 << 20, ReadOnly: true, Cache: true, DF: true, Flush: true,
		MultiConn: true, MinBlock: 4096, PrefBlock: 8192, MaxPayload: 1 << 20}
	if len(info.Exports) != 2 || info.Exports[0] != want || info.Exports[1] != wantRO {
		t.Fatalf("nbdinfo --list --json:\n got %+v\nwant %+v and %+v", info.Exports, want, wantRO)
	}
	// The plain text form, as a user sees it.
	out := string(runOut(t, nbdinfo, "nbd+unix:///ro?socket="+srv.Socket))
	for _, s := range []string{"export-size: 1048576", "is_read_only: true", "block_size_minimum: 4096"} {
		if !strings.Contains(out, s) {
			t.Errorf("nbdinfo output lacks %q:\n%s", s, out)
		}
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestNbdcopyRoundTrip copies random data in and out with nbdcopy, which
// uses several connections and many requests in flight on each.
func TestNbdcopyRoundTrip(t *testing.T) {
	nbdcopy := testenv.RequireCommand(t, "nbdcopy")
	checkGoroutines(t)
	const size = 48 << 20
	dir := t.TempDir()
	img := newFile(t, size)
	srv := nbdtest.Start(t, nbd.Config{Exports: []nbd.Export{{Device: img}}})
	src := filepath.Join(dir, "src")
	data := make([]byte, size)
	rand.Read(data)
	// A hole in the source makes nbdcopy zero that range on the server.
	clear(data[8<<20 : 12<<20])
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, conns := range []string{"1", "4"} {
		runOut(t, nbdcopy, "--connections="+conns, "--requests=64", "--flush", src, srv.URI)
		got := make([]byte, size)
		if _, err := img.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("connections=%s: image differs from the source after nbdcopy in", conns)
		}
		back := filepath.Join(dir, "back"+conns)
		runOut(t, nbdcopy, "--connections="+conns, srv.URI, back)
		if fileSum(t, back) != sha256.Sum256(data) {
			t.Fatalf("connections=%s: nbdcopy out differs", conns)
		}
	}
}

// TestFioVerify runs fio's nbd engine with crc32c verification at several
// queue depths, sequential-random writes and a mixed random workload.
func TestFioVerify(t *testing.T) {
	fio := testenv.RequireCommand(t, "fio")
	checkGoroutines(t)
	srv := nbdtest.Start(t, nbd.Config{Exports: []nbd.Export{{Device: newFile(t, 64<<20)}}})
	for _, tc := range []struct {
		rw      string
		bs      string
		iodepth int
	}{
		{"randwrite", "4k", 1},
		{"randwrite", "4k", 16},
		{"randwrite", "64k", 64},
		{"write", "1m", 16},
		{"randrw", "16k", 16},
		{"randrw", "4k", 64},
	} {
		name := fmt.Sprintf("%s-%s-qd%d", tc.rw, tc.bs, tc.iodepth)
		t.Run(name, func(t *testing.T) {
			args := []string{"--name=" + name, "--ioengine=nbd", "--uri=" + srv.URI,
				"--rw=" + tc.rw, "--bs=" + tc.bs, fmt.Sprintf("--iodepth=%d", tc.iodepth),
				"--size=16m", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--verify_state_save=0",
				"--randrepeat=0", "--output-format=json"}
			if tc.rw == "randrw" {
				// Verify what was read of what was written in this run.
				args = append(args, "--verify_backlog=64")
			}
			var res struct {
				Jobs []struct {
					Error int `json:"error"`
					Read  struct {
						IOBytes int64 `json:"io_bytes"`
					} `json:"read"`
					Write struct {
						IOBytes int64 `json:"io_bytes"`
					} `json:"write"`
				} `json:"jobs"`
			}
			out := runOut(t, fio, args...)
			if err := json.Unmarshal(out[bytes.IndexByte(out, '{'):], &res); err != nil {
				t.Fatalf("fio output: %v\n%s", err, out)
			}
			minWrite := int64(16 << 20)
			if tc.rw == "randrw" {
				minWrite = 4 << 20 // about half of the 16 MiB are writes
			}
			if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 || res.Jobs[0].Write.IOBytes < minWrite || res.Jobs[0].Read.IOBytes == 0 {
				t.Fatalf("fio: %+v\n%s", res, out)
			}
		})
	}
}
