package e2e

import (
	"os"
	"testing"
)

// The fault suite's scale knob. `go test ./e2e` (and CI) runs every fault
// case in its reduced form: fewer seeds, smaller tasks, shorter outages.
// GGFLEET_FAULTS=full (what `make faults` sets) runs the sizes the issue
// names: 10 seeds of a 1,000-core task, 2-minute outages, 5,000 agents.
const faultsEnv = "GGFLEET_FAULTS"

// faultsFull reports whether the full fault suite was asked for.
func faultsFull() bool { return os.Getenv(faultsEnv) == "full" }

// scale picks the reduced or the full figure of a fault case.
func scale[T any](reduced, full T) T {
	if faultsFull() {
		return full
	}
	return reduced
}

// faultCase logs which size of a fault case runs, so a run's output says
// what it proved.
func faultCase(t *testing.T, format string, args ...any) {
	t.Helper()
	size := "reduced (set " + faultsEnv + "=full or run make faults for the full sizes)"
	if faultsFull() {
		size = "full"
	}
	t.Logf("fault case, %s: "+format, append([]any{size}, args...)...)
}
