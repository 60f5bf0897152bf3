// Command awsbench measures how close `ggfleet serve --provider aws` runs
// a big core task to the AWS quota ceiling, and prints the figures
// BENCHMARKS.md reports as a Markdown fragment.
//
// It starts the in-repo AWS fake (awsfake, which enforces AWS's default
// per-operation TPS quotas with ThrottlingException) and a broker in this
// process with --provider aws pointed at it, submits one core Create task
// of -cores cores, and waits for it. The ceiling is set by the bottleneck
// operation: the one whose calls per core divided by its quota is largest;
// the ceiling in cores per second is quota / (calls per core). The achieved
// rate is cores / wall time from submission to the task's end. It also
// reports failed cores and every operation's calls, throttled calls and
// achieved share of its quota. `make bench-aws` runs it with 2,000 cores.
// It asserts nothing: the figures are for people to read against the
// target (>= 0.95 of the ceiling, 0 failed cores).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var o options
	flag.IntVar(&o.Cores, "cores", 2000, "cores in the task")
	flag.IntVar(&o.Workers, "workers", 64, "broker --workers (task batches worked at once)")
	flag.DurationVar(&o.Latency, "latency", 20*time.Millisecond, "latency the fake adds to every AWS response")
	flag.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "give up after this long")
	out := flag.String("out", "", "also write the Markdown fragment to this file")
	verbose := flag.Bool("v", false, "log the broker to stderr")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.Logger = slog.New(slog.DiscardHandler)
	if *verbose {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	o.Progress = os.Stderr
	res, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "awsbench:", err)
		os.Exit(1)
	}
	md := res.Markdown()
	fmt.Print(md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "awsbench:", err)
			os.Exit(1)
		}
	}
}

// progress writes a line to w when w is not nil.
func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}
