// Command ggagent is the ggfleet agent that runs on each Greengrass core:
// it enrolls the device with the broker and runs as its system service.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ggfleet/ggfleet/agent/cli"
	"github.com/ggfleet/ggfleet/agent/daemon"
)

func main() {
	cli.RunAgent = daemon.Run
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
