//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package hostflags

import "context"

// Run is not available on systems without immutability flags.
func Run(ctx context.Context, c *Config, opts Options) (*Result, error) {
	return nil, ErrUnsupportedOS
}
