package mqttmsg

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestOwns(t *testing.T) {
	tests := []struct {
		thing, topic string
		want         bool
	}{
		{"core-1", "ggfleet/things/core-1/health", true},
		{"core-1", "ggfleet/things/core-1/#", true},
		{"core-1", "ggfleet/things/core-1/deployments/status", true},
		{"core-1", "ggfleet/things/core-2/health", false},
		{"core-1", "ggfleet/things/+/health", false},
		{"core-1", "ggfleet/things/#", false},
		{"core-1", "#", false},
		{"core-1", "ggfleet/things/core-1", false},
		{"core-1", "ggfleet/things/core-1/", false},
		{"core-1", "ggfleet/things/core-10/health", false},
		{"core", "ggfleet/things/core-1/health", false},
		{"", "ggfleet/things//health", false},
		{"a+b", "ggfleet/things/a+b/health", false},
		{"core-1", "$SYS/broker/clients", false},
	}
	for _, tt := range tests {
		if got := Owns(tt.thing, tt.topic); got != tt.want {
			t.Errorf("Owns(%q, %q) = %v, want %v", tt.thing, tt.topic, got, tt.want)
		}
	}
}

func TestParseTopic(t *testing.T) {
	tests := []struct {
		topic, thing, suffix string
		ok                   bool
	}{
		{"ggfleet/things/core-1/health", "core-1", "health", true},
		{"ggfleet/things/core-1/deployments/status", "core-1", "deployments/status", true},
		{"ggfleet/things/core-1", "", "", false},
		{"other/core-1/health", "", "", false},
		{"ggfleet/things/+/health", "", "", false},
	}
	for _, tt := range tests {
		thing, suffix, ok := ParseTopic(tt.topic)
		if thing != tt.thing || suffix != tt.suffix || ok != tt.ok {
			t.Errorf("ParseTopic(%q) = %q, %q, %v", tt.topic, thing, suffix, ok)
		}
	}
	if Topic("core-1", DeploymentStatus) != "ggfleet/things/core-1/deployments/status" {
		t.Error("Topic")
	}
}

// TestGolden pins the wire form of every message: field names and shapes
// are the contract with agents already in the field.
func TestGolden(t *testing.T) {
	ts := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	msgs := map[string]any{
		"connection": ConnectionMsg{Version: 1, State: Online, Timestamp: ts},
		"health": HealthMsg{Version: 1, ThingName: "core-1", Timestamp: ts, IntervalSeconds: 30, Status: Healthy,
			Nucleus:              NucleusState{State: "RUNNING", Version: "2.12.0"},
			Components:           []ComponentState{{Name: "aws.greengrass.Cli", Version: "2.12.0", State: "RUNNING"}},
			EffectiveDeployments: []EffectiveDeployment{{DeploymentID: "d-1", TemplateName: "edge", TemplateVersion: 2, Status: StatusSucceeded}},
			Platform:             "linux", Architecture: "amd64", AgentVersion: "1.0.0", UptimeSeconds: 3600,
			System:              SystemStats{CPUPercent: 1.5, MemUsedBytes: 100, MemTotalBytes: 1000, DiskFreeBytes: 5000},
			CertificateNotAfter: ts.AddDate(1, 0, 0)},
		"deployment": DeploymentMsg{Version: 1, DeploymentID: "d-1", TaskID: "abcdefghi", TemplateName: "edge", TemplateVersion: 2,
			Components: map[string]ComponentSpec{"aws.greengrass.Cli": {ComponentVersion: "2.12.0",
				ConfigurationUpdate: &ConfigurationUpdate{Merge: `{"a":1}`, Reset: []string{"/b"}}, RunWith: &RunWith{PosixUser: "ggc_user:ggc_group"}}},
			DeploymentPolicies: json.RawMessage(`{"failureHandlingPolicy":"ROLLBACK"}`), CreatedAt: ts},
		"deployment-status": DeploymentStatusMsg{Version: 1, DeploymentID: "d-1", TaskID: "abcdefghi", Status: StatusFailed,
			DetailedStatus: DetailFailedRollbackComplete, Stage: "apply", Reason: "component aws.greengrass.Cli failed", Timestamp: ts},
		"hello": HelloMsg{Version: 1, AgentVersion: "1.0.0", Capabilities: []string{"deployments", "health"}, Patches: []PatchState{{PatchID: "p-1", Attempt: 1, State: "running"}}},
	}
	for name, m := range msgs {
		t.Run(name, func(t *testing.T) {
			got, err := json.MarshalIndent(m, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if string(want) != string(got)+"\n" {
				t.Fatalf("%s changed:\n got %s\nwant %s", name, got, want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	if _, err := Decode[HealthMsg]([]byte(`{"version":1,"status":"HEALTHY","extra":"ignored"}`)); err != nil {
		t.Fatalf("valid health: %v", err)
	}
	bad := []struct {
		name    string
		payload string
	}{
		{"no version", `{"status":"HEALTHY"}`},
		{"bad status", `{"version":1,"status":"FINE"}`},
		{"not JSON", `{`},
		{"wrong type", `{"version":"1"}`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode[HealthMsg]([]byte(tt.payload)); err == nil {
				t.Fatalf("Decode(%s) succeeded", tt.payload)
			}
		})
	}
	if _, err := Decode[DeploymentStatusMsg]([]byte(`{"version":1,"deploymentId":"d","status":"DONE"}`)); err == nil {
		t.Fatal("bad deployment status accepted")
	}
	if _, err := Decode[ConnectionMsg]([]byte(`{"version":1,"state":"OFFLINE"}`)); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"version":1,"status":"HEALTHY"}`, `{"version":1,"deploymentId":"d","status":"SUCCEEDED"}`, `{"version":1,"state":"ONLINE"}`, `[]`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Decode[HealthMsg](b)
		_, _ = Decode[DeploymentStatusMsg](b)
		_, _ = Decode[ConnectionMsg](b)
		_, _ = Decode[DeploymentMsg](b)
		_, _ = Decode[HelloMsg](b)
	})
}
