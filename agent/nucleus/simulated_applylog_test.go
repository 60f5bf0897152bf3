package nucleus_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/agent/nucleus"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// TestSimulatedApplyLog: every Apply call, even one that changes nothing or
// fails, leaves one line naming its deployment in SimApplyLogFile.
func TestSimulatedApplyLog(t *testing.T) {
	dir := t.TempDir()
	rt, err := nucleus.NewSimulated(dir, nucleus.SimOptions{FailComponents: []string{"bad"}})
	if err != nil {
		t.Fatal(err)
	}
	docs := []mqttmsg.DeploymentMsg{
		{Version: 1, DeploymentID: "d1", Components: map[string]mqttmsg.ComponentSpec{"a": {ComponentVersion: "1"}}},
		{Version: 1, DeploymentID: "d1", Components: map[string]mqttmsg.ComponentSpec{"a": {ComponentVersion: "1"}}},
		{Version: 1, DeploymentID: "d2", Components: map[string]mqttmsg.ComponentSpec{"bad": {ComponentVersion: "1"}}},
	}
	for _, d := range docs {
		if _, err := rt.Apply(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, nucleus.SimApplyLogFile))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("apply log line %q: want \"<time> <deploymentId>\"", line)
		}
		ids = append(ids, f[1])
	}
	if strings.Join(ids, ",") != "d1,d1,d2" {
		t.Fatalf("apply log ids = %v, want d1,d1,d2", ids)
	}
	if st, err := os.Stat(filepath.Join(dir, nucleus.SimApplyLogFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("apply log mode: %v %v", st, err)
	}
}
