package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ggfleet/ggfleet/agent/deploy"
	"github.com/ggfleet/ggfleet/agent/nucleus"
	"github.com/ggfleet/ggfleet/agent/statedir"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// recorder is a Report function that keeps what it was given.
type recorder struct {
	mu   sync.Mutex
	msgs []mqttmsg.DeploymentStatusMsg
}

func (r *recorder) report(_ context.Context, m mqttmsg.DeploymentStatusMsg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return nil
}

// statuses returns "id:STATUS" for every report, in order.
func (r *recorder) statuses() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.msgs))
	for i, m := range r.msgs {
		out[i] = m.DeploymentID + ":" + m.Status
	}
	return out
}

func (r *recorder) last() mqttmsg.DeploymentStatusMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msgs[len(r.msgs)-1]
}

// counting wraps a runtime and records the deployments it was asked to apply.
type counting struct {
	nucleus.Runtime
	mu      sync.Mutex
	applied []string
	errs    int // fail this many Apply calls with an error first
	block   chan struct{}
	entered chan string
}

func (c *counting) Apply(ctx context.Context, d mqttmsg.DeploymentMsg) (nucleus.Outcome, error) {
	c.mu.Lock()
	c.applied = append(c.applied, d.DeploymentID)
	fail := c.errs > 0
	if fail {
		c.errs--
	}
	c.mu.Unlock()
	if c.entered != nil {
		c.entered <- d.DeploymentID
	}
	if c.block != nil {
		select {
		case <-c.block:
		case <-ctx.Done():
			return nucleus.Outcome{}, ctx.Err()
		}
	}
	if fail {
		return nucleus.Outcome{}, errors.New("nucleus unreachable")
	}
	return c.Runtime.Apply(ctx, d)
}

func (c *counting) appliedIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.applied)
}

type env struct {
	dir     *statedir.Dir
	rt      *counting
	rec     *recorder
	applier *deploy.Applier
}

func newEnv(t *testing.T, opts nucleus.SimOptions) *env {
	t.Helper()
	dir, err := statedir.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	sim, err := nucleus.NewSimulated(dir.Path(), opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, rt: &counting{Runtime: sim}, rec: &recorder{}}
	e.applier = e.newApplier()
	return e
}

// newApplier is a fresh applier over the same state, as after a restart.
func (e *env) newApplier() *deploy.Applier {
	return deploy.New(deploy.Config{Runtime: e.rt, Dir: e.dir, Report: e.rec.report, RetryDelay: time.Second})
}

func doc(id string, created int, kv ...string) mqttmsg.DeploymentMsg {
	d := mqttmsg.DeploymentMsg{Version: 1, DeploymentID: id, TaskID: "task-" + id, TemplateName: "edge", TemplateVersion: created,
		Components: map[string]mqttmsg.ComponentSpec{},
		CreatedAt:  time.Date(2026, 11, 29, 12, created, 0, 0, time.UTC)}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Components[kv[i]] = mqttmsg.ComponentSpec{ComponentVersion: kv[i+1]}
	}
	return d
}

