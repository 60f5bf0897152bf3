// Command renderunits writes the systemd units and /etc/default files the
// .deb/.rpm packages ship (packaging.ShippedFiles) into a directory, so
// that nfpm packages exactly the bytes `ggagent install` writes.
//
// Usage: go run ./packaging/cmd/renderunits DIR
package main

import (
	"fmt"
	"os"

	"github.com/ggfleet/ggfleet/packaging"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: renderunits DIR")
		os.Exit(2)
	}
	if err := packaging.WriteShippedFiles(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "renderunits:", err)
		os.Exit(1)
	}
}
