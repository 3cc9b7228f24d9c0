//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// realLogWatch wakes the tracker when the store writes a real log. The store
// creates real logs and their directories on a file's first append, so the
// watch covers each real log's directory and every directory between it and
// the store, adding the deeper ones as they appear.
type realLogWatch struct {
	t       *lagTracker
	fd      int
	dirs    map[int]string // watch descriptor → directory
	watched map[string]bool
	byPath  map[string]int // real log path → file index
}

func newRealLogWatch(t *lagTracker) (*realLogWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w (-poll 1ms polls instead)", err)
	}
	if fi, err := os.Stat(t.store); err != nil || !fi.IsDir() {
		unix.Close(fd)
		return nil, fmt.Errorf("-store %s: not a directory", t.store)
	}
	w := &realLogWatch{t: t, fd: fd, dirs: map[int]string{}, watched: map[string]bool{}, byPath: map[string]int{}}
	for i, p := range t.paths {
		w.byPath[filepath.Clean(filepath.Join(t.store, p))] = i
	}
	if err := w.addDirs(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return w, nil
}

// addDirs watches every directory on the way to a real log that exists and
// is not watched yet, then looks at every file: one may have been written
// before its directory was watched.
func (w *realLogWatch) addDirs() error {
	added := false
	for p := range w.byPath {
		for _, d := range ancestors(w.t.store, filepath.Dir(p)) {
			if w.watched[d] {
				continue
			}
			wd, err := unix.InotifyAddWatch(w.fd, d, unix.IN_MODIFY|unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR)
			if errors.Is(err, unix.ENOENT) {
				break // not created yet: its parent's IN_CREATE will tell
			}
			if err != nil {
				return fmt.Errorf("inotify watch %s: %w", d, err)
			}
			w.dirs[wd] = d
			w.watched[d] = true
			added = true
		}
	}
	if added {
		now := time.Now()
		for i := range w.t.paths {
			w.t.look(i, now)
		}
	}
	return nil
}

// ancestors lists the directories from root down to dir (dir inside root).
func ancestors(root, dir string) []string {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == "." {
		return []string{root}
	}
	out := []string{root}
	cur := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		out = append(out, cur)
	}
	return out
}

// wait blocks up to timeout for events and handles them.
func (w *realLogWatch) wait(timeout time.Duration) error {
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, int(timeout/time.Millisecond)); err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("poll inotify: %w", err)
	}
	var buf [64 << 10]byte
	for {
		n, err := unix.Read(w.fd, buf[:])
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read inotify: %w", err)
		}
		now := time.Now()
		dirsChanged, lookAll := false, false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameLen := int(ev.Len)
			if off+unix.SizeofInotifyEvent+nameLen > n {
				break // never from the kernel: it returns whole events
			}
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+nameLen]), "\x00")
			off += unix.SizeofInotifyEvent + nameLen
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				lookAll = true
				continue
			}
			if ev.Mask&unix.IN_ISDIR != 0 {
				dirsChanged = true
				continue
			}
			if i, ok := w.byPath[filepath.Join(w.dirs[int(ev.Wd)], name)]; ok {
				w.t.look(i, now)
			}
		}
		if dirsChanged {
			if err := w.addDirs(); err != nil {
				return err
			}
		}
		if lookAll {
			for i := range w.t.paths {
				w.t.look(i, now)
			}
		}
	}
}

func (w *realLogWatch) close() { unix.Close(w.fd) }
