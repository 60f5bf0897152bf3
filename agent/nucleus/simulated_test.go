package nucleus_test

import (
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ggfleet/ggfleet/agent/nucleus"
	"github.com/ggfleet/ggfleet/agent/nucleus/nucleustest"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

func TestSimulatedSuite(t *testing.T) {
	dirs := map[nucleus.Runtime]string{}
	nucleustest.Run(t,
		func(t *testing.T) nucleus.Runtime {
			dir := t.TempDir()
			rt, err := nucleus.NewSimulated(dir, nucleus.SimOptions{})
			if err != nil {
				t.Fatal(err)
			}
			dirs[rt] = dir
			return rt
		},
		func(t *testing.T, rt nucleus.Runtime, component string) {
			t.Helper()
			if err := os.WriteFile(filepath.Join(dirs[rt], nucleus.SimFailFile), []byte("# demo\n"+component+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		})
}

func TestSimulatedFailOption(t *testing.T) {
	rt, err := nucleus.NewSimulated(t.TempDir(), nucleus.SimOptions{FailComponents: []string{"com.example.X"}})
	if err != nil {
		t.Fatal(err)
	}
	d := mqttmsg.DeploymentMsg{Version: 1, DeploymentID: "d", TemplateName: "t",
		Components: map[string]mqttmsg.ComponentSpec{"com.example.X": {ComponentVersion: "1.0.0"}}}
	oc, err := rt.Apply(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	want := nucleus.Outcome{Status: mqttmsg.StatusFailed, DetailedStatus: mqttmsg.DetailFailedRollbackComplete,
		Stage: "apply", Reason: "component com.example.X failed to start"}
	if oc != want {
		t.Fatalf("Apply = %+v, want %+v", oc, want)
	}
}

func TestSimulatedStepDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, err := nucleus.NewSimulated(t.TempDir(), nucleus.SimOptions{StepDelay: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		d := mqttmsg.DeploymentMsg{Version: 1, DeploymentID: "d", TemplateName: "t",
			Components: map[string]mqttmsg.ComponentSpec{"a": {ComponentVersion: "1"}, "b": {ComponentVersion: "1"}}}
		start := time.Now()
		if _, err := rt.Apply(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 2*time.Second {
			t.Fatalf("two installs took %v of fake time, want 2s", got)
		}
		start = time.Now()
		if _, err := rt.Apply(t.Context(), d); err != nil { // nothing changes: no steps
			t.Fatal(err)
		}
		if got := time.Since(start); got != 0 {
			t.Fatalf("re-apply took %v, want 0", got)
		}
	})
}

func TestNewSimulatedMissingDir(t *testing.T) {
	if _, err := nucleus.NewSimulated(filepath.Join(t.TempDir(), "missing"), nucleus.SimOptions{}); err == nil {
		t.Fatal("NewSimulated accepted a missing directory")
	}
}
