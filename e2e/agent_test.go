package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The agent's state files the tests look at (agent/statedir, agent/deploy,
// agent/nucleus name them; the e2e tests treat them as a device owner would).
const (
	identityFile   = "identity.json"
	statusFile     = "status.json"
	deploymentFile = "deployment.json"
	simComponents  = "simulated-components.json"
	simApplyLog    = "simulated-applies.log"
	stepDelayEnv   = "GGAGENT_SIMULATED_STEP_DELAY"
)

// cmdResult is a finished ggagent command.
type cmdResult struct {
	code           int
	stdout, stderr string
}

func (r cmdResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// ggagent runs a ggagent command that is expected to end by itself (enroll,
// status, a run that must fail) and returns its exit code and output.
func ggagent(t testing.TB, env []string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "ggagent"), args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cmdResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("ggagent %s did not end within 2 minutes\n%s", strings.Join(args, " "), res)
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		t.Fatalf("ggagent %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// agentProc is one `ggagent run` child process, restartable; each run logs
// to its own file and every log is shown when the test fails.
type agentProc struct {
	t        testing.TB
	stateDir string
	logDir   string
	runs     int
	cmd      *exec.Cmd
	done     chan struct{}
	logPath  string
}

// startAgent runs `ggagent run --runtime simulated --health-interval 1s` on
// an enrolled state directory; env adds environment variables.
func startAgent(t testing.TB, stateDir string, env ...string) *agentProc {
	t.Helper()
	a := &agentProc{t: t, stateDir: stateDir, logDir: t.TempDir()}
	a.start(env...)
	t.Cleanup(func() {
		a.kill()
		if t.Failed() {
			t.Logf("ggagent logs (tail):\n%s", tail(a.log(), 8000))
		}
	})
	return a
}

// start starts a new run of the agent (the previous one must have ended).
func (a *agentProc) start(env ...string) {
	a.t.Helper()
	a.runs++
	a.logPath = filepath.Join(a.logDir, fmt.Sprintf("ggagent-%d.log", a.runs))
	logf, err := os.Create(a.logPath)
	if err != nil {
		a.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "ggagent"), "run", "--state-dir", a.stateDir,
		"--runtime", "simulated", "--health-interval", "1s", "--log-format", "json", "--log-level", "debug")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		a.t.Fatalf("start ggagent run: %v", err)
	}
	a.cmd, a.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); logf.Close(); close(done) }(a.done)
}

// kill sends SIGKILL and waits for the process to be reaped.
func (a *agentProc) kill() { a.signal(syscall.SIGKILL) }

func (a *agentProc) signal(sig syscall.Signal) {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
}

// currentLog is the log of the current (or last) run.
func (a *agentProc) currentLog() string {
	b, _ := os.ReadFile(a.logPath)
	return string(b)
}

// log is every run's log, in order.
func (a *agentProc) log() string {
	var sb strings.Builder
	for i := 1; i <= a.runs; i++ {
		b, _ := os.ReadFile(filepath.Join(a.logDir, fmt.Sprintf("ggagent-%d.log", i)))
		fmt.Fprintf(&sb, "--- run %d ---\n%s", i, b)
	}
	return sb.String()
}

// logBrokerOnFailure attaches the broker's log to a failing test.
func logBrokerOnFailure(t testing.TB, b *broker) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ggfleet log (tail):\n%s", tail(b.log(), 8000))
		}
	})
}

// readyCore creates a core and waits for its task to succeed.
func (b *broker) readyCore(name string) {
	b.t.Helper()
	id := b.createCores(core(name))
	if task := b.waitTask("/coreTasks/"+id, 2*time.Minute); task["taskStatus"] != "Success" {
		b.t.Fatalf("core task for %s = %v", name, task)
	}
}

// enrollmentToken makes a one-time enrollment token for a core.
func (b *broker) enrollmentToken(core string) string {
	b.t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	b.must(201, "POST", "/cores/"+core+"/enrollmentTokens", map[string]any{}).JSON(b.t, &tok)
	return tok.Token
}

