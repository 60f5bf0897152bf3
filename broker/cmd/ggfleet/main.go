// Command ggfleet is the ggfleet broker (`ggfleet serve`) and its operator CLI.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ggfleet/ggfleet/broker/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
