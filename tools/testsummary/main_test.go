package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"--- PASS: TestA\n"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"skip","Package":"p","Test":"TestB"}
{"Action":"fail","Package":"p","Test":"TestC"}
{"Action":"fail","Package":"p"}
`
	var out bytes.Buffer
	if code := summarize(strings.NewReader(in), &out); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.HasSuffix(out.String(), "1 passed, 1 failed, 1 skipped\n") {
		t.Fatalf("summary line wrong:\n%s", out.String())
	}
	out.Reset()
	if code := summarize(strings.NewReader("# p\nbuild failed\nFAIL\tp [build failed]\n"), &out); code != 1 {
		t.Fatalf("build failure: exit %d, want 1", code)
	}
	if !strings.HasSuffix(out.String(), "0 passed, 1 failed, 0 skipped\n") {
		t.Fatalf("build failure summary wrong:\n%s", out.String())
	}
}
