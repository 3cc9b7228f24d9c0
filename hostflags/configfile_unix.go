//go:build unix

package hostflags

import (
	"fmt"
	"os"
	"syscall"

	"github.com/indelible-worm/indelible/internal/regfile"
)

// ReadConfigFile opens and parses a configuration file after checking, on
// the open file (so the check and the read see the same file), that it is
// owned by root or by the invoking user and that no one else can write it:
// a configuration others can change would let them pick what gets unlocked.
// A world-readable file is allowed, with a warning, because it only reveals
// the locking plan.
func ReadConfigFile(name string, opts ParseOptions) (c *Config, warnings []string, err error) {
	f, err := regfile.Open(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		euid := os.Geteuid()
		if st.Uid != 0 && int(st.Uid) != euid {
			return nil, nil, fmt.Errorf("%s must be owned by root or by uid %d, not uid %d; chown root %s (and keep it mode 600)", name, euid, st.Uid, name)
		}
	}
	perm := fi.Mode().Perm()
	switch {
	case perm&0o002 != 0:
		return nil, nil, fmt.Errorf("%s must not be world-writable; chmod 600 %s", name, name)
	case perm&0o020 != 0:
		return nil, nil, fmt.Errorf("%s must not be group-writable; chmod 600 %s", name, name)
	case perm&0o004 != 0:
		warnings = append(warnings, fmt.Sprintf("%s is world-readable; consider chmod 600 %s", name, name))
	}
	c, err = Parse(f, name, opts)
	return c, warnings, err
}
