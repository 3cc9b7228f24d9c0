package cli

import (
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets testscript run the indelible binary in-process as the
// "indelible" (and "syslock"/"sysunlock") commands of the .txtar scripts.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"indelible": func() { os.Exit(Main(os.Args, StdEnv())) },
		"syslock":   func() { os.Exit(Main(os.Args, StdEnv())) },
		"sysunlock": func() { os.Exit(Main(os.Args, StdEnv())) },
	})
}

// TestScripts runs every testdata/script/*.txtar. Each subcommand owns its own
// scripts there, named after it (serve_*.txtar, verify_*.txtar, lock_*.txtar).
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
