// Package nucleus is the agent's one way to drive the Greengrass nucleus on
// its core: apply a deployment document, list the components and their
// states, and tell whether the nucleus itself runs. Two implementations sit
// behind the Runtime interface and pass one behaviour suite
// (nucleus/nucleustest): Greengrass drives a real nucleus through
// greengrass-cli and systemctl; Simulated keeps components in a file, for
// demos, tests and benchmarks. Only agent packages import it (agent/deploy,
// agent/health, agent/daemon).
package nucleus

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// Runtime applies deployments to a nucleus and reports its state.
//
// Every method may be called from several goroutines. An error return means
// "could not find out, try again later" (the nucleus is restarting, the CLI
// timed out); a deployment that ran and failed is an Outcome, not an error.
type Runtime interface {
	// Name is the runtime's name as --runtime spells it ("greengrass", "simulated").
	Name() string
	// Apply makes the core's components match d: components in d are
	// installed or upgraded (with their configuration updates), components
	// ggfleet deployed earlier that d no longer names are removed. Applying
	// the same document twice is harmless.
	Apply(ctx context.Context, d mqttmsg.DeploymentMsg) (Outcome, error)
	// Components lists the components on the core and their states.
	Components(ctx context.Context) ([]mqttmsg.ComponentState, error)
	// Nucleus reports the nucleus's own state (RUNNING, STOPPED, …) and version.
	Nucleus(ctx context.Context) (mqttmsg.NucleusState, error)
}

// Outcome is how a deployment ended.
type Outcome struct {
	// Status is mqttmsg.StatusSucceeded or mqttmsg.StatusFailed.
	Status string
	// DetailedStatus is one of the mqttmsg.Detail* values.
	DetailedStatus string
	// Stage names the step that failed (empty on success).
	Stage string
	// Reason says why, in words an operator can act on (empty on success).
	Reason string
}

// Succeeded is the Outcome of a deployment that went through.
func Succeeded() Outcome {
	return Outcome{Status: mqttmsg.StatusSucceeded, DetailedStatus: mqttmsg.DetailSuccessful}
}

// Component states as Greengrass names them.
const (
	StateNew       = "NEW"
	StateInstalled = "INSTALLED"
	StateStarting  = "STARTING"
	StateRunning   = "RUNNING"
	StateStopping  = "STOPPING"
	StateFinished  = "FINISHED"
	StateErrored   = "ERRORED"
	StateBroken    = "BROKEN"
	StateStopped   = "STOPPED"
	StateUnknown   = "UNKNOWN"
)

// NucleusComponent is the component key of the nucleus itself.
const NucleusComponent = "aws.greengrass.Nucleus"

// writeFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed, so a crash leaves the old or the new file,
// never half of one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
