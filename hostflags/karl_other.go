//go:build !openbsd

package hostflags

import "context"

// KARLWaitSupported reports whether WaitKARL has anything to wait for: only
// OpenBSD relinks its kernel and libraries at boot.
const KARLWaitSupported = false

// WaitKARL returns at once: this system has no boot-time relinking.
func WaitKARL(ctx context.Context, logf func(string, ...any)) error { return nil }