func (e *env) record(t *testing.T) map[string]any {
	t.Helper()
	b, err := e.dir.ReadFile(deploy.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSuccess(t *testing.T) {
	e := newEnv(t, nucleus.SimOptions{})
	if err := e.applier.Handle(t.Context(), doc("d-1", 1, "com.example.A", "1.0.0")); err != nil {
		t.Fatal(err)
	}
	if got, want := e.rec.statuses(), []string{"d-1:IN_PROGRESS", "d-1:SUCCEEDED"}; !slices.Equal(got, want) {
		t.Fatalf("reports = %v, want %v", got, want)
	}
	last := e.rec.last()
	if last.DetailedStatus != mqttmsg.DetailSuccessful || last.TaskID != "task-d-1" || last.Version != 1 || last.Timestamp.IsZero() {
		t.Errorf("final report = %+v", last)
	}
	if st := e.record(t)["stage"]; st != deploy.StageFinished {
		t.Errorf("recorded stage = %v, want finished", st)
	}
	cur := e.applier.Current()
	if cur.DeploymentID != "d-1" || cur.Status != mqttmsg.StatusSucceeded || cur.TemplateName != "edge" {
		t.Errorf("Current() = %+v", cur)
	}
	eff := e.applier.Effective()
	if len(eff) != 1 || eff[0] != (mqttmsg.EffectiveDeployment{DeploymentID: "d-1", TemplateName: "edge", TemplateVersion: 1, Status: mqttmsg.StatusSucceeded}) {
		t.Errorf("Effective() = %+v", eff)
	}
	comps, err := e.rt.Components(t.Context())
	if err != nil || len(comps) != 1 || comps[0].Name != "com.example.A" {
		t.Errorf("components = %v, %v", comps, err)
	}
}

func TestFailure(t *testing.T) {
	e := newEnv(t, nucleus.SimOptions{FailComponents: []string{"com.example.Bad"}})
	if err := e.applier.Handle(t.Context(), doc("d-1", 1, "com.example.Bad", "1.0.0")); err != nil {
		t.Fatal(err)
	}
	if got, want := e.rec.statuses(), []string{"d-1:IN_PROGRESS", "d-1:FAILED"}; !slices.Equal(got, want) {
		t.Fatalf("reports = %v, want %v", got, want)
	}
	last := e.rec.last()
	if last.DetailedStatus != mqttmsg.DetailFailedRollbackComplete || last.Stage != "apply" ||
		last.Reason != "component com.example.Bad failed to start" {
		t.Errorf("final report = %+v", last)
	}
	if cur := e.applier.Current(); cur.Status != mqttmsg.StatusFailed || cur.Reason == "" {
		t.Errorf("Current() = %+v", cur)
	}
}

func TestDuplicateDocumentIsReportedNotReapplied(t *testing.T) {
	e := newEnv(t, nucleus.SimOptions{})
	d := doc("d-1", 1, "com.example.A", "1.0.0")
	for range 2 {
		if err := e.applier.Handle(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	// Also after a restart.
	if err := e.newApplier().Handle(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if got := e.rt.appliedIDs(); !slices.Equal(got, []string{"d-1"}) {
		t.Fatalf("applied %v, want d-1 once", got)
	}
	want := []string{"d-1:IN_PROGRESS", "d-1:SUCCEEDED", "d-1:SUCCEEDED", "d-1:SUCCEEDED"}
	if got := e.rec.statuses(); !slices.Equal(got, want) {
		t.Fatalf("reports = %v, want %v", got, want)
	}
}

func TestOlderDocumentIgnored(t *testing.T) {
	e := newEnv(t, nucleus.SimOptions{})
	if err := e.applier.Handle(t.Context(), doc("d-2", 2, "com.example.A", "2.0.0")); err != nil {
		t.Fatal(err)
	}
	if err := e.applier.Handle(t.Context(), doc("d-1", 1, "com.example.A", "1.0.0")); err != nil {
		t.Fatal(err)
	}
	if got := e.rt.appliedIDs(); !slices.Equal(got, []string{"d-2"}) {
		t.Fatalf("applied %v, want only d-2", got)
	}
}

func TestResumeAfterCrash(t *testing.T) {
	for _, stage := range []string{deploy.StageAccepted, deploy.StageApplying} {
		t.Run(stage, func(t *testing.T) {
			e := newEnv(t, nucleus.SimOptions{})
			d := doc("d-1", 1, "com.example.A", "1.0.0")
			rec := map[string]any{"version": 1, "deploymentId": d.DeploymentID, "taskId": d.TaskID, "stage": stage, "doc": d}
			b, _ := json.Marshal(rec)
			if err := e.dir.WriteFile(deploy.StateFile, b, 0o600); err != nil {
				t.Fatal(err)
			}
			a := e.newApplier()
			if err := a.Resume(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := e.rt.appliedIDs(); !slices.Equal(got, []string{"d-1"}) {
				t.Fatalf("applied %v, want d-1", got)
			}
			if got, want := e.rec.statuses(), []string{"d-1:IN_PROGRESS", "d-1:SUCCEEDED"}; !slices.Equal(got, want) {
				t.Fatalf("reports = %v, want %v", got, want)
			}
			// A second start has nothing left to do.
			if err := e.newApplier().Resume(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := e.rt.appliedIDs(); len(got) != 1 {
				t.Fatalf("second resume applied again: %v", got)
			}
		})
	}
}

func TestResumeLoadsFinishedForHealth(t *testing.T) {
	e := newEnv(t, nucleus.SimOptions{})
	if err := e.applier.Handle(t.Context(), doc("d-1", 1, "com.example.A", "1.0.0")); err != nil {
		t.Fatal(err)
	}
	a := e.newApplier()
	if err := a.Resume(t.Context()); err != nil {
		t.Fatal(err)
	}
	if cur := a.Current(); cur.DeploymentID != "d-1" || cur.Status != mqttmsg.StatusSucceeded {
		t.Fatalf("Current() after restart = %+v", cur)
	}
	if len(e.rec.statuses()) != 2 {
		t.Fatalf("resume of a finished deployment reported: %v", e.rec.statuses())
	}
}

func TestCrashMidApplyLeavesApplyingRecord(t *testing.T) {
	e := newEnv(t, nucleus.SimOptions{})
	e.rt.block = make(chan struct{})
	e.rt.entered = make(chan string, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.applier.Handle(ctx, doc("d-1", 1, "com.example.A", "1.0.0")) }()
	<-e.rt.entered
	if st := e.record(t)["stage"]; st != deploy.StageApplying {
		t.Fatalf("recorded stage while applying = %v, want applying", st)
	}
	cancel() // the agent stops mid-deployment
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Handle = %v, want context.Canceled", err)
	}
	if got := e.rec.statuses(); !slices.Equal(got, []string{"d-1:IN_PROGRESS"}) {
		t.Fatalf("reports = %v, want only IN_PROGRESS (no FAILED on shutdown)", got)
	}
	if st := e.record(t)["stage"]; st != deploy.StageApplying {
		t.Fatalf("recorded stage = %v, want applying for Resume", st)
	}
}

func TestNewerDocumentSupersedesQueued(t *testing.T) {
	e := newEnv(t, nucleus.SimOptions{})
	e.rt.block = make(chan struct{})
	e.rt.entered = make(chan string, 3)
	done := make(chan error, 1)
	go func() { done <- e.applier.Handle(t.Context(), doc("d-1", 1, "com.example.A", "1.0.0")) }()
	<-e.rt.entered
	// While d-1 applies, two more arrive; Handle queues them and returns.
	for _, d := range []mqttmsg.DeploymentMsg{doc("d-2", 2, "com.example.A", "2.0.0"), doc("d-3", 3, "com.example.A", "3.0.0")} {
		if err := e.applier.Handle(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	close(e.rt.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := e.rt.appliedIDs(); !slices.Equal(got, []string{"d-1", "d-3"}) {
		t.Fatalf("applied %v, want d-1 then d-3 (d-2 superseded)", got)
	}
	comps, _ := e.rt.Components(t.Context())
	if len(comps) != 1 || comps[0].Version != "3.0.0" {
		t.Fatalf("components = %v, want com.example.A 3.0.0", comps)
	}
}

func TestTransientErrorsRetried(t *testing.T) {
	tests := []struct {
		name       string
		errs       int
		wantStatus string
	}{
		{"recovers", 2, mqttmsg.StatusSucceeded},
		{"gives up", 100, mqttmsg.StatusFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, nucleus.SimOptions{})
				e.rt.errs = tt.errs
				if err := e.applier.Handle(t.Context(), doc("d-1", 1, "com.example.A", "1.0.0")); err != nil {
					t.Fatal(err)
				}
				last := e.rec.last()
				if last.Status != tt.wantStatus {
					t.Fatalf("final status = %+v, want %s", last, tt.wantStatus)
				}
				if tt.wantStatus == mqttmsg.StatusFailed {
					if !strings.Contains(last.Reason, "nucleus unreachable") || last.Stage != deploy.StageApplying {
						t.Errorf("reason/stage = %q/%q", last.Reason, last.Stage)
					}
					if got := len(e.rt.appliedIDs()); got != 6 {
						t.Errorf("tried %d times, want 6 (1 + 5 retries)", got)
					}
				}
			})
		})
	}
}

func TestSubmitAndRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, nucleus.SimOptions{StepDelay: time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- e.applier.Run(ctx) }()
		e.applier.Submit(doc("d-1", 1, "com.example.A", "1.0.0"))
		synctest.Wait()
		if got := e.rec.statuses(); !slices.Equal(got, []string{"d-1:IN_PROGRESS"}) {
			t.Fatalf("reports while applying = %v", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := e.rec.statuses(); !slices.Equal(got, []string{"d-1:IN_PROGRESS", "d-1:SUCCEEDED"}) {
			t.Fatalf("reports = %v", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// failingDir cannot write.
type failingDir struct{ deploy.Dir }

func (failingDir) WriteFile(string, []byte, os.FileMode) error {
	return errors.New("read-only file system")
}

func TestUnwritableStateDirFailsDeployment(t *testing.T) {
	e := newEnv(t, nucleus.SimOptions{})
	a := deploy.New(deploy.Config{Runtime: e.rt, Dir: failingDir{e.dir}, Report: e.rec.report})
	if err := a.Handle(t.Context(), doc("d-1", 1, "com.example.A", "1.0.0")); err == nil {
		t.Fatal("Handle succeeded without recording progress")
	}
	if len(e.rt.appliedIDs()) != 0 {
		t.Fatal("applied without a record")
	}
	last := e.rec.last()
	if last.Status != mqttmsg.StatusFailed || !strings.Contains(last.Reason, "state directory") {
		t.Fatalf("report = %+v", last)
	}
}
