package jbd2

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// nbdWrite is one write request seen by nbdkit's log filter, with the log
// line numbers of its request and of its reply.
type nbdWrite struct {
	conn, id      string
	off, count    int64
	issued, acked int
}

var (
	logWriteRe = regexp.MustCompile(`connection=(\d+) Write id=(\d+) offset=0x([0-9a-f]+) count=0x([0-9a-f]+)`)
	logReplyRe = regexp.MustCompile(`connection=(\d+) \.\.\.Write id=(\d+) return=`)
)

// parseWriteLog reads the writes of an nbdkit --filter=log logfile in the
// order nbdkit received them.
func parseWriteLog(t *testing.T, path string) []*nbdWrite {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ws []*nbdWrite
	pending := map[string]*nbdWrite{}
	sc := bufio.NewScanner(f)
	for line := 0; sc.Scan(); line++ {
		if m := logWriteRe.FindStringSubmatch(sc.Text()); m != nil {
			off, _ := strconv.ParseInt(m[3], 16, 64)
			n, _ := strconv.ParseInt(m[4], 16, 64)
			w := &nbdWrite{conn: m[1], id: m[2], off: off, count: n, issued: line, acked: -1}
			ws = append(ws, w)
			pending[m[1]+"/"+m[2]] = w
		} else if m := logReplyRe.FindStringSubmatch(sc.Text()); m != nil {
			if w := pending[m[1]+"/"+m[2]]; w != nil {
				w.acked = line
				delete(pending, m[1]+"/"+m[2])
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ws
}

// firstWriteTo returns the first write covering byte offset off.
func firstWriteTo(ws []*nbdWrite, off int64) *nbdWrite {
	for _, w := range ws {
		if w.off <= off && off < w.off+w.count {
			return w
		}
	}
	return nil
}

// TestKernelSuperblockBeforeFirstDescriptor checks, on the wire an indelible
// device sees, what the engine relies on after a clean mount: the kernel
// writes nothing to the journal at mount; before the first transaction it
// rewrites the journal superblock (s_start, s_sequence, features), and that
// write is acknowledged before the transaction's descriptor is sent.
func TestKernelSuperblockBeforeFirstDescriptor(t *testing.T) {
	testenv.RequireRoot(t)
	nbdkit := testenv.RequireCommand(t, "nbdkit")
	testenv.RequireCommand(t, "mkfs.ext4")
	testenv.RequireCommand(t, "debugfs")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	testenv.Run(t, "truncate", "-s", "128M", img)
	testenv.Run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "metadata_csum,64bit", img)
	jblocks := journalBlocks(t, img)
	sock, logf := filepath.Join(dir, "sock"), filepath.Join(dir, "nbd.log")
	testenv.StartProcess(t, exec.Command(nbdkit, "-f", "--unix", sock, "--filter=log", "file", img, "logfile="+logf))
	testenv.WaitFor(t, 10*time.Second, "nbdkit socket", func() bool { _, err := os.Stat(sock); return err == nil })

	m := testenv.MountNBD(t, "nbd+unix:///?socket="+sock, "ext4", "data=ordered")
	mountedAt := len(parseWriteLog(t, logf))
	appendLines(t, filepath.Join(m.Dir, "log.txt"), []string{"first line\n"})
	m.Unmount()

	ws := parseWriteLog(t, logf)
	sbOff := jblocks[0] * 4096
	sbw := firstWriteTo(ws, sbOff)
	// The first transaction starts at s_first = 1 on a fresh journal.
	desc := firstWriteTo(ws, jblocks[1]*4096)
	if sbw == nil || desc == nil {
		t.Fatalf("no write to the journal superblock (%v) or first log block (%v) in %d writes", sbw, desc, len(ws))
	}
	for _, w := range ws[:mountedAt] {
		if overlapsJournal(w, jblocks) {
			t.Errorf("journal written during mount: offset %#x count %#x", w.off, w.count)
		}
	}
	if sbw.count != 4096 || sbw.off != sbOff {
		t.Logf("note: superblock written as part of a %d-byte write at %#x", sbw.count, sbw.off)
	}
	if sbw.acked < 0 || sbw.acked > desc.issued {
		t.Errorf("superblock write (log lines %d-%d) not acknowledged before the first descriptor write (line %d)",
			sbw.issued, sbw.acked, desc.issued)
	}
	t.Logf("%d writes; journal superblock written at log line %d (acked %d), first descriptor at line %d",
		len(ws), sbw.issued, sbw.acked, desc.issued)
}

func overlapsJournal(w *nbdWrite, jblocks []int64) bool {
	for _, b := range jblocks {
		if w.off < (b+1)*4096 && b*4096 < w.off+w.count {
			return true
		}
	}
	return false
}