// enrollAgent enrolls a fresh state directory as core with ggagent enroll.
func (b *broker) enrollAgent(core string, extra ...string) string {
	b.t.Helper()
	dir := filepath.Join(b.t.TempDir(), "state")
	args := append([]string{"enroll", "--broker", b.url, "--core", core, "--token", b.enrollmentToken(core), "--state-dir", dir}, extra...)
	if res := ggagent(b.t, nil, args...); res.code != 0 || !strings.Contains(res.stdout, fmt.Sprintf("Enrolled core %q", core)) {
		b.t.Fatalf("ggagent enroll: %s", res)
	}
	return dir
}

// device returns the device block of GET /cores/{core}.
func (b *broker) device(core string) map[string]any {
	b.t.Helper()
	var c map[string]any
	b.must(200, "GET", "/cores/"+core, nil).JSON(b.t, &c)
	d, _ := c["device"].(map[string]any)
	return d
}

// reportedTemplate returns template.reported of GET /cores/{core}.
func (b *broker) reportedTemplate(core string) map[string]any {
	b.t.Helper()
	var c struct {
		Template struct {
			Reported map[string]any `json:"reported"`
		} `json:"template"`
	}
	b.must(200, "GET", "/cores/"+core, nil).JSON(b.t, &c)
	return c.Template.Reported
}

// deploy starts a deployment task of template's latest version to core.
func (b *broker) deploy(template, core string) string {
	b.t.Helper()
	r := b.must(202, "POST", "/deploymentTasks", map[string]any{"template": map[string]any{"name": template},
		"targets": map[string]any{"thingNames": []string{core}}})
	return r.Header.Get("x-taskid")
}

// waitOnline waits until the core is HEALTHY and ONLINE, seen after since.
func (b *broker) waitOnline(core string, since time.Time) map[string]any {
	b.t.Helper()
	var d map[string]any
	waitFor(b.t, 2*time.Minute, core+" HEALTHY and ONLINE", func() bool {
		d = b.device(core)
		return d["status"] == "HEALTHY" && d["connectivity"] == "ONLINE" && seenAfter(d, since)
	})
	return d
}

// seenAfter tells whether the device's lastSeenAt is later than t.
func seenAfter(d map[string]any, t time.Time) bool {
	s, _ := d["lastSeenAt"].(string)
	seen, err := time.Parse(time.RFC3339Nano, s)
	return err == nil && seen.After(t)
}

func (b *broker) waitConnectivity(core, want string) {
	b.t.Helper()
	waitFor(b.t, 2*time.Minute, core+" "+want, func() bool { return b.device(core)["connectivity"] == want })
}

// applies counts the simulated runtime's Apply calls, per deployment id.
func applies(t testing.TB, stateDir string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stateDir, simApplyLog))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) == 2 {
			out[f[1]]++
		}
	}
	return out
}

// readJSONFile decodes a state file; ok is false while it is missing or
// being replaced.
func readJSONFile(stateDir, name string, v any) bool {
	data, err := os.ReadFile(filepath.Join(stateDir, name))
	return err == nil && json.Unmarshal(data, v) == nil
}

// deploymentRecord is the part of the agent's deployment.json the tests read.
type deploymentRecord struct {
	DeploymentID string `json:"deploymentId"`
	TaskID       string `json:"taskId"`
	Stage        string `json:"stage"`
}

// waitDeploymentStage waits until the agent's deployment.json records the
// task's deployment at stage.
func waitDeploymentStage(t testing.TB, stateDir, taskID, stage string) deploymentRecord {
	t.Helper()
	var rec deploymentRecord
	waitFor(t, 2*time.Minute, "the agent's deployment of task "+taskID+" at stage "+stage, func() bool {
		rec = deploymentRecord{}
		return readJSONFile(stateDir, deploymentFile, &rec) && rec.TaskID == taskID && rec.Stage == stage
	})
	return rec
}

// agentStatus is the part of status.json the tests read.
type agentStatus struct {
	Connected    bool      `json:"connected"`
	Connects     int       `json:"connects"`
	OutboxLength int       `json:"outboxLength"`
	LastReport   time.Time `json:"lastReport"`
	HealthStatus string    `json:"healthStatus"`
	UpdatedAt    time.Time `json:"updatedAt"`
}

