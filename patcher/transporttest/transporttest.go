// Package transporttest is the one test suite every patcher.Transport must
// pass, so SSH and serial behave the same for the patch runner. It expects
// the device to be this machine (a local sshd or a shell on a local pty):
// some checks look at local processes and files.
package transporttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/internal/testservers"
	"github.com/ggfleet/ggfleet/patcher"
)

// Options tailor the suite to a transport's target.
type Options struct {
	// NoBecomeReason, when set, skips the become test with this reason.
	NoBecomeReason string
	// Drop makes the link to the device fail (kill the sshd connection, kill
	// the console's shell) while a command runs.
	Drop func()
	// Dir is a directory on the device the login user may write; empty
	// means a fresh directory under /tmp made world-writable.
	Dir string
}

// Run runs the suite. newTransport returns a connected transport; it is
// called once per subtest and the suite closes it.
func Run(t *testing.T, newTransport func(t *testing.T) patcher.Transport, opts Options) {
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
		_ = os.Chmod(dir, 0o777)
		for d := filepath.Dir(dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			_ = os.Chmod(d, 0o755)
		}
	}
	open := func(t *testing.T) patcher.Transport {
		tr := newTransport(t)
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	}
	ctxT := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("exit codes, stdout and stderr", func(t *testing.T) {
		tr := open(t)
		cases := []struct {
			script, stdout, stderr string
			code                   int
		}{
			{"echo hello", "hello\n", "", 0},
			{"echo out; echo err >&2; exit 3", "out\n", "err\n", 3},
			{"printf 'no newline'", "no newline", "", 0},
			{"false", "", "", 1},
		}
		for _, c := range cases {
			var out, errb bytes.Buffer
			res, err := tr.Run(ctxT(t), patcher.Command{Script: c.script, Stdout: &out, Stderr: &errb, Timeout: 20 * time.Second})
			if err != nil {
				t.Fatalf("%q: %v", c.script, err)
			}
			if res.ExitCode != c.code || out.String() != c.stdout || errb.String() != c.stderr {
				t.Errorf("%q: got code %d stdout %q stderr %q; want %d %q %q", c.script, res.ExitCode, out.String(), errb.String(), c.code, c.stdout, c.stderr)
			}
		}
	})

	t.Run("env and cwd", func(t *testing.T) {
		tr := open(t)
		var out bytes.Buffer
		res, err := tr.Run(ctxT(t), patcher.Command{
			Script:  `printf '%s|%s|%s\n' "$PATCH_VAR_A" "$PATCH_VAR_B" "$(pwd)"`,
			Env:     map[string]string{"PATCH_VAR_A": "it's \"quoted\" $HOME", "PATCH_VAR_B": "two\nlines"},
			Dir:     dir,
			Stdout:  &out,
			Timeout: 20 * time.Second,
		})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("run: %v (exit %d)", err, res.ExitCode)
		}
		want := "it's \"quoted\" $HOME|two\nlines|" + dir + "\n"
		if out.String() != want {
			t.Errorf("got %q, want %q", out.String(), want)
		}
	})

	t.Run("long script", func(t *testing.T) {
		tr := open(t)
		long := strings.Repeat("x", 6000)
		var out bytes.Buffer
		res, err := tr.Run(ctxT(t), patcher.Command{
			Script:  "# " + strings.Repeat("comment ", 600) + "\nv='" + long + "'\necho ${#v}\n",
			Stdout:  &out,
			Timeout: 30 * time.Second,
		})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("run: %v (exit %d)", err, res.ExitCode)
		}
		if strings.TrimSpace(out.String()) != "6000" {
			t.Errorf("got %q, want 6000", out.String())
		}
	})

	t.Run("uploads", func(t *testing.T) {
		tr := open(t)
		for _, size := range []int{0, 1, 64 << 10, 1000} {
			data := make([]byte, size)
			_, _ = rand.Read(data)
			sum := sha256.Sum256(data)
			path := filepath.Join(dir, fmt.Sprintf("up-%d.bin", size))
			err := tr.Upload(ctxT(t), patcher.File{Path: path, Mode: 0o640, Data: bytes.NewReader(data), Size: int64(size), SHA256: hex.EncodeToString(sum[:])})
			if err != nil {
				t.Fatalf("upload %d bytes: %v", size, err)
			}
			// Verified on the device by the transport; check again here.
			var out bytes.Buffer
			if _, err := tr.Run(ctxT(t), patcher.Command{Script: "sha256sum " + patcher.ShellQuote(path) + "; stat -c %a " + patcher.ShellQuote(path), Stdout: &out, Timeout: 20 * time.Second}); err != nil {
				t.Fatal(err)
			}
			f := strings.Fields(out.String())
			if len(f) < 3 || f[0] != hex.EncodeToString(sum[:]) || f[2] != "640" {
				t.Errorf("upload %d bytes: device reports %q, want sha256 %x mode 640", size, out.String(), sum)
			}
		}
		// A wrong expected checksum is refused and leaves no file.
		path := filepath.Join(dir, "bad.bin")
		err := tr.Upload(ctxT(t), patcher.File{Path: path, Data: strings.NewReader("abc"), Size: 3, SHA256: strings.Repeat("0", 64)})
		if !errors.Is(err, patcher.ErrChecksum) {
			t.Errorf("upload with wrong sha256: got %v, want ErrChecksum", err)
		}
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s exists after a failed upload", path)
		}
	})

	t.Run("timeout kills the process", func(t *testing.T) {
		tr := open(t)
		n := strconv.Itoa(500 + mrand.IntN(100000))
		start := time.Now()
		_, err := tr.Run(ctxT(t), patcher.Command{Script: "echo started; sleep " + n + "; echo never", Timeout: time.Second})
		if !errors.Is(err, patcher.ErrTimeout) {
			t.Fatalf("got %v, want ErrTimeout", err)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("timeout took %s", d)
		}
		waitGone(t, "sleep", n)
		// The transport is still usable.
		var out bytes.Buffer
		res, err := tr.Run(ctxT(t), patcher.Command{Script: "echo after", Stdout: &out, Timeout: 20 * time.Second})
		if err != nil || res.ExitCode != 0 || out.String() != "after\n" {
			t.Errorf("run after timeout: %v exit %d out %q", err, res.ExitCode, out.String())
		}
	})

	t.Run("become", func(t *testing.T) {
		if opts.NoBecomeReason != "" {
			t.Skip(opts.NoBecomeReason)
		}
		tr := open(t)
		var out bytes.Buffer
		res, err := tr.Run(ctxT(t), patcher.Command{Script: "id -u", Become: true, Stdout: &out, Timeout: 20 * time.Second})
		if err != nil || res.ExitCode != 0 || strings.TrimSpace(out.String()) != "0" {
			t.Errorf("become: %v exit %d out %q, want uid 0", err, res.ExitCode, out.String())
		}
	})

	t.Run("connection dropped mid-step", func(t *testing.T) {
		if opts.Drop == nil {
			t.Skip("no way to drop this transport's connection")
		}
		tr := open(t)
		ctx := ctxT(t)
		started := make(chan struct{})
		w := &notify{ch: started}
		errc := make(chan error, 1)
		go func() {
			// Ends by itself once its output has nowhere to go.
			_, err := tr.Run(ctx, patcher.Command{Script: "i=0; while echo tick; do sleep 0.2; i=$((i+1)); [ $i -gt 150 ] && break; done", Stdout: w, Timeout: 40 * time.Second})
			errc <- err
		}()
		select {
		case <-started:
		case err := <-errc:
			t.Fatalf("command ended before the drop: %v", err)
		case <-ctx.Done():
			t.Fatal("command never produced output")
		}
		opts.Drop()
		select {
		case err := <-errc:
			if !errors.Is(err, patcher.ErrConnLost) {
				t.Errorf("got %v, want ErrConnLost", err)
			}
		case <-ctx.Done():
			t.Fatal("Run did not return after the connection was dropped")
		}
	})
}

// waitGone waits until no process runs with exactly argv, failing after 15s.
func waitGone(t *testing.T, argv ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(testservers.ProcessesRunning(argv...)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%q still running after the timeout: pids %v", strings.Join(argv, " "), testservers.ProcessesRunning(argv...))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// notify closes ch on the first write.
type notify struct {
	ch   chan struct{}
	done bool
}

func (n *notify) Write(b []byte) (int, error) {
	if !n.done && len(b) > 0 {
		n.done = true
		close(n.ch)
	}
	return len(b), nil
}
