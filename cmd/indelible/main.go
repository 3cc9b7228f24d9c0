// Command indelible is a WORM device for logs. See `indelible --help`.
package main

import (
	"os"

	"github.com/indelible-worm/indelible/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args, cli.StdEnv()))
}
