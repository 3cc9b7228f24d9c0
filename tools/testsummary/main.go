// Command testsummary reads `go test -json` output on stdin, prints the
// ordinary human-readable test output, and ends with one summary line:
//
//	N passed, N failed, N skipped
//
// It exits non-zero when any test or package failed (including build
// failures, which produce no test events of their own).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	os.Exit(summarize(os.Stdin, os.Stdout))
}

func summarize(in io.Reader, out io.Writer) int {
	var passed, failed, skipped int
	failedPkgs := map[string]bool{}
	var failedTests []string
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Build errors and other non-JSON lines pass through untouched.
			fmt.Fprintf(out, "%s\n", line)
			if strings.HasPrefix(string(line), "FAIL") {
				failedPkgs[string(line)] = true
			}
			continue
		}
		switch e.Action {
		case "output":
			fmt.Fprint(out, e.Output)
		case "pass":
			if e.Test != "" {
				passed++
			}
		case "fail":
			if e.Test != "" {
				failed++
				failedTests = append(failedTests, e.Package+"."+e.Test)
			} else {
				failedPkgs[e.Package] = true
			}
		case "skip":
			if e.Test != "" {
				skipped++
			}
		}
	}
	if len(failedTests) > 0 {
		sort.Strings(failedTests)
		fmt.Fprintln(out, "\nFailed tests:")
		for _, t := range failedTests {
			fmt.Fprintln(out, "  "+t)
		}
	}
	if len(failedPkgs) > 0 && failed == 0 {
		// A package that failed without a failing test (build error, panic
		// in TestMain, timeout) still counts as one failure.
		failed = len(failedPkgs)
	}
	fmt.Fprintf(out, "%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || len(failedPkgs) > 0 {
		return 1
	}
	return 0
}
