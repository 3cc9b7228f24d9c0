package seal

import "golang.org/x/sys/unix"

// mapPopulate asks mmap to map the whole range at once (see seqReader).
const mapPopulate = unix.MAP_POPULATE
