package patch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/agent/patch/credstore"
	"github.com/ggfleet/ggfleet/internal/testservers"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
	"golang.org/x/crypto/ssh"
)

// recorder is a Publisher that keeps everything the runner sends, as the
// broker would receive it.
type recorder struct {
	mu      sync.Mutex
	events  []patchmsg.Event
	logs    []patchmsg.LogChunk
	probes  []patchmsg.ProbeResult
	raw     []string // every payload, to look for leaked secrets
	offline bool     // PublishNow fails, like a dropped session
}

func (p *recorder) Publish(_ context.Context, suffix string, payload []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.raw = append(p.raw, string(payload))
	kind, _, verb, ok := patchmsg.ParseSuffix(suffix)
	switch {
	case ok && kind == patchmsg.TopicPatches && verb == "events":
		ev, err := patchmsg.Decode[patchmsg.Event](payload)
		if err != nil {
			return fmt.Errorf("event does not decode: %w", err)
		}
		p.events = append(p.events, ev)
	case ok && kind == patchmsg.TopicTargets && verb == "probe/result":
		pr, err := patchmsg.Decode[patchmsg.ProbeResult](payload)
		if err != nil {
			return err
		}
		p.probes = append(p.probes, pr)
	default:
		return fmt.Errorf("unexpected durable publish on %q", suffix)
	}
	return nil
}

func (p *recorder) PublishNow(_ context.Context, suffix string, payload []byte, _ bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.offline {
		return fmt.Errorf("offline")
	}
	p.raw = append(p.raw, string(payload))
	c, err := patchmsg.Decode[patchmsg.LogChunk](payload)
	if err != nil {
		return fmt.Errorf("log chunk on %s does not decode: %w", suffix, err)
	}
	p.logs = append(p.logs, c)
	return nil
}

// eventsOf returns the events of one patch attempt, in publish order.
func (p *recorder) eventsOf(patchID string, attempt int) []patchmsg.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []patchmsg.Event
	for _, e := range p.events {
		if e.PatchID == patchID && e.Attempt == attempt {
			out = append(out, e)
		}
	}
	return out
}

// logText joins the streamed output of one step's stream.
func (p *recorder) logText(patchID, step, stream string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, c := range p.logs {
		if c.PatchID == patchID && c.Step == step && c.Stream == stream {
			b.WriteString(c.Data)
		}
	}
	return b.String()
}

func (p *recorder) allRaw() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.raw, "\n")
}

// waitEvent polls until an event of patch/attempt satisfies match.
func (p *recorder) waitEvent(t *testing.T, patchID string, attempt int, what string, match func(patchmsg.Event) bool) patchmsg.Event {
	t.Helper()
	// Generous: a loaded CI machine can take seconds per SSH session.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		for _, e := range p.eventsOf(patchID, attempt) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("patch %s/%d: no %s event within 5 minutes; events: %s", patchID, attempt, what, p.dump(patchID, attempt))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitCompleted waits for the completed event.
func (p *recorder) waitCompleted(t *testing.T, patchID string, attempt int) patchmsg.Event {
	t.Helper()
	return p.waitEvent(t, patchID, attempt, "completed", func(e patchmsg.Event) bool { return e.Type == patchmsg.EventCompleted })
}

func (p *recorder) dump(patchID string, attempt int) string {
	var b strings.Builder
	for _, e := range p.eventsOf(patchID, attempt) {
		j, _ := json.Marshal(e)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// stepsOf returns the final step results reported with step-finished.
func stepsOf(evs []patchmsg.Event) map[string]patchmsg.StepResult {
	out := map[string]patchmsg.StepResult{}
	for _, e := range evs {
		if e.Type == patchmsg.EventStepFinished && e.Step != nil {
			out[e.Step.Name] = *e.Step
		}
	}
	return out
}

// tWriter sends log lines to t.Log so they show only for failing tests.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// newRunner starts a runner on stateDir and closes it in t.Cleanup.
func newRunner(t *testing.T, stateDir string, pub Publisher, tweak func(*Config)) *Runner {
	t.Helper()
	cfg := Config{StateDir: stateDir, CoreName: "core-1", Publisher: pub,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// setCred stores a credential in stateDir.
func setCred(t *testing.T, stateDir, name string, value []byte) {
	t.Helper()
	if err := credstore.New(stateDir).Set(name, value); err != nil {
		t.Fatal(err)
	}
}

// sshTarget is a target profile for the test sshd, logging in as root
// with the key stored as credential "root-key".
func sshTarget(t *testing.T, srv *testservers.SSHD, stateDir, deviceID string) patchmsg.Target {
	t.Helper()
	setCred(t, stateDir, "root-key", srv.ClientKeyPEM)
	host, portS, _ := net.SplitHostPort(srv.Addr)
	port, _ := strconv.Atoi(portS)
	return patchmsg.Target{DeviceID: deviceID, CoreName: "core-1", Connection: patchmsg.Connection{
		Type: patchmsg.ConnSSH, Host: host, Port: port, Username: "root",
		Auth:    &patchmsg.Auth{Method: patchmsg.AuthPrivateKey, CredentialRef: "core:root-key"},
		HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(srv.HostKey))), HostKeyPolicy: patchmsg.HostKeyStrict,
	}}
}

// newJob builds a job for target with the given steps.
func newJob(id string, target patchmsg.Target, steps ...patchmsg.StepSpec) patchmsg.Job {
	return patchmsg.Job{Version: 1, Schema: patchmsg.JobSchema, PatchID: id, TaskID: "task-1", Attempt: 1,
		DeviceID: target.DeviceID, Target: target,
		Template: patchmsg.JobTemplate{Name: "t", VersionNo: 1, Steps: steps},
		Vars:     map[string]string{}}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// deviceDir is a fresh directory on the "device" (this machine) that any
// login user may write.
func deviceDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	_ = os.Chmod(dir, 0o777)
	for d := filepath.Dir(dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	return dir
}

func ptr[T any](v T) *T { return &v }

func waitBriefly() { time.Sleep(50 * time.Millisecond) }

// waitFor polls cond for up to 5 minutes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		waitBriefly()
	}
}
