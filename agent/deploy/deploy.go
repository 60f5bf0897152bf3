// Package deploy is the agent's deployment applier: it takes the desired
// deployment document the broker retains on ggfleet/things/{core}/deployments,
// applies it through the nucleus runtime, and reports IN_PROGRESS, then
// SUCCEEDED or FAILED (with the failing stage and the reason) on
// .../deployments/status.
//
// Progress is written to deployment.json in the state directory before each
// step, so a crash or reboot in the middle resumes the deployment on the next
// start instead of leaving the broker waiting; a document that already
// finished is never applied twice, only re-reported. One deployment runs at a
// time; documents arriving meanwhile are queued and only the latest is kept.
//
// agent/daemon composes it; it imports agent/nucleus and shared/mqttmsg.
package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/agent/nucleus"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// StateFile is the deployment record in the state directory.
const StateFile = "deployment.json"

// Stages of a deployment as recorded and reported.
const (
	StageAccepted = "accepted" // the document is recorded, nothing done yet
	StageApplying = "applying" // the runtime is applying it
	StageFinished = "finished" // the outcome is recorded
)

// Dir is the part of the state directory the applier uses (agent/statedir's
// *Dir satisfies it). WriteFile must replace the file atomically; ReadFile of
// a missing file returns an error wrapping fs.ErrNotExist.
type Dir interface {
	ReadFile(name string) ([]byte, error)
	WriteFile(name string, data []byte, perm os.FileMode) error
}

// Config wires an Applier.
type Config struct {
	// Runtime applies the documents.
	Runtime nucleus.Runtime
	// Dir is the state directory.
	Dir Dir
	// Report publishes a status on .../deployments/status. It should be the
	// MQTT client's reliable publish (QoS 1, kept while offline); an error is
	// logged, and the status is sent again when the broker re-sends the
	// document.
	Report func(ctx context.Context, m mqttmsg.DeploymentStatusMsg) error
	// Logger receives the applier's logs (default: discarded).
	Logger *slog.Logger
	// Now is the clock for timestamps (default time.Now).
	Now func() time.Time
	// Retries is how many times a runtime error ("could not find out") is
	// retried before the deployment is reported FAILED (default 5).
	Retries int
	// RetryDelay is the first wait between retries; it doubles up to one
	// minute (default 2 seconds).
	RetryDelay time.Duration
}

// Status is the applier's latest deployment, for health reports and
// `ggagent status`.
type Status struct {
	DeploymentID    string
	TaskID          string
	TemplateName    string
	TemplateVersion int
	// Status is IN_PROGRESS, SUCCEEDED or FAILED ("" before any deployment).
	Status         string
	DetailedStatus string
	// Stage is the current stage while in progress, the failing stage after a failure.
	Stage     string
	Reason    string
	UpdatedAt time.Time
}

// record is deployment.json.
type record struct {
	Version      int                   `json:"version"`
	DeploymentID string                `json:"deploymentId"`
	TaskID       string                `json:"taskId"`
	Stage        string                `json:"stage"`
	Doc          mqttmsg.DeploymentMsg `json:"doc"`
	Result       *result               `json:"result,omitempty"`
	UpdatedAt    time.Time             `json:"updatedAt"`
}

// result is the final status of a finished deployment.
type result struct {
	Status         string `json:"status"`
	DetailedStatus string `json:"detailedStatus"`
	Stage          string `json:"stage,omitempty"`
	Reason         string `json:"reason,omitempty"`
}

const recordVersion = 1

// Applier applies deployment documents one at a time.
type Applier struct {
	cfg  Config
	log  *slog.Logger
	wake chan struct{}

	mu      sync.Mutex
	busy    bool                   // a Handle call is applying
	active  string                 // deployment id being applied
	pending *mqttmsg.DeploymentMsg // latest document waiting behind the active one
	current Status
}

// New returns an Applier. It starts nothing; call Resume (or Run) at start.
func New(cfg Config) *Applier {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 2 * time.Second
	}
	return &Applier{cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1)}
}

// Current returns the latest deployment's status.
func (a *Applier) Current() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current
}

// Effective returns the latest deployment as the health report lists it
// (nil before any deployment); it fits health.Config.Deployments.
func (a *Applier) Effective() []mqttmsg.EffectiveDeployment {
	s := a.Current()
	if s.DeploymentID == "" {
		return nil
	}
	return []mqttmsg.EffectiveDeployment{{
		DeploymentID: s.DeploymentID, TemplateName: s.TemplateName,
		TemplateVersion: s.TemplateVersion, Status: s.Status,
	}}
}

