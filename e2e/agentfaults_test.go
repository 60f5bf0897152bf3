package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// noIdentity fails the test if a state directory holds an identity.
func noIdentity(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, identityFile)); !os.IsNotExist(err) {
		t.Fatalf("a failed enrollment left %s (stat: %v)", filepath.Join(dir, identityFile), err)
	}
}

// wantFailure checks a command failed with exit 1, a message containing
// every want, and no panic.
func wantFailure(t *testing.T, res cmdResult, want ...string) {
	t.Helper()
	if res.code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", res.code, res)
	}
	for _, w := range want {
		if !strings.Contains(res.stderr, w) {
			t.Fatalf("stderr lacks %q\n%s", w, res)
		}
	}
	if strings.Contains(res.stderr, "panic:") || strings.Contains(res.stderr, "goroutine ") {
		t.Fatalf("the command panicked\n%s", res)
	}
}

// TestAgentEnrollFaults: an unreachable broker, a wrong token, a used token
// and a damaged identity each end with exit 1, a message that says what
// happened, and no identity left behind.
func TestAgentEnrollFaults(t *testing.T) {
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	b.readyCore("fault-core")

	t.Run("unreachable broker", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		res := ggagent(t, nil, "enroll", "--broker", "http://"+freeAddr(t), "--core", "fault-core",
			"--token", b.enrollmentToken("fault-core"), "--state-dir", dir)
		wantFailure(t, res, "cannot reach the broker")
		noIdentity(t, dir)
	})

	t.Run("wrong token", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		res := ggagent(t, nil, "enroll", "--broker", b.url, "--core", "fault-core",
			"--token", "gge_thisTokenWasNeverIssuedByTheBroker0000000", "--state-dir", dir)
		wantFailure(t, res, "enrollment token is not valid", "POST /cores/fault-core/enrollmentTokens")
		noIdentity(t, dir)
	})

	used := filepath.Join(t.TempDir(), "state")
	t.Run("used token", func(t *testing.T) {
		tok := b.enrollmentToken("fault-core")
		if res := ggagent(t, nil, "enroll", "--broker", b.url, "--core", "fault-core", "--token", tok, "--state-dir", used); res.code != 0 {
			t.Fatalf("first enroll: %s", res)
		}
		dir := filepath.Join(t.TempDir(), "state")
		res := ggagent(t, nil, "enroll", "--broker", b.url, "--core", "fault-core", "--token", tok, "--state-dir", dir)
		wantFailure(t, res, "enrollment token has already been used")
		noIdentity(t, dir)
	})

	t.Run("corrupt identity", func(t *testing.T) {
		path := filepath.Join(used, identityFile)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data[:len(data)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		res := ggagent(t, nil, "run", "--state-dir", used, "--runtime", "simulated", "--health-interval", "1s")
		wantFailure(t, res, path, "to recover")
	})
}

// TestAgentEnrollWrongCAPin: a pin that does not match the broker's CA is
// refused during the TLS handshake, before the token is sent: the same
// token then still enrolls with the right pin.
func TestAgentEnrollWrongCAPin(t *testing.T) {
	b, pin := startTLSBroker(t)
	b.readyCore("pin-core")
	tok := b.enrollmentToken("pin-core")
	sum := sha256.Sum256([]byte("not the broker's CA"))
	wrong := hex.EncodeToString(sum[:])
	dir := filepath.Join(t.TempDir(), "state")
	res := ggagent(t, nil, "enroll", "--broker", b.url, "--core", "pin-core", "--token", tok, "--ca-sha256", wrong, "--state-dir", dir)
	wantFailure(t, res, "not signed by the pinned CA "+wrong)
	noIdentity(t, dir)
	res = ggagent(t, nil, "enroll", "--broker", b.url, "--core", "pin-core", "--token", tok, "--ca-sha256", pin, "--state-dir", dir)
	if res.code != 0 {
		t.Fatalf("enroll with the right pin and the same token (it should not have been spent): %s", res)
	}
}

// TestAgentSurvivesBrokerRestart: the running agent reconnects to a
// restarted broker by itself and keeps reporting.
func TestAgentSurvivesBrokerRestart(t *testing.T) {
	const name = "restart-core"
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	b.readyCore(name)
	dir := b.enrollAgent(name)
	start := time.Now()
	startAgent(t, dir)
	b.waitOnline(name, start.Add(-time.Second))

	b.stop()
	waitAgentStatus(t, dir, "disconnected while the broker is down", func(s agentStatus) bool { return !s.Connected })
	restarted := time.Now()
	b.restart()
	b.waitOnline(name, restarted) // lastSeenAt advances past the restart
	waitAgentStatus(t, dir, "reconnected", func(s agentStatus) bool { return s.Connected && s.Connects >= 2 })
	// And keeps reporting.
	again := time.Now()
	b.waitOnline(name, again)
}

// TestAgentNetworkCut: the link between the agent and the MQTT port is cut
// for 20 seconds while a deployment finishes and health reports pile up;
// once restored the core is ONLINE again and every report is delivered.
func TestAgentNetworkCut(t *testing.T) {
	const name = "cut-core"
	p := startProxy(t, "")
	b := startBroker(t, "--mqtt-advertise", p.addr)
	logBrokerOnFailure(t, b)
	p.setTarget(b.mqtt)
	b.readyCore(name)
	dir := b.enrollAgent(name)
	var id struct {
		MQTTEndpoint string `json:"mqttEndpoint"`
	}
	if !readJSONFile(dir, identityFile, &id) || id.MQTTEndpoint != p.addr {
		t.Fatalf("enrolled mqttEndpoint = %q, want the proxy %s", id.MQTTEndpoint, p.addr)
	}
	start := time.Now()
	a := startAgent(t, dir, stepDelayEnv+"=5s") // 15s of steps: the cut starts well before the end
	b.waitOnline(name, start.Add(-time.Second))

	b.must(201, "POST", "/templates", map[string]any{"name": "CutT", "components": []map[string]any{
		{"key": "aws.greengrass.Cli", "version": "2.4.0"},
		{"key": "com.example.Hello", "version": "1.0.0"},
		{"key": "com.example.World", "version": "1.0.0"}}})
	taskID := b.deploy("CutT", name)
	waitDeploymentStage(t, dir, taskID, "applying")

	p.cut()
	cutAt := time.Now()
	b.waitConnectivity(name, "OFFLINE")
	waitDeploymentStage(t, dir, taskID, "finished")
	waitAgentStatus(t, dir, "disconnected with reports waiting in the outbox", func(s agentStatus) bool {
		return !s.Connected && s.OutboxLength > 0
	})
	if r := b.must(200, "GET", "/deploymentTasks/"+taskID, nil); strings.Contains(string(r.Body), `"taskStatus":"Success"`) {
		t.Fatalf("the task succeeded while the network was cut: %s", r.Body)
	}
	// The scenario's cut lasts 20s (this wait is the fault, not an assertion).
	time.Sleep(time.Until(cutAt.Add(20 * time.Second)))
	p.restore()

	restored := time.Now()
	b.waitOnline(name, restored)
	if task := b.waitTask("/deploymentTasks/"+taskID, 3*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment task after the cut = %v", task)
	}
	waitAgentStatus(t, dir, "reconnected with an empty outbox", func(s agentStatus) bool {
		return s.Connected && s.Connects >= 2 && s.OutboxLength == 0
	})
	if got := applies(t, dir); len(got) != 1 {
		t.Fatalf("applies = %v, want the one deployment once", got)
	}
	if strings.Contains(a.log(), "panic:") {
		t.Fatal("the agent panicked")
	}
}
