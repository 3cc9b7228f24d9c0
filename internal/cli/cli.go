// Package cli implements the indelible command line: one file per subcommand,
// each registering itself with register. Output goes through Env so that tests
// capture it.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/indelible-worm/indelible/blockdev"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=v1.2.3".
var Version = "devel"

// Env is everything a command may touch of the outside world.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	// Context is cancelled on SIGINT/SIGTERM (for StdEnv) or by the test.
	Context context.Context
	// WrapDevice, when set, wraps the device `serve` exports (and is closed
	// in its place). Only in-process harnesses set it: bench/e2e/profserve
	// records the host's requests with it for bench/replay.
	WrapDevice func(blockdev.Device) (blockdev.Device, error)
	// stopSignals gives SIGINT and SIGTERM back their default action (end
	// the process): run calls it for a command that does not watch Context.
	stopSignals func()
}

// StdEnv returns the process environment, with a context that is cancelled on
// the first SIGINT or SIGTERM; a second one ends the process (watchSignals).
func StdEnv() *Env {
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go watchSignals(sig, cancel, os.Stderr, os.Exit)
	// Stop gives the signals their default action back and leaves the
	// context as it is (a command may still use it, for its deadlines).
	return &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Context: ctx,
		stopSignals: func() { signal.Stop(sig) }}
}

// watchSignals cancels the command's context on the first signal. A second
// one, while the command is still shutting down (a server waiting for
// requests in flight, or for a flush), exits at once with status 1: the user
// asked twice. That is safe for a WORM device (invariant I6): the next start
// resumes from the store's watermarks, losing at most the unsealed tail.
func watchSignals(sig <-chan os.Signal, cancel func(), stderr io.Writer, exit func(int)) {
	<-sig
	cancel()
	s := <-sig
	fmt.Fprintf(stderr, "indelible: signalled again (%v): exiting now without finishing the shutdown (a WORM device resumes from its sealed watermarks when served again)\n", s)
	exit(1)
}

// Command is one subcommand.
type Command struct {
	Name    string
	Args    string // synopsis after the name, e.g. "[flags] DEVICE_DIR"
	Short   string // one line for the command list
	Long    string // paragraphs shown by `indelible help NAME`, including examples
	Flags   func(fs *flag.FlagSet)
	Run     func(env *Env, fs *flag.FlagSet, args []string) error
	Aliases []string // argv[0] names that run this command directly (syslock)
	Hidden  bool
	// Getopt lets single-letter boolean flags cluster, getopt style (-aq),
	// as syslock's users expect.
	Getopt bool
	// WatchesContext says Run stops cleanly when Env.Context is cancelled
	// (SIGINT, SIGTERM). For the other commands those signals keep their
	// default action: caught and ignored, Ctrl-C would not stop a verify
	// of a large store.
	WatchesContext bool
}

var commands = map[string]*Command{}

// register adds a command; each command file calls it from init.
func register(c *Command) {
	if _, dup := commands[c.Name]; dup {
		panic("cli: duplicate command " + c.Name)
	}
	commands[c.Name] = c
}

// ExitError makes Main exit with Code after printing Err (when non-nil).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// errUsage marks errors caused by a bad command line (exit status 2).
var errUsage = errors.New("usage")

func usageErrorf(format string, a ...any) error {
	return &ExitError{Code: 2, Err: fmt.Errorf(format, a...)}
}

// Main runs the command line args (args[0] is the program name) and returns the
// process exit status.
func Main(args []string, env *Env) int {
	if env.Context == nil {
		env.Context = context.Background()
	}
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	prog := filepath.Base(args[0])
	for _, c := range commands {
		for _, a := range c.Aliases {
			if a == prog {
				return run(c, prog, args[1:], env)
			}
		}
	}
	rest := args[1:]
	if len(rest) == 0 {
		printUsage(env.Stderr)
		return 2
	}
	switch rest[0] {
	case "-h", "-help", "--help", "help":
		if len(rest) > 1 {
			if c, ok := commands[rest[1]]; ok {
				printCommandHelp(env.Stdout, c, "indelible "+c.Name)
				return 0
			}
			fmt.Fprintf(env.Stderr, "indelible: unknown command %q; run `indelible --help` for the list\n", rest[1])
			return 2
		}
		printUsage(env.Stdout)
		return 0
	case "-version", "--version":
		rest[0] = "version"
	}
	c, ok := commands[rest[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "indelible: unknown command %q; run `indelible --help` for the list\n", rest[0])
		return 2
	}
	return run(c, "indelible "+c.Name, rest[1:], env)
}

func run(c *Command, name string, args []string, env *Env) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if c.Flags != nil {
		c.Flags(fs)
	}
	if c.Getopt {
		args = splitGetopt(fs, args)
	}
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(env.Stdout, c, name)
			return 0
		}
		fmt.Fprintf(env.Stderr, "indelible: %v; run `%s --help`\n", err, name)
		return 2
	}
	if !c.WatchesContext && env.stopSignals != nil {
		env.stopSignals()
	}
	err = c.Run(env, fs, positional)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			printError(env.Stderr, ee.Err)
			if ee.Code == 2 {
				fmt.Fprintf(env.Stderr, "run `%s --help` for usage\n", name)
			}
		}
		return ee.Code
	}
	printError(env.Stderr, err)
	return 1
}

// parseInterspersed parses flags wherever they appear among the arguments
// ("init DIR --size 1G" as well as "init --size 1G DIR"); everything after
// "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		// flag stops at "--" (consumed) or at the first non-flag argument.
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

func printError(w io.Writer, err error) {
	msg := err.Error()
	if !strings.HasPrefix(msg, "indelible:") {
		msg = "indelible: " + msg
	}
	fmt.Fprintln(w, msg)
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `indelible turns a Linux machine into a WORM (write once, read many) device for logs.
A host mounts its ext4 disk over NBD and appends to protected log files; indelible
seals every append into tamper-evident real logs that nothing on the host can change.

Usage: indelible COMMAND [flags] [args]

Commands:
`)
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.Hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].Short)
	}
	fmt.Fprint(w, `
Run 'indelible help COMMAND' (or 'indelible COMMAND --help') for details and examples.
`)
}

func printCommandHelp(w io.Writer, c *Command, name string) {
	fmt.Fprintf(w, "Usage: %s %s\n\n%s\n", name, c.Args, c.Short)
	if c.Long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.Long))
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	if c.Flags != nil {
		c.Flags(fs)
	}
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}
