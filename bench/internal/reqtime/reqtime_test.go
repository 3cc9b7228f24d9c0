package reqtime

import (
	"strings"
	"testing"
	"time"
)

func TestReport(t *testing.T) {
	var tb Table
	for i := 1; i <= 100; i++ {
		tb.Add(Flush, time.Duration(i)*time.Microsecond)
	}
	tb.Add(WriteKind(4096), 3*time.Microsecond)
	tb.Add(WriteKind(4097), 5*time.Microsecond)
	if got := tb.Count(); got != 102 {
		t.Fatalf("Count = %d, want 102", got)
	}
	var b strings.Builder
	if err := tb.Report(&b, "  "); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and three kinds, got:\n%s", b.String())
	}
	// Listed in the table's order, whatever the order of arrival.
	for i, kind := range []string{SmallWrite, LargeWrite, Flush} {
		if !strings.HasPrefix(strings.TrimSpace(lines[i+1]), kind) {
			t.Errorf("line %d = %q, want kind %q", i+1, lines[i+1], kind)
		}
	}
	// 1..100 µs: mean 50.5, p50 the 50th value (index 49), p90 index 89,
	// p99 index 98, total 5050 µs.
	if f := strings.Fields(lines[3]); strings.Join(f[1:], " ") != "100 50.5 50.0 90.0 99.0 0.005" {
		t.Errorf("flush line = %q", lines[3])
	}
}
