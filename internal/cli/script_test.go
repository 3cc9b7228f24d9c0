package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/blockdev"
	"github.com/indelible-worm/indelible/internal/testenv"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets testscript run the indelible binary in-process as the
// "indelible" (and "syslock"/"sysunlock") commands of the .txtar scripts.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"indelible": func() { os.Exit(Main(os.Args, StdEnv())) },
		"syslock":   func() { os.Exit(Main(os.Args, StdEnv())) },
		"sysunlock": func() { os.Exit(Main(os.Args, StdEnv())) },
		// indelible with a device whose flush takes 20 s: a serve that
		// is asked to stop hangs in its shutdown (serve_signal.txtar).
		"indelible-slowflush": func() {
			env := StdEnv()
			env.WrapDevice = func(d blockdev.Device) (blockdev.Device, error) { return slowFlush{d}, nil }
			os.Exit(Main(os.Args, env))
		},
	})
}

// slowFlush is a device whose Flush takes 20 s.
type slowFlush struct{ blockdev.Device }

func (d slowFlush) Flush() error {
	time.Sleep(20 * time.Second)
	return d.Device.Flush()
}

// TestScripts runs every testdata/script/*.txtar. Each subcommand owns its own
// scripts there, named after it (serve_*.txtar, verify_*.txtar, lock_*.txtar).
//
// A script that needs an external program says so with the tool condition,
// `[!tool:mkfs.ext4] skip 'why'`, never with exec:NAME: like
// testenv.SkipOrFail, tool fails the script under CI=true when the program
// is missing, where [!exec:NAME] would skip it silently.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script", Condition: scriptCondition,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){"jsonvalid": jsonValid}})
}

// jsonValid is the script command `jsonvalid FILE`: FILE (stdout for the
// last command's output) holds one valid JSON value.
func jsonValid(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: jsonvalid FILE")
	}
	if ok := json.Valid([]byte(ts.ReadFile(args[0]))); ok == neg {
		ts.Fatalf("%s: valid JSON is %v, want %v", args[0], ok, !neg)
	}
}

// scriptCondition evaluates the conditions testscript does not know:
// tool:NAME is true when NAME is in PATH; when it is not, it is false, or
// an error (failing the script) under CI=true.
func scriptCondition(cond string) (bool, error) {
	name, ok := strings.CutPrefix(cond, "tool:")
	if !ok || name == "" {
		return false, fmt.Errorf("unknown condition %q (this package adds tool:NAME)", cond)
	}
	if _, err := exec.LookPath(name); err == nil {
		return true, nil
	}
	if testenv.InCI() {
		return false, fmt.Errorf("CI=true but %s is not installed; run scripts/test, which installs what tests need", name)
	}
	return false, nil
}

// The tool condition skips a script when the program is missing, except
// under CI=true, where it fails it.
func TestScriptConditionTool(t *testing.T) {
	t.Setenv("CI", "")
	if ok, err := scriptCondition("tool:sh"); !ok || err != nil {
		t.Errorf("tool:sh = %v, %v; want true", ok, err)
	}
	if ok, err := scriptCondition("tool:indelible-no-such-tool"); ok || err != nil {
		t.Errorf("tool:indelible-no-such-tool outside CI = %v, %v; want false, nil", ok, err)
	}
	t.Setenv("CI", "true")
	if _, err := scriptCondition("tool:indelible-no-such-tool"); err == nil || !strings.Contains(err.Error(), "CI=true but indelible-no-such-tool is not installed") {
		t.Errorf("tool:indelible-no-such-tool under CI: %v; want an error", err)
	}
}
