package nucleus_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/agent/nucleus"
	"github.com/ggfleet/ggfleet/agent/nucleus/nucleustest"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// fakeCLI is the stand-in greengrass-cli/systemctl built once per test run.
var fakeCLI string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "fakecli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakeCLI = filepath.Join(dir, "fakecli")
	cmd := exec.Command("go", "build", "-o", fakeCLI, "./testdata/fakecli")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the stand-in greengrass-cli:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeNucleus lays out a Greengrass root with the stand-in programs in
// <root>/bin and returns the root and the runtime using it.
func fakeNucleus(t *testing.T) (root string, rt *nucleus.Greengrass) {
	t.Helper()
	root = t.TempDir()
	bin := filepath.Join(root, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, fakeCLI, filepath.Join(bin, "greengrass-cli"))
	if err := os.Symlink("greengrass-cli", filepath.Join(bin, "systemctl")); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	rt = nucleus.NewGreengrass(nucleus.GreengrassConfig{
		Root:         root,
		Systemctl:    filepath.Join(bin, "systemctl"),
		StateDir:     state,
		PollInterval: 10 * time.Millisecond,
		Timeout:      time.Minute,
	})
	return root, rt
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestGreengrassSuite(t *testing.T) {
	roots := map[nucleus.Runtime]string{}
	nucleustest.Run(t,
		func(t *testing.T) nucleus.Runtime {
			root, rt := fakeNucleus(t)
			roots[rt] = root
			return rt
		},
		func(t *testing.T, rt nucleus.Runtime, component string) {
			t.Helper()
			if err := os.WriteFile(filepath.Join(roots[rt], "bin", "fail"), []byte(component+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		})
}

// TestGreengrassCommandLines pins the exact programs and arguments one
// deployment (and one nucleus check) runs.
func TestGreengrassCommandLines(t *testing.T) {
	root, rt := fakeNucleus(t)
	ctx := t.Context()
	first := mqttmsg.DeploymentMsg{Version: 1, DeploymentID: "d-1", TemplateName: "edge", TemplateVersion: 1,
		Components: map[string]mqttmsg.ComponentSpec{
			"com.example.Old":    {ComponentVersion: "1.0.0"},
			"com.example.Sensor": {ComponentVersion: "1.0.0"},
		}}
	if oc, err := rt.Apply(ctx, first); err != nil || oc.Status != mqttmsg.StatusSucceeded {
		t.Fatalf("first Apply = %+v, %v", oc, err)
	}
	argv := filepath.Join(root, "bin", "argv.log")
	if err := os.Remove(argv); err != nil {
		t.Fatal(err)
	}

	second := mqttmsg.DeploymentMsg{Version: 1, DeploymentID: "d-2", TemplateName: "edge", TemplateVersion: 2,
		Components: map[string]mqttmsg.ComponentSpec{
			"com.example.Sensor": {ComponentVersion: "1.1.0",
				ConfigurationUpdate: &mqttmsg.ConfigurationUpdate{Merge: `{"interval":5,"topic":"sensors/x"}`, Reset: []string{"/old"}},
				RunWith:             &mqttmsg.RunWith{PosixUser: "ggc_user:ggc_group"}},
			"com.example.Uploader": {ComponentVersion: "2.0.0"},
		},
		DeploymentPolicies: []byte(`{"failureHandlingPolicy":"ROLLBACK"}`)}
	oc, err := rt.Apply(ctx, second)
	if err != nil || oc.Status != mqttmsg.StatusSucceeded {
		t.Fatalf("second Apply = %+v, %v", oc, err)
	}
	ns, err := rt.Nucleus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ns != (mqttmsg.NucleusState{State: nucleus.StateRunning, Version: "2.12.0"}) {
		t.Errorf("Nucleus = %+v", ns)
	}
	got, err := os.ReadFile(argv)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "greengrass-commands.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if string(got) != string(want) {
		t.Fatalf("command lines changed:\n got:\n%s\nwant:\n%s", got, want)
	}
}

func TestGreengrassNucleusStates(t *testing.T) {
	tests := []struct {
		unit      string
		down      bool
		wantState string
	}{
		{"active", false, nucleus.StateRunning},
		{"inactive", true, nucleus.StateStopped},
		{"failed", true, nucleus.StateErrored},
		{"activating", true, nucleus.StateStarting},
		{"deactivating", true, nucleus.StateStopping},
	}
	for _, tt := range tests {
		t.Run(tt.unit, func(t *testing.T) {
			root, rt := fakeNucleus(t)
			writeFile(t, filepath.Join(root, "bin", "systemctl-state"), tt.unit)
			if tt.down {
				writeFile(t, filepath.Join(root, "bin", "nucleus-down"), "")
			}
			if err := os.Mkdir(filepath.Join(root, "config"), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(root, "config", "effectiveConfig.yaml"),
				"system:\n  rootpath: /greengrass/v2\nservices:\n  aws.greengrass.Nucleus:\n    componentType: NUCLEUS\n    version: 2.11.3\n")
			ns, err := rt.Nucleus(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			// The version comes from the effective config, without a JVM.
			if ns.State != tt.wantState || ns.Version != "2.11.3" {
				t.Fatalf("Nucleus() = %+v, want %s 2.11.3", ns, tt.wantState)
			}
			if log := readFile(t, filepath.Join(root, "bin", "argv.log")); strings.Contains(log, "greengrass-cli") {
				t.Errorf("Nucleus ran greengrass-cli although the config names the version:\n%s", log)
			}
		})
	}
}

func TestGreengrassNucleusDownIsAnError(t *testing.T) {
	root, rt := fakeNucleus(t)
	writeFile(t, filepath.Join(root, "bin", "nucleus-down"), "")
	if _, err := rt.Components(t.Context()); err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Fatalf("Components with the nucleus down: %v, want an error naming the cause", err)
	}
	d := mqttmsg.DeploymentMsg{Version: 1, DeploymentID: "d", TemplateName: "t",
		Components: map[string]mqttmsg.ComponentSpec{"a": {ComponentVersion: "1"}}}
	if _, err := rt.Apply(t.Context(), d); err == nil {
		t.Fatal("Apply with the nucleus down returned no error (it must be retried, not reported as FAILED)")
	}
}

func TestGreengrassTimeout(t *testing.T) {
	root, _ := fakeNucleus(t)
	// A CLI that accepts the deployment but never finishes it.
	script := "#!/bin/sh\ncase \"$1 $2\" in\n" +
		"'component list') echo 'Components currently running in Greengrass:';;\n" +
		"'deployment create') echo 'Local deployment submitted! Deployment Id: slow-1';;\n" +
		"*) echo 'slow-1: IN_PROGRESS';;\nesac\n"
	cli := filepath.Join(root, "bin", "slow-cli")
	if err := os.WriteFile(cli, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	rt := nucleus.NewGreengrass(nucleus.GreengrassConfig{Root: root, CLI: cli, PollInterval: 10 * time.Millisecond, Timeout: 200 * time.Millisecond})
	d := mqttmsg.DeploymentMsg{Version: 1, DeploymentID: "d", TemplateName: "t",
		Components: map[string]mqttmsg.ComponentSpec{"a": {ComponentVersion: "1"}}}
	oc, err := rt.Apply(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	if oc.Status != mqttmsg.StatusFailed || !strings.Contains(oc.Reason, "did not finish local deployment slow-1") {
		t.Fatalf("Apply = %+v, want FAILED saying the deployment did not finish", oc)
	}

	// Cancelling the caller's context is not a failed deployment.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := rt.Apply(ctx, d); err == nil {
		t.Fatal("Apply with a cancelled context returned no error")
	}
}

func TestGreengrassRejectsBadConfig(t *testing.T) {
	_, rt := fakeNucleus(t)
	d := mqttmsg.DeploymentMsg{Version: 1, DeploymentID: "d", TemplateName: "t",
		Components: map[string]mqttmsg.ComponentSpec{"a": {ComponentVersion: "1",
			ConfigurationUpdate: &mqttmsg.ConfigurationUpdate{Merge: "not json"}}}}
	oc, err := rt.Apply(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	if oc.Status != mqttmsg.StatusFailed || oc.DetailedStatus != mqttmsg.DetailRejected || oc.Stage != "validate" {
		t.Fatalf("Apply = %+v, want FAILED/REJECTED at validate", oc)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
