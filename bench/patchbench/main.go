// Command patchbench measures how fast ggfleet patches client devices and
// prints the figures BENCHMARKS.md reports as a Markdown fragment:
//
//   - serial: one upload through serialtransport.Upload to a real shell
//     behind a pseudo-terminal paced like a 115200 8N1 line (10 bits per
//     byte, in Go between the two pty masters), against the most payload
//     base64 can carry over that line (3/4 of the raw byte rate);
//   - ssh: one patch (an upload with checksum, then a step running
//     `sleep 1`) to many SSH targets at a given concurrency through the
//     agent's patch runner, against a sequential `scp` + `ssh` loop doing
//     the same with the OpenSSH client binaries, both against one real
//     sshd on 127.0.0.1.
//
// It starts its own servers, needs root (sshd, and it creates the plain
// /bin/sh login ggbench the SSH targets are reached as) and cleans up
// after itself. It asserts nothing: the figures are for people to read
// against the targets (serial ≥ 0.9 of the bound, ssh ≥ 10× the loop).
// `make bench-patch` runs it with the sizes BENCHMARKS.md reports.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Targets from the issue.
const (
	targetSerialRatio = 0.9
	targetSSHSpeedup  = 10.0
)

// params is everything the command line selects.
type params struct {
	Run    []string // "serial", "ssh"
	Serial serialParams
	SSH    sshParams
}

func main() {
	var p params
	run := flag.String("run", "serial,ssh", "comma-separated measurements to run: serial, ssh")
	flag.IntVar(&p.Serial.Size, "serial-size", 1<<20, "bytes uploaded over the paced serial console")
	flag.IntVar(&p.Serial.Baud, "serial-baud", 115200, "line rate of the paced console (8N1: 10 bits per byte)")
	flag.StringVar(&p.Serial.Shell, "serial-shell", "dash", "device shell behind the console: dash, bash or busybox")
	flag.IntVar(&p.SSH.Targets, "ssh-targets", 50, "SSH targets patched")
	flag.IntVar(&p.SSH.Concurrency, "ssh-concurrency", 16, "patches running at once on the measured side")
	flag.IntVar(&p.SSH.Size, "ssh-size", 5<<20, "bytes uploaded to each SSH target")
	flag.StringVar(&p.SSH.Step, "ssh-step", "sleep 1", "the step each SSH patch runs after the upload and checksum")
	out := flag.String("out", "", "also write the Markdown fragment to this file")
	verbose := flag.Bool("v", false, "log transport debug output to stderr")
	flag.Parse()
	p.Run = strings.Split(*run, ",")
	if runtime.GOOS != "linux" {
		fmt.Fprintln(os.Stderr, "patchbench: runs on Linux only (pseudo-terminals, sshd)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var h slog.Handler = slog.DiscardHandler
	if *verbose {
		h = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	md, err := measure(ctx, slog.New(h), os.Stderr, p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "patchbench:", err)
		os.Exit(1)
	}
	fmt.Print(md)
	if *out != "" {
		err := os.MkdirAll(filepath.Dir(*out), 0o755)
		if err == nil {
			err = os.WriteFile(*out, []byte(md), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "patchbench:", err)
			os.Exit(1)
		}
	}
}

// measure runs the selected measurements and returns the Markdown report;
// progress goes to progress.
func measure(ctx context.Context, log *slog.Logger, progress io.Writer, p params) (string, error) {
	logf := func(format string, a ...any) {
		fmt.Fprintf(progress, "%s patchbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}
	tmp, err := os.MkdirTemp("", "patchbench-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// sshd reads authorized_keys and the targets write their files here.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	started := time.Now()
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s by `go run ./bench/patchbench %s` on %s; load average at the start %s.\n\n",
		started.UTC().Format("2006-01-02 15:04 UTC"), flagLine(p), machine(), loadAverage())
	for _, what := range p.Run {
		switch strings.TrimSpace(what) {
		case "serial":
			sp := p.Serial
			sp.Dir = tmp
			logf("serial: uploading %d bytes at %d 8N1 to %s (about %s)", sp.Size, sp.Baud, sp.Shell,
				time.Duration(float64(sp.Size)*4/3/(float64(sp.Baud)/10)*float64(time.Second)).Round(time.Second))
			r, err := benchSerial(ctx, log, sp)
			if err != nil {
				return "", err
			}
			logf("serial: %.0f B/s of payload in %s, %.3f of the %.0f B/s base64 bound", r.Achieved, r.Elapsed.Round(time.Millisecond), r.Ratio(), r.PayloadBound)
			b.WriteString(r.markdown())
		case "ssh":
			sp := p.SSH
			sp.Dir = tmp
			r, err := benchSSH(ctx, log, logf, sp)
			if err != nil {
				return "", err
			}
			b.WriteString(r.markdown())
		default:
			return "", fmt.Errorf("-run: unknown measurement %q (want serial, ssh)", what)
		}
	}
	fmt.Fprintf(&b, "Load average at the end: %s (other work on the machine slows both sides).\n", loadAverage())
	return b.String(), nil
}

// loadAverage is the 1-minute load average, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

func (r serialResult) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| serial upload (%s behind a %d 8N1 console) | |\n|---|---|\n", r.Shell, r.Baud)
	fmt.Fprintf(&b, "| payload | %d bytes (%d base64 characters) |\n", r.Size, (r.Size+2)/3*4)
	fmt.Fprintf(&b, "| line rate | %.0f B/s raw, %.0f B/s payload bound (base64: 3/4) |\n", r.LineBytesPerSec, r.PayloadBound)
	fmt.Fprintf(&b, "| Upload time | %s |\n", r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "| achieved | **%.0f B/s = %.3f × the bound** (target ≥ %.1f×) |\n\n", r.Achieved, r.Ratio(), targetSerialRatio)
	return b.String()
}

func flagLine(p params) string {
	return fmt.Sprintf("-run %s -serial-size %d -serial-baud %d -serial-shell %s -ssh-targets %d -ssh-concurrency %d -ssh-size %d",
		strings.Join(p.Run, ","), p.Serial.Size, p.Serial.Baud, p.Serial.Shell, p.SSH.Targets, p.SSH.Concurrency, p.SSH.Size)
}

// machine describes the host in a few words.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d × %s, %s", runtime.NumCPU(), model, runtime.Version())
}
