package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// armTarget is one ARM build of ggagent and the qemu-user emulator that runs
// it on the (amd64) test machine.
type armTarget struct {
	name   string   // subtest name
	env    []string // GOARCH (and GOARM) for go build
	qemu   string   // qemu-user emulator binary
	goarch string   // what the agent reports as its architecture
}

// TestAgentUnderQemu runs the arm64 and armv7 builds of ggagent under
// qemu-user: `ggagent version` names the target, and an enrolled agent with
// the simulated runtime reaches HEALTHY and ONLINE on a broker on the host,
// reporting its own architecture. Devices are mostly ARM; this is the check
// that the cross builds work, not just compile.
func TestAgentUnderQemu(t *testing.T) {
	targets := []armTarget{
		{name: "arm64", env: []string{"GOARCH=arm64"}, qemu: "qemu-aarch64-static", goarch: "arm64"},
		{name: "armv7", env: []string{"GOARCH=arm", "GOARM=7"}, qemu: "qemu-arm-static", goarch: "arm"},
	}
	for _, tc := range targets {
		t.Run(tc.name, func(t *testing.T) {
			qemu := findQemu(t, tc.qemu)
			agent := crossBuildAgent(t, tc.env)

			res := runQemu(t, qemu, agent, "version")
			if res.code != 0 || !regexp.MustCompile(`linux/`+tc.goarch+`\b`).MatchString(res.stdout) {
				t.Fatalf("ggagent version under %s: want linux/%s\n%s", tc.qemu, tc.goarch, res)
			}

			core := "qemu-" + tc.name
			b := startBroker(t)
			logBrokerOnFailure(t, b)
			b.readyCore(core)
			dir := filepath.Join(t.TempDir(), "state")
			res = runQemu(t, qemu, agent, "enroll", "--broker", b.url, "--core", core,
				"--token", b.enrollmentToken(core), "--state-dir", dir)
			if res.code != 0 || !strings.Contains(res.stdout, `Enrolled core "`+core+`"`) {
				t.Fatalf("ggagent enroll under %s: %s", tc.qemu, res)
			}

			startQemuAgent(t, qemu, agent, dir)
			var d map[string]any
			waitFor(t, 2*time.Minute, core+" HEALTHY and ONLINE", func() bool {
				d = b.device(core)
				return d["status"] == "HEALTHY" && d["connectivity"] == "ONLINE"
			})
			if d["architecture"] != tc.goarch || d["platform"] != "linux" {
				t.Fatalf("device reports platform %v architecture %v, want linux %s", d["platform"], d["architecture"], tc.goarch)
			}
		})
	}
}

// findQemu returns the emulator's path. A machine without it skips the test;
// CI must have it, so there a missing emulator fails.
func findQemu(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s not found (apt-get install -y --no-install-recommends qemu-user-static): %v", name, err)
	}
	t.Fatalf("%s not found: install qemu-user-static (apt-get install -y --no-install-recommends qemu-user-static): %v", name, err)
	return ""
}

// crossBuildAgent builds ggagent for linux with the given GOARCH/GOARM,
// statically (CGO_ENABLED=0) as the release does, into a temp dir.
func crossBuildAgent(t *testing.T, archEnv []string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "ggagent")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "github.com/ggfleet/ggfleet/agent/cmd/ggagent")
	build.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux"), archEnv...)
	if msg, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cross-build ggagent (%s): %v\n%s", strings.Join(archEnv, " "), err, msg)
	}
	return out
}

// runQemu runs a ggagent command under the emulator that is expected to end
// by itself, and returns its exit code and output.
func runQemu(t *testing.T, qemu, agent string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, append([]string{agent}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cmdResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("%s ggagent %s did not end within 3 minutes\n%s", qemu, strings.Join(args, " "), res)
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		t.Fatalf("%s ggagent %s: %v", qemu, strings.Join(args, " "), err)
	}
	return res
}

// startQemuAgent runs `ggagent run --runtime simulated` under the emulator
// as a child process, killed when the test ends; its log is shown on failure.
func startQemuAgent(t *testing.T, qemu, agent, stateDir string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "ggagent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(qemu, agent, "run", "--state-dir", stateDir, "--runtime", "simulated",
		"--health-interval", "1s", "--log-format", "json", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s ggagent run: %v", qemu, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("ggagent (%s) log (tail):\n%s", qemu, tail(string(data), 8000))
		}
	})
}
