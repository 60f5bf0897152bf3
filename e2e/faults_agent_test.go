package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/bench/loadgen"
)

// agentStatusFull is status.json with the delivery counter.
type agentStatusFull struct {
	agentStatus
	Delivered uint64 `json:"delivered"`
}

// TestFaultsAgentBrokerOutage: the broker is down (SIGKILL) for a long
// outage while a real ggagent keeps reporting every second and finishes a
// deployment. The reports wait in the agent's on-disk outbox with its
// memory bounded; once the broker is back every one is delivered, the
// deployment's outcome arrives once, and nothing is applied twice.
func TestFaultsAgentBrokerOutage(t *testing.T) {
	const name = "outage-core"
	outage := scale(20*time.Second, 2*time.Minute)
	faultCase(t, "broker down for %s", outage)
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	b.readyCore(name)
	dir := b.enrollAgent(name)
	start := time.Now()
	a := startAgent(t, dir, stepDelayEnv+"=3s")
	b.waitOnline(name, start.Add(-time.Second))
	b.must(201, "POST", "/templates", map[string]any{"name": "OutT", "components": []map[string]any{
		{"key": "aws.greengrass.Cli", "version": "2.4.0"}, {"key": "com.example.Hello", "version": "1.0.0"}}})
	taskID := b.deploy("OutT", name)
	waitDeploymentStage(t, dir, taskID, "applying")

	b.kill()
	down := time.Now()
	pid := a.cmd.Process.Pid
	var before agentStatusFull
	readJSONFile(dir, statusFile, &before)
	waitDeploymentStage(t, dir, taskID, "finished")
	rssStart := vmRSS(pid)
	var rssMax int64
	var maxOutbox int
	for time.Since(down) < outage {
		rssMax = max(rssMax, vmRSS(pid))
		var st agentStatusFull
		if readJSONFile(dir, statusFile, &st) {
			maxOutbox = max(maxOutbox, st.OutboxLength)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if maxOutbox < int(outage/time.Second)/2 {
		t.Fatalf("outbox peaked at %d reports over a %s outage with 1s health reports", maxOutbox, outage)
	}
	t.Logf("outage %s: outbox peaked at %d reports; agent RSS %d KiB at the start, %d KiB max", outage, maxOutbox, rssStart>>10, rssMax>>10)
	if rssMax > rssStart+(32<<20) {
		t.Errorf("agent memory grew by %d KiB during the outage: the outbox should hold reports on disk", (rssMax-rssStart)>>10)
	}

	back := time.Now()
	b.restart()
	b.waitOnline(name, back)
	if task := b.waitTask("/deploymentTasks/"+taskID, 3*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment after the outage: %v", task)
	}
	waitAgentStatus(t, dir, "outbox empty after the outage", func(s agentStatus) bool { return s.Connected && s.OutboxLength == 0 })
	var after agentStatusFull
	readJSONFile(dir, statusFile, &after)
	if after.Delivered < before.Delivered+uint64(maxOutbox) {
		t.Errorf("delivered %d reports in all, %d before the outage, %d were waiting: some were not delivered", after.Delivered, before.Delivered, maxOutbox)
	}
	if got := applies(t, dir); len(got) != 1 || got[taskDeploymentID(t, dir, taskID)] != 1 {
		t.Fatalf("applies = %v, want the one deployment once", got)
	}
	a.kill()
	b.stop()
	q := `SELECT COUNT(*) FROM events WHERE detail_type = 'Core Template Updated Event' AND json_extract(detail, '$.deploymentTaskId') = ?`
	if got := queryInt(t, b.dataDir, q, taskID); got != 1 {
		t.Errorf("%d Core Template Updated Events for the deployment, want exactly 1", got)
	}
}

// taskDeploymentID is the deployment id the agent recorded for a task.
func taskDeploymentID(t *testing.T, dir, taskID string) string {
	t.Helper()
	var rec deploymentRecord
	if !readJSONFile(dir, deploymentFile, &rec) || rec.TaskID != taskID {
		t.Fatalf("deployment.json does not record task %s: %+v", taskID, rec)
	}
	return rec.DeploymentID
}

// TestFaultsClockSkew: cores whose clocks are hours ahead or days behind
// stay ONLINE and HEALTHY with lastSeenAt taken from the broker's clock,
// and their deployments complete.
func TestFaultsClockSkew(t *testing.T) {
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	skews := []time.Duration{3 * time.Hour, -50 * time.Hour}
	b.must(201, "POST", "/templates", map[string]any{"name": "SkewT", "components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	var names []string
	for i, skew := range skews {
		prefix := fmt.Sprintf("skew%d", i)
		b.simFleet(prefix, 1, loadgen.Config{HealthInterval: 2 * time.Second, ClockSkew: skew, ApplyDelay: 200 * time.Millisecond})
		names = append(names, prefix+"-0000")
	}
	start := time.Now()
	for _, n := range names {
		d := b.waitOnline(n, start.Add(-time.Minute))
		seen, _ := time.Parse(time.RFC3339Nano, d["lastSeenAt"].(string))
		if seen.After(time.Now().Add(time.Minute)) || seen.Before(start.Add(-time.Minute)) {
			t.Errorf("%s: lastSeenAt %s follows the device's clock, not the broker's (now %s)", n, seen, time.Now().UTC())
		}
	}
	id := b.deployTo("SkewT", names)
	if task := b.waitTask("/deploymentTasks/"+id, 3*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment to skewed cores: %v", task)
	}
	// Still ONLINE a few intervals later: a clock behind must not read as silence.
	time.Sleep(8 * time.Second)
	for _, n := range names {
		if d := b.device(n); d["connectivity"] != "ONLINE" {
			t.Errorf("%s with a skewed clock: %v", n, d)
		}
	}
}

// TestFaultsCorruptStateFiles damages each of the agent's state files in
// turn. `ggagent run` either recovers by itself (and reports HEALTHY and
// ONLINE) or exits 1 with a message naming the file and how to recover,
// never panicking and never in a crash loop; following the message gets
// the agent running again.
func TestFaultsCorruptStateFiles(t *testing.T) {
	const name = "corrupt-core"
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	b.readyCore(name)
	dir := b.enrollAgent(name)
	start := time.Now()
	a := startAgent(t, dir)
	b.waitOnline(name, start.Add(-time.Second))
	b.must(201, "POST", "/templates", map[string]any{"name": "CorT", "components": []map[string]any{{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	if task := b.waitTask("/deploymentTasks/"+b.deploy("CorT", name), 3*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment: %v", task)
	}
	a.kill()

	files := []string{statusFile, deploymentFile, simComponents}
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			path := filepath.Join(dir, file)
			before := applies(t, dir)
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if err := os.WriteFile(path, []byte("{\"version\":1,\x00garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res := ggagentUntil(ctx, t, dir)
			switch {
			case res.exited:
				if res.code != 1 || !strings.Contains(res.out, path) || strings.Contains(res.out, "panic:") {
					t.Fatalf("ggagent run with a damaged %s: exit %d\n%s", file, res.code, res.out)
				}
				t.Logf("damaged %s: exit 1: %s", file, strings.TrimSpace(tail(res.out, 400)))
				// The recovery the message points at: remove the file, or
				// restore it from a backup.
				if msg := strings.ToLower(res.out); strings.Contains(msg, "remove") || strings.Contains(msg, "delete") {
					err = os.Remove(path)
				} else {
					err = os.WriteFile(path, orig, 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
			default:
				t.Logf("damaged %s: the agent recovered by itself", file)
			}
			again := time.Now()
			a := startAgent(t, dir)
			b.waitOnline(name, again)
			a.kill()
			if strings.Contains(a.log(), "panic:") {
				t.Fatalf("the agent panicked after %s was damaged", file)
			}
			// Nothing is applied again, except after the deployment record
			// itself was lost: then agent/deploy applies the document once
			// more, deliberately and saying so (applying again is safe,
			// never applying is not).
			for id, c := range applies(t, dir) {
				again := c - before[id]
				switch {
				case file == deploymentFile && again == 1 && strings.Contains(res.out+a.log(), "deployment record unreadable"):
				case again != 0:
					t.Errorf("deployment %s applied %d more times after %s was damaged", id, again, file)
				}
			}
		})
	}
}

// untilResult is how a bounded ggagent run ended.
type untilResult struct {
	exited bool
	code   int
	out    string
}

// ggagentUntil runs `ggagent run` until it exits or ctx ends (then it is
// killed: still running means it did not give up).
func ggagentUntil(ctx context.Context, t *testing.T, dir string) untilResult {
	t.Helper()
	a := startAgent(t, dir)
	select {
	case <-a.done:
		code := a.cmd.ProcessState.ExitCode()
		a.cmd = nil
		return untilResult{exited: true, code: code, out: a.currentLog()}
	case <-ctx.Done():
		a.kill()
		return untilResult{out: a.currentLog()}
	}
}
