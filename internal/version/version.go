// Package version carries the build's version, stamped with -ldflags -X at
// release time, so both binaries and their reports say what they are.
package version

import (
	"fmt"
	"runtime"
)

// Version and Commit are set with -ldflags "-X github.com/ggfleet/ggfleet/internal/version.Version=...".
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the one-line version report printed by `version` and `--version`.
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, %s/%s)", program, Version, Commit, runtime.GOOS, runtime.GOARCH)
}