func waitAgentStatus(t testing.TB, stateDir, what string, cond func(agentStatus) bool) agentStatus {
	t.Helper()
	var st agentStatus
	waitFor(t, 2*time.Minute, "status.json: "+what, func() bool {
		st = agentStatus{}
		return readJSONFile(stateDir, statusFile, &st) && cond(st)
	})
	return st
}

// TestAgentJourney drives the real ggfleet and ggagent binaries through a
// core's life: enroll, HEALTHY and ONLINE, a deployment, a killed agent, a
// restarted agent that applies nothing twice, and a broker killed in the
// middle of a deployment whose result still arrives.
func TestAgentJourney(t *testing.T) {
	const name = "agent-core"
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	b.readyCore(name)
	dir := b.enrollAgent(name)
	if _, err := os.Stat(filepath.Join(dir, identityFile)); err != nil {
		t.Fatalf("enroll left no identity: %v", err)
	}

	start := time.Now()
	a := startAgent(t, dir)
	b.waitOnline(name, start.Add(-time.Second))

	// A deployment ends Success and the broker's views count it.
	b.must(201, "POST", "/templates", map[string]any{"name": "AgentT",
		"components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	task1 := b.deploy("AgentT", name)
	if task := b.waitTask("/deploymentTasks/"+task1, 2*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment task 1 = %v", task)
	}
	waitFor(t, time.Minute, "template.reported AgentT v1 SUCCESSFUL", func() bool {
		r := b.reportedTemplate(name)
		return r["name"] == "AgentT" && r["version"] == float64(1) && r["deploymentStatus"] == "SUCCESSFUL"
	})
	var v1 map[string]any
	waitFor(t, time.Minute, "fleet summary counting AgentT v1", func() bool {
		v1 = fleetVersion(t, b, "AgentT", "1")
		return v1["reportedInUse"] == float64(1)
	})
	wantCounts(t, v1, 1, 1, 0)
	var comps struct {
		Components map[string]struct{ Version string } `json:"components"`
	}
	if !readJSONFile(dir, simComponents, &comps) || comps.Components["aws.greengrass.Cli"].Version != "2.4.0" {
		t.Fatalf("simulated components = %+v", comps)
	}
	rec1 := waitDeploymentStage(t, dir, task1, "finished")
	if got := applies(t, dir); len(got) != 1 || got[rec1.DeploymentID] != 1 {
		t.Fatalf("applies after deployment 1 = %v, want %s once", got, rec1.DeploymentID)
	}

	// ggagent status shows the connection and the last report.
	waitAgentStatus(t, dir, "connected with a report", func(s agentStatus) bool {
		return s.Connected && !s.LastReport.IsZero() && s.HealthStatus == "HEALTHY"
	})
	// /metrics counts the agent's messages that reached the broker's handlers.
	metrics := string(b.must(200, "GET", "/metrics", nil).Body)
	for _, topic := range []string{"health", "deployments/status", "agent/hello", "connection"} {
		if !regexpMatch(`(?m)^ggfleet_mqtt_messages_handled_total\{topic="`+regexp.QuoteMeta(topic)+`"\} [1-9]`, metrics) {
			t.Errorf("/metrics has no handled %s messages:\n%s", topic, grepLines(metrics, "ggfleet_mqtt_messages"))
		}
	}
	res := ggagent(t, nil, "status", "--state-dir", dir)
	if res.code != 0 || !strings.Contains(res.stdout, fmt.Sprintf("Enrolled as core %q", name)) ||
		!regexpMatch(`connected:\s+true`, res.stdout) || !regexpMatch(`lastReport:\s+\d{4}-`, res.stdout) ||
		!regexpMatch(`deploymentStatus:\s+SUCCEEDED`, res.stdout) {
		t.Fatalf("ggagent status: %s", res)
	}

	// SIGKILL: the broker marks the core OFFLINE (last will).
	a.kill()
	b.waitConnectivity(name, "OFFLINE")

	// Restart (slow simulated steps from now on): ONLINE again, and the
	// re-sent deployment document is re-reported, not re-applied.
	restarted := time.Now()
	a.start(stepDelayEnv + "=4s")
	b.waitOnline(name, restarted)
	waitFor(t, 2*time.Minute, "the restarted agent to re-report the finished deployment", func() bool {
		return strings.Contains(a.currentLog(), "deployment already finished; reporting its status again")
	})
	if got := applies(t, dir); len(got) != 1 || got[rec1.DeploymentID] != 1 {
		t.Fatalf("applies after the agent restart = %v, want %s once", got, rec1.DeploymentID)
	}

	// A slow deployment; the broker is killed while the agent applies it.
	b.must(204, "PUT", "/templates/AgentT", map[string]any{"components": []map[string]any{
		{"key": "aws.greengrass.Cli", "version": "2.4.0"},
		{"key": "aws.greengrass.clientdevices.IPDetector", "version": "2.1.1"},
		{"key": "com.example.Hello", "version": "1.0.0"}}})
	task2 := b.deploy("AgentT", name)
	waitDeploymentStage(t, dir, task2, "applying")
	b.kill()
	rec2 := waitDeploymentStage(t, dir, task2, "finished") // finished with no broker to hear it
	waitAgentStatus(t, dir, "disconnected with reports waiting", func(s agentStatus) bool {
		return !s.Connected && s.OutboxLength > 0
	})
	b.restart()
	if task := b.waitTask("/deploymentTasks/"+task2, 3*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment task 2 (broker killed mid-deployment) = %v", task)
	}
	waitFor(t, time.Minute, "template.reported AgentT v2", func() bool {
		r := b.reportedTemplate(name)
		return r["version"] == float64(2) && r["deploymentStatus"] == "SUCCESSFUL"
	})
	b.waitOnline(name, time.Now())
	if got := applies(t, dir); len(got) != 2 || got[rec1.DeploymentID] != 1 || got[rec2.DeploymentID] != 1 {
		t.Fatalf("applies at the end = %v, want %s and %s once each", got, rec1.DeploymentID, rec2.DeploymentID)
	}
	if strings.Contains(a.log(), "panic:") {
		t.Fatal("the agent panicked")
	}
}

// startTLSBroker starts ggfleet serve --tls-auto and returns it with the
// default CA's pin from GET /certificateAuthorities.
func startTLSBroker(t testing.TB) (*broker, string) {
	t.Helper()
	b := &broker{t: t, dataDir: t.TempDir(), listen: freeAddr(t), mqtt: freeAddr(t), args: []string{"--tls-auto"},
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // the test's own admin client; ggagent is what verifies the pin
		}}}}
	b.url = "https://" + b.listen
	b.start()
	t.Cleanup(b.stop)
	logBrokerOnFailure(t, b)
	var cas struct {
		CertificateAuthorities []struct {
			CaID    string `json:"caId"`
			Default bool   `json:"default"`
		} `json:"certificateAuthorities"`
	}
	b.must(200, "GET", "/certificateAuthorities", nil).JSON(t, &cas)
	for _, ca := range cas.CertificateAuthorities {
		if ca.Default {
			return b, ca.CaID
		}
	}
	t.Fatalf("no default CA in %+v", cas)
	return nil, ""
}

// TestAgentEnrollTLSAuto: over https with the broker's CA pinned, the agent
// enrolls, runs and reports.
func TestAgentEnrollTLSAuto(t *testing.T) {
	b, pin := startTLSBroker(t)
	b.readyCore("tls-core")
	dir := b.enrollAgent("tls-core", "--ca-sha256", pin)
	var id struct {
		CASHA256 string `json:"caSha256"`
		Broker   string `json:"brokerUrl"`
	}
	if !readJSONFile(dir, identityFile, &id) || id.CASHA256 != pin || id.Broker != b.url {
		t.Fatalf("identity = %+v, want pin %s and broker %s", id, pin, b.url)
	}
	start := time.Now()
	startAgent(t, dir)
	b.waitOnline("tls-core", start.Add(-time.Second))
}

func regexpMatch(expr, s string) bool {
	return regexp.MustCompile(expr).MatchString(s)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
