package cli

import (
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

func init() {
	register(&Command{
		Name:  "version",
		Args:  "",
		Short: "print the version of indelible and the Go toolchain that built it",
		Run: func(env *Env, _ *flag.FlagSet, args []string) error {
			if len(args) != 0 {
				return usageErrorf("version takes no arguments")
			}
			v := Version
			if v == "devel" {
				if bi, ok := debug.ReadBuildInfo(); ok {
					for _, s := range bi.Settings {
						if s.Key == "vcs.revision" && len(s.Value) >= 12 {
							v = "devel+" + s.Value[:12]
						}
					}
				}
			}
			fmt.Fprintf(env.Stdout, "indelible %s (%s, %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	})
}
