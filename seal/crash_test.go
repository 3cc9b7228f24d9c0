package seal

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as an appender (TestMain runs
// crashChild when crashEnv is set), SIGKILLs it at a random moment, and
// checks that Open repairs the store, that nothing the child was told is
// durable got lost, and that the auditor verifies the result.

const crashEnv = "SEAL_CRASH_CHILD"

var crashFiles = []FileRef{{ID: 21, Path: "crash/a.log"}, {ID: 22, Path: "crash/b.log"}, {ID: 23, Path: "c.log"}}

func TestMain(m *testing.M) {
	if spec := os.Getenv(crashEnv); spec != "" {
		crashChild(spec)
		os.Exit(3) // crashChild never returns
	}
	os.Exit(m.Run())
}

// pattern is the byte at off of crash file k: the parent knows every
// byte the child could have written.
func pattern(k int, off int64) byte {
	if off%61 == 60 {
		return '\n'
	}
	return byte('a' + (int64(k)*7+off)%26)
}

func patternBytes(k int, off, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = pattern(k, off+int64(i))
	}
	return b
}

// crashChild appends to the crash files from one goroutine each and reports
// every acknowledged append as "k end" on fd 3, until it is killed. With a
// stage in its spec it kills itself at that point of its count-th commit
// (of those that burn keys, or that burn none) after printing "kill".
func crashChild(spec string) {
	var store, dev string
	var seed uint64
	var group, stage, count, burn int
	fmt.Sscanf(spec, "%s %s %d %d %d %d %d", &store, &dev, &seed, &group, &stage, &count, &burn)
	s, err := Open(store, dev, Options{GroupCommit: time.Duration(group) * time.Microsecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(4)
	}
	acks := os.NewFile(3, "acks")
	var mu sync.Mutex
	if stage != 0 {
		seen := 0
		s.hook = func(st commitStage, b bool) {
			if int(st) != stage || b != (burn == 1) {
				return
			}
			if seen++; seen == count {
				mu.Lock() // no ack line may be half written
				fmt.Fprintf(acks, "kill %d %d\n", stage, burn)
				if p, err := os.FindProcess(os.Getpid()); err == nil {
					p.Kill() // SIGKILL on unix
				}
				select {}
			}
		}
	}
	for k := range crashFiles {
		go func(k int) {
			r := rand.New(rand.NewPCG(seed, uint64(k)))
			f := crashFiles[k]
			for {
				wm := s.Watermark(f.ID)
				n := int64(1 + r.IntN(3000))
				if err := s.Append(f, wm, patternBytes(k, wm, n)); err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(5)
				}
				mu.Lock()
				fmt.Fprintf(acks, "%d %d\n", k, wm+n)
				mu.Unlock()
			}
		}(k)
	}
	select {}
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped with -short")
	}
	ts := newTestStore(t, 1<<20, 31)
	acked := make([]int64, len(crashFiles))
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	const runs = 60
	repaired := 0
	start := time.Now()
	// Every other run kills the child from inside a commit: each stage,
	// in commits that burn keys and in commits that do not.
	stageKills := map[string]int{}
	for run := 0; run < runs; run++ {
		stage, count, burn := 0, 0, 0
		if run%2 == 0 {
			stage, count, burn = 1+(run/2)%int(stageRound2), 1+r.IntN(4), (run/2/int(stageRound2))%2
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		group := 0
		if run%2 == 1 {
			group = r.IntN(2000)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d %d %d %d %d", crashEnv, ts.store, ts.dev, r.Uint64(), group, stage, count, burn))
		cmd.ExtraFiles = []*os.File{pw}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		// Kill after a random number of acknowledgements, plus a random
		// delay so the kill lands anywhere inside an append.
		// A child killing itself inside a commit gets a long rope.
		killAfter := 1 + r.IntN(80)
		if stage != 0 {
			killAfter = 2000
		}
		sc := bufio.NewScanner(pr)
		seen := 0
		ack := func(line string) {
			if k, b := 0, 0; strings.HasPrefix(line, "kill") {
				fmt.Sscanf(line, "kill %d %d", &k, &b)
				stageKills[fmt.Sprintf("stage %d burn %d", k, b)]++
				return
			}
			var k int
			var end int64
			fmt.Sscanf(line, "%d %d", &k, &end)
			acked[k] = max(acked[k], end)
		}
		for seen < killAfter && sc.Scan() {
			ack(sc.Text())
			seen++
		}
		time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		// Acks already in the pipe were acknowledged before the kill.
		for sc.Scan() {
			ack(sc.Text())
		}
		pr.Close()
		werr := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("run %d: child exited on its own (%v): %s", run, werr, stderr.String())
		}
		if run%3 == 2 {
			continue // let the next child recover a crashed store itself
		}
		s, err := Open(ts.store, ts.dev, Options{})
		if err != nil {
			t.Fatalf("run %d: open after kill: %v", run, err)
		}
		if s.Recovery() != nil {
			repaired++
		}
		for k, f := range crashFiles {
			wm := s.Watermark(f.ID)
			if wm < acked[k] {
				t.Fatalf("run %d: %s watermark %d below acknowledged %d", run, f.Path, wm, acked[k])
			}
			got, err := os.ReadFile(filepath.Join(ts.store, f.Path))
			if err != nil && wm > 0 {
				t.Fatal(err)
			}
			if int64(len(got)) != wm || !bytes.Equal(got, patternBytes(k, 0, wm)) {
				t.Fatalf("run %d: %s holds %d bytes, not the %d-byte prefix of what was appended", run, f.Path, len(got), wm)
			}
			acked[k] = wm // unacknowledged but sealed bytes are now part of the log
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		sum, ps := ts.verify(t, VerifyOptions{})
		if !sum.OK() {
			t.Fatalf("run %d: recovered store does not verify: %v %v", run, sum, ps)
		}
	}
	t.Logf("%d kill -9 runs in %v; %d needed repair; acknowledged bytes %v; kills inside commits %v", runs, time.Since(start).Round(time.Millisecond), repaired, acked, stageKills)
	if len(stageKills) < 2*int(stageRound2)-2 {
		t.Errorf("too few commit stages were hit by a kill: %v", stageKills)
	}
	if repaired == 0 {
		t.Error("no run needed repair: the kills never landed inside an append")
	}
}