// Submit queues d for Run without waiting; a newer document replaces one
// still waiting. It is what the MQTT handler for .../deployments calls.
func (a *Applier) Submit(d mqttmsg.DeploymentMsg) {
	a.mu.Lock()
	if d.DeploymentID != a.active {
		a.pending = &d
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run resumes an interrupted deployment, then applies submitted documents
// until ctx ends.
func (a *Applier) Run(ctx context.Context) error {
	if err := a.Resume(ctx); err != nil && ctx.Err() == nil {
		a.log.Error("resume deployment", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.wake:
		}
		a.mu.Lock()
		d := a.pending
		if a.busy || d == nil {
			a.mu.Unlock()
			continue
		}
		a.pending = nil
		a.mu.Unlock()
		if err := a.Handle(ctx, *d); err != nil && ctx.Err() == nil {
			a.log.Error("deployment", "deployment", d.DeploymentID, "err", err)
		}
	}
}

// Resume finishes a deployment that a crash or reboot interrupted: one
// recorded as accepted or applying is applied again (applying is idempotent)
// and reported. A finished one is only loaded for Current.
func (a *Applier) Resume(ctx context.Context) error {
	rec, err := a.load()
	if err != nil {
		return err
	}
	if rec == nil {
		return nil
	}
	a.setCurrent(rec)
	if rec.Stage == StageFinished {
		return nil
	}
	a.log.Info("resuming interrupted deployment", "deployment", rec.DeploymentID, "stage", rec.Stage)
	return a.Handle(ctx, rec.Doc)
}

// Handle applies d and reports its progress. A document whose deployment
// already finished is only re-reported (the broker may have missed the
// status). If another document is being applied, d is queued (replacing any
// document already queued) and Handle returns nil at once; the running call
// applies it next.
func (a *Applier) Handle(ctx context.Context, d mqttmsg.DeploymentMsg) error {
	a.mu.Lock()
	if a.busy {
		if d.DeploymentID != a.active {
			a.pending = &d
			a.log.Info("deployment queued behind the running one", "deployment", d.DeploymentID, "running", a.active)
		}
		a.mu.Unlock()
		return nil
	}
	a.busy = true
	a.mu.Unlock()

	var err error
	for {
		a.mu.Lock()
		a.active = d.DeploymentID
		a.mu.Unlock()
		err = a.handleOne(ctx, d)
		a.mu.Lock()
		next := a.pending
		a.pending = nil
		if next == nil || ctx.Err() != nil {
			// On shutdown a queued document is dropped: the broker re-sends
			// the desired document on every connect.
			a.busy, a.active = false, ""
			a.mu.Unlock()
			return err
		}
		a.mu.Unlock()
		if err != nil {
			a.log.Error("deployment", "deployment", d.DeploymentID, "err", err)
		}
		d = *next
	}
}

func (a *Applier) handleOne(ctx context.Context, d mqttmsg.DeploymentMsg) error {
	log := a.log.With("deployment", d.DeploymentID, "task", d.TaskID)
	prev, err := a.load()
	if err != nil {
		// An unreadable record cannot tell us whether d already ran;
		// applying again is safe, never applying is not.
		log.Warn("deployment record unreadable; applying the document", "err", err)
		prev = nil
	}
	if prev != nil && prev.DeploymentID == d.DeploymentID && prev.Stage == StageFinished && prev.Result != nil {
		log.Info("deployment already finished; reporting its status again", "status", prev.Result.Status)
		a.report(ctx, prev, prev.Result.Status, prev.Result.DetailedStatus, prev.Result.Stage, prev.Result.Reason)
		return nil
	}
	if prev != nil && prev.DeploymentID != d.DeploymentID && !d.CreatedAt.IsZero() && d.CreatedAt.Before(prev.Doc.CreatedAt) {
		log.Info("ignoring a document older than the last deployment", "last", prev.DeploymentID)
		return nil
	}

	rec := &record{Version: recordVersion, DeploymentID: d.DeploymentID, TaskID: d.TaskID, Stage: StageAccepted, Doc: d}
	if err := a.save(rec); err != nil {
		// Without a record a reboot could leave the broker waiting forever;
		// refuse rather than apply blind.
		rec.Stage = StageFinished
		rec.Result = &result{Status: mqttmsg.StatusFailed, DetailedStatus: mqttmsg.DetailFailedNoStateChange,
			Stage: StageAccepted, Reason: "the agent cannot record deployment progress in its state directory: " + err.Error()}
		a.setCurrent(rec)
		a.report(ctx, rec, rec.Result.Status, rec.Result.DetailedStatus, rec.Result.Stage, rec.Result.Reason)
		return err
	}
	a.setCurrent(rec)
	a.report(ctx, rec, mqttmsg.StatusInProgress, "", StageAccepted, "")

	rec.Stage = StageApplying
	if err := a.save(rec); err != nil {
		log.Warn("record deployment progress", "err", err)
	}
	a.setCurrent(rec)
	log.Info("applying deployment", "runtime", a.cfg.Runtime.Name(), "components", len(d.Components))

	oc, err := a.apply(ctx, d)
	if err != nil {
		// Shutting down: the record stays "applying" and Resume finishes it.
		return err
	}
	rec.Stage = StageFinished
	rec.Result = &result{Status: oc.Status, DetailedStatus: oc.DetailedStatus, Stage: oc.Stage, Reason: oc.Reason}
	if err := a.save(rec); err != nil {
		log.Warn("record deployment outcome", "err", err)
	}
	a.setCurrent(rec)
	log.Info("deployment finished", "status", oc.Status, "detailed_status", oc.DetailedStatus, "stage", oc.Stage, "reason", oc.Reason)
	a.report(ctx, rec, oc.Status, oc.DetailedStatus, oc.Stage, oc.Reason)
	return nil
}

// apply calls the runtime, retrying its errors with backoff. It returns an
// error only when ctx ends.
func (a *Applier) apply(ctx context.Context, d mqttmsg.DeploymentMsg) (nucleus.Outcome, error) {
	delay := a.cfg.RetryDelay
	for attempt := 1; ; attempt++ {
		oc, err := a.cfg.Runtime.Apply(ctx, d)
		if err == nil {
			return oc, nil
		}
		if ctx.Err() != nil {
			return nucleus.Outcome{}, ctx.Err()
		}
		if attempt > a.cfg.Retries {
			return nucleus.Outcome{
				Status:         mqttmsg.StatusFailed,
				DetailedStatus: mqttmsg.DetailFailedNoStateChange,
				Stage:          StageApplying,
				Reason:         fmt.Sprintf("the %s runtime failed %d times: %v", a.cfg.Runtime.Name(), attempt, err),
			}, nil
		}
		a.log.Warn("apply deployment; retrying", "deployment", d.DeploymentID, "attempt", attempt, "retry_in", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nucleus.Outcome{}, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, time.Minute)
	}
}

func (a *Applier) report(ctx context.Context, rec *record, status, detailed, stage, reason string) {
	m := mqttmsg.DeploymentStatusMsg{
		Version: mqttmsg.Version, DeploymentID: rec.DeploymentID, TaskID: rec.TaskID,
		Status: status, DetailedStatus: detailed, Stage: stage, Reason: reason, Timestamp: a.cfg.Now().UTC(),
	}
	if err := a.cfg.Report(ctx, m); err != nil {
		a.log.Warn("report deployment status", "deployment", rec.DeploymentID, "status", status, "err", err)
	}
}

func (a *Applier) setCurrent(rec *record) {
	s := Status{
		DeploymentID: rec.DeploymentID, TaskID: rec.TaskID,
		TemplateName: rec.Doc.TemplateName, TemplateVersion: rec.Doc.TemplateVersion,
		Status: mqttmsg.StatusInProgress, Stage: rec.Stage, UpdatedAt: rec.UpdatedAt,
	}
	if r := rec.Result; r != nil {
		s.Status, s.DetailedStatus, s.Stage, s.Reason = r.Status, r.DetailedStatus, r.Stage, r.Reason
	}
	a.mu.Lock()
	a.current = s
	a.mu.Unlock()
}

func (a *Applier) load() (*record, error) {
	b, err := a.cfg.Dir.ReadFile(StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read deployment record: %w", err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("read deployment record %s: %w", StateFile, err)
	}
	if rec.Version > recordVersion {
		return nil, fmt.Errorf("deployment record %s has version %d, newer than this agent understands (%d)", StateFile, rec.Version, recordVersion)
	}
	if rec.DeploymentID == "" {
		return nil, nil
	}
	return &rec, nil
}

func (a *Applier) save(rec *record) error {
	rec.UpdatedAt = a.cfg.Now().UTC()
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode deployment record: %w", err)
	}
	if err := a.cfg.Dir.WriteFile(StateFile, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("record deployment progress: %w", err)
	}
	return nil
}
