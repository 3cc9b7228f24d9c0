package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/indelible-worm/indelible/internal/testenv"
)

// lockedBuffer is an io.Writer safe to read while a command writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeTCPRoundTrip serves an image on a loopback TCP port, writes
// random data through nbdcopy, stops the server the way SIGINT does (the
// context ends), and checks the data is in the image file.
func TestServeTCPRoundTrip(t *testing.T) {
	nbdcopy := testenv.RequireCommand(t, "nbdcopy")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	want := make([]byte, 8<<20)
	rand.Read(want)
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr lockedBuffer
	env := &Env{Stdout: &stdout, Stderr: &stderr, Context: ctx, Getenv: func(string) string { return "" }}
	status := make(chan int, 1)
	go func() { status <- Main([]string{"indelible", "serve", "--listen", "tcp:127.0.0.1:0", img}, env) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-status:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})

	uriRE := regexp.MustCompile(`at (nbd://127\.0\.0\.1:\d+)\n`)
	var uri string
	testenv.WaitFor(t, 10*time.Second, "serve to print its address", func() bool {
		m := uriRE.FindStringSubmatch(stdout.String())
		if m != nil {
			uri = m[1]
		}
		return m != nil
	})
	if out, err := exec.Command(nbdcopy, src, uri).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy: %v\n%s", err, out)
	}
	cancel()
	select {
	case code := <-status:
		if code != 0 {
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	status <- 0 // for the cleanup
	if !bytes.Contains([]byte(stderr.String()), []byte("stopped; the image is flushed")) {
		t.Errorf("stderr: %s", stderr.String())
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("image does not hold what nbdcopy wrote")
	}
}

func TestParseListen(t *testing.T) {
	for _, tc := range []struct {
		in, network, addr string
	}{
		{"unix:/run/x.sock", "unix", "/run/x.sock"},
		{"tcp:127.0.0.1:10809", "tcp", "127.0.0.1:10809"},
		{"tcp:[::1]:10809", "tcp", "[::1]:10809"},
		{"tcp::10809", "tcp", ":10809"},
		{"unix:", "", ""},
		{"tcp:host", "", ""},
		{"udp:1.2.3.4:5", "", ""},
		{"/run/x.sock", "", ""},
	} {
		n, a, err := parseListen(tc.in)
		if n != tc.network || a != tc.addr || (err == nil) != (tc.network != "") {
			t.Errorf("parseListen(%q) = %q, %q, %v", tc.in, n, a, err)
		}
	}
}

// TestEnsureDefaultTargetPlaces checks where the default device goes under
// each environment variable, and that it is created only once.
func TestEnsureDefaultTargetPlaces(t *testing.T) {
	testenv.RequireCommand(t, "mkfs.ext4")
	dir := t.TempDir()
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"INDELIBLE_HOME": dir + "/ih", "XDG_DATA_HOME": dir + "/x", "HOME": dir + "/h"}, dir + "/ih/default"},
		{map[string]string{"XDG_DATA_HOME": dir + "/x", "HOME": dir + "/h"}, dir + "/x/indelible/default"},
		{map[string]string{"HOME": dir + "/h"}, dir + "/h/.local/share/indelible/default"},
	} {
		var stderr bytes.Buffer
		env := &Env{Stderr: &stderr, Getenv: func(k string) string { return tc.vars[k] }}
		got, err := ensureDefaultTarget(env)
		if err != nil || got != tc.want {
			t.Fatalf("ensureDefaultTarget = %q, %v; want %q", got, err, tc.want)
		}
		img := filepath.Join(got, "image.ext4")
		fi, err := os.Stat(img)
		if err != nil || fi.Size() != defaultImageSize {
			t.Fatalf("default image: %v, %v", fi, err)
		}
		if !isDeviceDir(got) {
			t.Fatalf("%s is not a device directory", got)
		}
		if out, err := exec.Command(testenv.RequireCommand(t, "e2fsck"), "-fn", img).CombinedOutput(); err != nil {
			t.Fatalf("e2fsck on the default image: %v\n%s", err, out)
		}
		if !regexp.MustCompile(`WARNING: the auditor key`).MatchString(stderr.String()) {
			t.Fatalf("no warning about the auditor key: %q", stderr.String())
		}
		// Reused, not recreated; the warning comes again while the key is
		// there, and not once it is gone.
		stderr.Reset()
		if again, err := ensureDefaultTarget(env); err != nil || again != got ||
			regexp.MustCompile(`created`).MatchString(stderr.String()) ||
			!regexp.MustCompile(`WARNING: the auditor key is still at `).MatchString(stderr.String()) {
			t.Fatalf("second call: %q, %v, %q", again, err, stderr.String())
		}
		if err := os.Remove(filepath.Join(got, defaultKeyName)); err != nil {
			t.Fatal(err)
		}
		stderr.Reset()
		if again, err := ensureDefaultTarget(env); err != nil || again != got || stderr.Len() != 0 {
			t.Fatalf("call without the key: %q, %v, %q", again, err, stderr.String())
		}
	}
	env := &Env{Stderr: new(bytes.Buffer), Getenv: func(string) string { return "" }}
	if _, err := ensureDefaultTarget(env); err == nil || !regexp.MustCompile(`HOME is not set`).MatchString(err.Error()) {
		t.Fatalf("no HOME: %v", err)
	}
}
