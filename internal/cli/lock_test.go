package cli

import (
	"flag"
	"reflect"
	"testing"

	"github.com/indelible-worm/indelible/hostflags"
)

func TestSplitGetopt(t *testing.T) {
	fs := flag.NewFlagSet("syslock", flag.ContinueOnError)
	lockFlags(fs, hostflags.Lock)
	for _, tc := range []struct{ in, want []string }{
		{[]string{"-swf"}, []string{"-s", "-w", "-f"}},
		{[]string{"-a", "-q", "-o", "-g", "local"}, []string{"-a", "-q", "-o", "-g", "local"}},
		{[]string{"-aqo", "-glocal"}, []string{"-a", "-q", "-o", "-g", "local"}},
		{[]string{"-aqg", "logs:+a"}, []string{"-a", "-q", "-g", "logs:+a"}},
		{[]string{"-c", "-odd-name.conf", "-v"}, []string{"-c", "-odd-name.conf", "-v"}},
		{[]string{"-vc", "-x.conf"}, []string{"-v", "-c", "-x.conf"}},
		{[]string{"-g=a,b", "--help"}, []string{"-g=a,b", "--help"}},
		{[]string{"-sz"}, []string{"-sz"}}, // unknown letter: left for the flag package to report
		{[]string{"-v", "extra", "-aq"}, []string{"-v", "extra", "-aq"}},
		{[]string{"--", "-aq"}, []string{"--", "-aq"}},
	} {
		if got := splitGetopt(fs, tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitGetopt(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
