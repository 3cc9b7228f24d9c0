package hostflags

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// KARLWaitSupported reports whether WaitKARL has anything to wait for: only
// OpenBSD relinks its kernel and libraries at boot.
const KARLWaitSupported = true

const (
	// relinkDir holds a _rebuild.* entry per library being relinked.
	relinkDir = "/usr/share/relink"
	// reorderKernel is the script that relinks the kernel after boot.
	reorderKernel = "/usr/libexec/reorder_kernel"
	// karlTimeout is how long syslock -w waits before giving up.
	karlTimeout = 5 * time.Minute
)

// WaitKARL waits until OpenBSD has finished relinking the kernel
// (reorder_kernel no longer runs) and its libraries (no _rebuild.* left in
// /usr/share/relink), so that the "!" files can be locked afterwards, as
// syslock -w does from rc.securelevel. It gives up after five minutes.
func WaitKARL(ctx context.Context, logf func(string, ...any)) error {
	deadline := time.Now().Add(karlTimeout)
	for {
		var waiting []string
		if relinking() {
			waiting = append(waiting, "library randomization")
		}
		running, err := reordering(ctx)
		if err != nil {
			return err
		}
		if running {
			waiting = append(waiting, "kernel reordering")
		}
		if len(waiting) == 0 {
			return nil
		}
		reason := strings.Join(waiting, " and ")
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting on %s", karlTimeout, reason)
		}
		if logf != nil {
			logf("waiting on %s", reason)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func relinking() bool {
	names, err := os.ReadDir(relinkDir)
	if err != nil {
		return false
	}
	for _, n := range names {
		if strings.HasPrefix(n.Name(), "_rebuild.") {
			return true
		}
	}
	return false
}

// reordering looks for reorder_kernel among the running processes' command
// lines, as syslock does with ps.
func reordering(ctx context.Context) (bool, error) {
	out, err := exec.CommandContext(ctx, "/bin/ps", "-axww", "-o", "command").Output()
	if err != nil {
		return false, fmt.Errorf("checking for kernel reordering: %w", err)
	}
	return bytes.Contains(out, []byte(reorderKernel)), nil
}
