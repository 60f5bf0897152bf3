package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// need skips outside CI (saying what to install) and fails in CI when a
// program the benchmark drives is missing.
func need(t *testing.T, bin, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err == nil {
		return
	} else if _, serr := os.Stat("/usr/sbin/" + bin); serr == nil {
		return
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s not found: install it with `apt-get install -y %s` to run this test", bin, pkg)
	}
	t.Fatalf("%s not found but CI is set: .ci/run must `apt-get install -y %s`", bin, pkg)
}

// TestMeasureSmall runs both measurements at small sizes: the harness
// must upload intact files (it checks them) and report every figure. It
// asserts no speed: timings on a shared machine are not a test.
func TestMeasureSmall(t *testing.T) {
	need(t, "dash", "dash")
	need(t, "sshd", "openssh-server")
	need(t, "ssh", "openssh-client")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "" {
			t.Skip("needs root: sshd must run as root to log users in")
		}
		t.Fatal("needs root in CI: sshd must run as root to log users in")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := params{
		Run:    []string{"serial", "ssh"},
		Serial: serialParams{Size: 6000, Baud: 115200, Shell: "dash"},
		SSH:    sshParams{Targets: 3, Concurrency: 2, Size: 100_000, Step: "test -s payload.bin"},
	}
	md, err := measure(ctx, slog.New(slog.DiscardHandler), io.Discard, p)
	if err != nil {
		t.Fatalf("measure: %v", err)
	}
	for _, want := range []string{
		"| payload | 6000 bytes (8000 base64 characters) |",
		"| line rate | 11520 B/s raw, 8640 B/s payload bound",
		"| SSH patch to 3 targets (100000 bytes + sha256 check + `test -s payload.bin`)",
		"concurrency 2 |",
		"| sequential `scp` + `ssh` loop",
		"| speed-up | **",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestPaceHoldsTheRate: the pacer between the pty masters never delivers
// faster than the line rate over a busy period.
func TestPaceHoldsTheRate(t *testing.T) {
	const rate = 20_000.0 // bytes per second
	r, w := io.Pipe()
	data := make([]byte, 10_000)
	go func() {
		_, _ = w.Write(data)
		w.Close()
	}()
	start := time.Now()
	var got countWriter
	if err := pace(&got, r, rate); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if got.n != len(data) {
		t.Fatalf("delivered %d bytes, want %d", got.n, len(data))
	}
	if need := time.Duration(float64(len(data)) / rate * float64(time.Second)); elapsed < need {
		t.Errorf("10000 bytes at %.0f B/s took %s, less than the %s the line needs", rate, elapsed, need)
	}
}

type countWriter struct{ n int }

func (c *countWriter) Write(b []byte) (int, error) { c.n += len(b); return len(b), nil }
