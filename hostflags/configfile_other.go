//go:build !unix

package hostflags

// ReadConfigFile is not available on systems without immutability flags.
func ReadConfigFile(name string, opts ParseOptions) (*Config, []string, error) {
	return nil, nil, ErrUnsupportedOS
}
