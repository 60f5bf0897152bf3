package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/agent/patch"
	"github.com/ggfleet/ggfleet/agent/patch/credstore"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
	"golang.org/x/crypto/ssh"
)

// benchCore is the core name the in-process runner and its targets use.
const benchCore = "bench-core"

// completions is a patch.Publisher that keeps the completed events, as
// the broker would receive them, and drops everything else.
type completions struct {
	mu   sync.Mutex
	done map[string]patchmsg.Event
	ch   chan struct{} // signalled on every completion
}

func (c *completions) Publish(_ context.Context, suffix string, payload []byte) error {
	kind, _, verb, ok := patchmsg.ParseSuffix(suffix)
	if !ok || kind != patchmsg.TopicPatches || verb != "events" {
		return nil
	}
	ev, err := patchmsg.Decode[patchmsg.Event](payload)
	if err != nil {
		return fmt.Errorf("event does not decode: %w", err)
	}
	if ev.Type != patchmsg.EventCompleted && ev.Type != patchmsg.EventRejected {
		return nil
	}
	c.mu.Lock()
	c.done[ev.PatchID] = ev
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
	return nil
}

func (c *completions) PublishNow(context.Context, string, []byte, bool) error { return nil }

// runWithAgentRunner applies plan to every target through the agent's patch
// runner (agent/patch) in this process, as ggagent on a core does when the
// broker dispatches a patch task: one job per target, the payload as an
// artifact URL the runner downloads and checks, the runner's own
// concurrency limit. It returns when every job has completed.
func runWithAgentRunner(ctx context.Context, log *slog.Logger, srv *sshServer, targets []sshTarget, plan patchPlan, concurrency int, dir string) error {
	// The broker hands big files to the agent as a blob URL (GET
	// /patchBlobs/{sha256}); serve the payload the same way.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	blobs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/patchBlobs/"+plan.SHA256 {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(plan.Data)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = blobs.Serve(l) }()
	defer blobs.Close()

	stateDir := filepath.Join(dir, "agent-state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	if err := credstore.New(stateDir).Set("bench-key", srv.ClientKey); err != nil {
		return err
	}
	pub := &completions{done: map[string]patchmsg.Event{}, ch: make(chan struct{}, 1)}
	r, err := patch.New(patch.Config{StateDir: stateDir, CoreName: benchCore, Publisher: pub, Concurrency: concurrency, Logger: log})
	if err != nil {
		return err
	}
	defer r.Close()

	port, _ := strconv.Atoi(srv.Port)
	hostKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(srv.HostKey)))
	url := "http://" + l.Addr().String() + "/patchBlobs/" + plan.SHA256
	for i, t := range targets {
		r.Handle(patchmsg.Job{Version: patchmsg.Version, Schema: patchmsg.JobSchema,
			PatchID: fmt.Sprintf("bench-%02d", i+1), TaskID: "bench-task", Attempt: 1, DeviceID: t.ID,
			Deadline: time.Now().Add(time.Hour),
			Target: patchmsg.Target{DeviceID: t.ID, CoreName: benchCore, Connection: patchmsg.Connection{
				Type: patchmsg.ConnSSH, Host: "127.0.0.1", Port: port, Username: srv.User,
				Auth:    &patchmsg.Auth{Method: patchmsg.AuthPrivateKey, CredentialRef: "core:bench-key"},
				HostKey: hostKey, HostKeyPolicy: patchmsg.HostKeyStrict}},
			Template: patchmsg.JobTemplate{Name: "bench", VersionNo: 1,
				Defaults: patchmsg.Defaults{Workdir: filepath.Join(t.Dir, "work")},
				Files: []patchmsg.FileSpec{{Path: t.file(), Mode: "0644", SHA256: plan.SHA256,
					Source: patchmsg.FileSource{URL: url}}},
				Steps: []patchmsg.StepSpec{{Name: "step", Run: plan.Step, Workdir: t.Dir, TimeoutSeconds: 300}}},
			Vars: map[string]string{}})
	}
	for {
		pub.mu.Lock()
		n := len(pub.done)
		var failed []string
		for id, ev := range pub.done {
			if ev.Type != patchmsg.EventCompleted || ev.Status != patchmsg.PatchSuccess {
				failed = append(failed, fmt.Sprintf("%s: %s %s %s", id, ev.Type, ev.StatusMessage, ev.Reason))
			}
		}
		pub.mu.Unlock()
		if len(failed) > 0 {
			return fmt.Errorf("patches failed: %s", strings.Join(failed, "; "))
		}
		if n == len(targets) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d patches completed: %w", n, len(targets), ctx.Err())
		case <-pub.ch:
		case <-time.After(time.Second):
		}
	}
}
