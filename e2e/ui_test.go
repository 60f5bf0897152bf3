package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool finds a program the browser test needs. Outside CI a missing
// tool skips the test, saying what to install; in CI (.ci/run installs
// them) it fails.
func needTool(t *testing.T, install string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := strings.Join(names, " or ") + " not found: " + install
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestDashboardInBrowser drives the dashboard at /ui in headless Chromium
// (e2e/ui/dashboard.spec.mjs): log in with the token, the fleet summary
// chart and table, the cores list, a deployment started with the ggfleet
// CLI that reaches Success on the page through the events stream without a
// reload, a core's detail, a patch task, logout. Screenshots go to testout/ui/.
func TestDashboardInBrowser(t *testing.T) {
	browser := needTool(t, "apt-get install chromium", "chromium", "chromium-browser")
	node := needTool(t, "apt-get install nodejs npm", "node")
	specDir, err := filepath.Abs("ui")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(specDir, "node_modules", "playwright-core")); err != nil {
		msg := "playwright-core is not installed: run npm ci in e2e/ui"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	outDir, err := filepath.Abs(filepath.Join("..", "testout", "ui"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}

	const (
		core      = "ui-core-1"
		otherCore = "ui-core-2"
		device    = "ui-dev-1"
		template  = "UiT"
	)
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	b.readyCore(core)
	b.readyCore(otherCore)
	dir := b.enrollAgent(core)
	start := time.Now()
	// Slow simulated steps, so the page can show the task before it ends.
	startAgent(t, dir, stepDelayEnv+"=3s")
	b.waitOnline(core, start.Add(-time.Second))

	// The fleet the page will show: core on UiT v1 (deployed), a v2 to
	// deploy from the CLI, a client device, and a core with no template.
	b.must(201, "POST", "/templates", map[string]any{"name": template,
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	if task := b.waitTask("/deploymentTasks/"+b.deploy(template, core), 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("first deployment = %v", task)
	}
	waitFor(t, time.Minute, "the fleet summary counting UiT v1 as reported", func() bool {
		return fleetVersion(t, b, template, "1")["reportedInUse"] == float64(1)
	})
	b.must(204, "PUT", "/templates/"+template, map[string]any{"components": []map[string]any{
		{"key": "aws.greengrass.Cli", "version": "2.4.0"},
		{"key": "com.example.Hello", "version": "1.0.0"}}})
	r := b.must(202, "POST", "/cores/"+core+"/deviceTasks", map[string]any{"type": "Create", "devices": []map[string]any{
		{"name": device, "provisioningTemplate": "ggfleet-client-device", "provisioningParameters": map[string]string{"ThingName": device}}}})
	if task := b.waitTask("/deviceTasks/"+r.Header.Get("x-taskid"), time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("client device task = %v", task)
	}

	// A patch task for a device without a target profile: its patch fails
	// at dispatch, which the patch-tasks view shows.
	r = b.must(202, "POST", "/patchTasks", map[string]any{"patches": []map[string]any{
		{"deviceId": device, "patchTemplateName": "ui-no-such-template"}}})
	patchTask := r.Header.Get("x-taskId")
	if patchTask == "" {
		t.Fatalf("POST /patchTasks answered no x-taskId: %v", r.Header)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "dashboard.spec.mjs")
	cmd.Dir = specDir
	cmd.Env = append(os.Environ(),
		"GGFLEET_URL="+b.url, "GGFLEET_TOKEN="+b.token, "GGFLEET_BIN="+filepath.Join(binDir, "ggfleet"),
		"CHROMIUM="+browser, "OUT_DIR="+outDir,
		"CORE="+core, "OTHER_CORE="+otherCore, "TEMPLATE="+template, "DEVICE="+device, "PATCH_TASK="+patchTask)
	out, err := cmd.CombinedOutput()
	t.Logf("dashboard.spec.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("the browser test failed (%v); screenshots in %s", err, outDir)
	}
	if !strings.Contains(string(out), "[ui] PASS") {
		t.Fatal("the browser test ended without PASS")
	}
}
