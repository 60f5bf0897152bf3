package patches

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// newID returns a UUID v1, as CDF's task and patch ids are (§1.1).
func newID() string {
	id, err := uuid.NewUUID()
	if err != nil { // no clock sequence source: fall back to a random v4
		return uuid.NewString()
	}
	return id.String()
}

// Submit validates a patch task, stores it with one created patch per
// entry and returns the task id. Templates and targets are checked at
// dispatch (as CDF does), so a patch can be submitted before its target.
func (s *Service) Submit(ctx context.Context, in NewTask) (string, error) {
	if len(in.Patches) == 0 {
		return "", invalid("patches is required: a non-empty array of {deviceId, patchTemplateName, extraVars}")
	}
	if len(in.Patches) > MaxPatchesPerTask {
		return "", invalid("a task has at most %d patches, got %d: split it", MaxPatchesPerTask, len(in.Patches))
	}
	opts := TaskOptions{}
	if in.Options != nil {
		opts = *in.Options
	}
	for _, o := range []struct {
		v   *int
		dst *int
	}{{in.MaxConcurrency, &opts.MaxConcurrency}, {in.MaxFailures, &opts.MaxFailures}, {in.DeadlineSeconds, &opts.DeadlineSeconds}} {
		if o.v != nil {
			*o.dst = *o.v
		}
	}
	switch {
	case opts.MaxConcurrency < 0 || opts.MaxConcurrency > 1000:
		return "", invalid("maxConcurrency must be from 1 to 1000 (default %d), got %d", DefaultMaxConcurrency, opts.MaxConcurrency)
	case opts.MaxFailures < 0:
		return "", invalid("maxFailures must not be negative (0: never stop), got %d", opts.MaxFailures)
	case opts.DeadlineSeconds < 0 || opts.DeadlineSeconds > 30*24*3600:
		return "", invalid("deadlineSeconds must be from 0 (none) to 2592000 (30 days), got %d", opts.DeadlineSeconds)
	}
	if opts.MaxConcurrency == 0 {
		opts.MaxConcurrency = DefaultMaxConcurrency
	}
	var errs []string
	for i, p := range in.Patches {
		at := fmt.Sprintf("patches[%d]", i)
		if p.DeviceID == "" {
			errs = append(errs, at+".deviceId is required")
		} else if err := CheckDeviceID(p.DeviceID); err != nil {
			errs = append(errs, at+": "+errkind.Message(err))
		}
		if p.PatchTemplateName == "" {
			errs = append(errs, at+".patchTemplateName is required")
		}
		switch p.PatchType {
		case "", TypeAgentBased, TypeAgentless:
		default:
			errs = append(errs, fmt.Sprintf("%s.patchType must be agentbased or agentless, got %q", at, p.PatchType))
		}
		for k := range p.ExtraVars {
			if !varNameRE.MatchString(k) {
				errs = append(errs, fmt.Sprintf("%s.extraVars key %q must be letters, digits or '_' and not start with a digit", at, k))
			}
		}
	}
	if len(errs) > 0 {
		return "", invalid("%s", strings.Join(errs, "; "))
	}

	now := s.now()
	t := Task{TaskID: newID(), Options: opts, CreatedAt: cdf.At(now), UpdatedAt: cdf.At(now)}
	if opts.DeadlineSeconds > 0 {
		t.Deadline = now.Add(time.Duration(opts.DeadlineSeconds) * time.Second)
	}
	ps := make([]Patch, len(in.Patches))
	for i, np := range in.Patches {
		typ := np.PatchType
		if typ == "" {
			typ = TypeAgentBased
		}
		// Increasing creation times keep the submitted order for dispatch.
		at := cdf.At(now.Add(time.Duration(i) * time.Millisecond))
		ps[i] = Patch{PatchID: newID(), TaskID: t.TaskID, DeviceID: np.DeviceID, PatchTemplateName: np.PatchTemplateName,
			PatchType: typ, PatchStatus: patchmsg.PatchCreated, ExtraVars: np.ExtraVars, Attempt: 1,
			CreatedAt: at, UpdatedAt: at}
	}
	if err := s.cfg.Store.CreatePatchTask(ctx, t, ps); err != nil {
		return "", fmt.Errorf("create patch task: %w", err)
	}
	s.log.Info("patch task created", "taskId", t.TaskID, "patches", len(ps), "maxConcurrency", opts.MaxConcurrency,
		"maxFailures", opts.MaxFailures, "deadlineSeconds", opts.DeadlineSeconds)
	s.wake()
	return t.TaskID, nil
}

// GetTask returns a task with its status and the counts of its patches'
// statuses.
func (s *Service) GetTask(ctx context.Context, id string) (Task, error) {
	t, err := s.cfg.Store.GetPatchTask(ctx, id)
	if err != nil {
		return Task{}, err
	}
	counts, err := s.cfg.Store.CountTaskPatches(ctx, id)
	if err != nil {
		return Task{}, err
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	t.Counts = counts
	t.Counts["total"] = total
	switch {
	case counts[patchmsg.PatchSuccess]+counts[patchmsg.PatchFailed] < total:
		t.Status = TaskInProgress
	case counts[patchmsg.PatchFailed] > 0:
		t.Status = TaskFailed
	default:
		t.Status = TaskSuccess
	}
	return t, nil
}

// ListTaskPatches lists a task's patches in submission order; the returned
// cursor is "" on the last page. errkind.NotFound if the task is unknown.
func (s *Service) ListTaskPatches(ctx context.Context, taskID string, count int, after string) ([]Patch, string, error) {
	if _, err := s.cfg.Store.GetPatchTask(ctx, taskID); err != nil {
		return nil, "", err
	}
	return s.cfg.Store.ListTaskPatches(ctx, taskID, count, after)
}

// ListDevicePatches lists a device's patches, optionally with one status.
func (s *Service) ListDevicePatches(ctx context.Context, deviceID, status string, count int, after string) ([]Patch, string, error) {
	switch status {
	case "", patchmsg.PatchCreated, patchmsg.PatchPending, patchmsg.PatchSuccess, patchmsg.PatchFailed, patchmsg.PatchRetry:
	default:
		return nil, "", invalid("patchStatus must be created, pending, success, failed or retry, got %q", status)
	}
	return s.cfg.Store.ListDevicePatches(ctx, deviceID, status, count, after)
}

// GetPatch returns a patch with the size of its stored logs.
func (s *Service) GetPatch(ctx context.Context, id string) (Patch, error) {
	p, err := s.cfg.Store.GetPatch(ctx, id)
	if err != nil {
		return Patch{}, err
	}
	n, err := s.cfg.Store.PatchLogBytes(ctx, id, p.Attempt)
	if err != nil {
		return Patch{}, err
	}
	p.Logs = &LogInfo{Available: n > 0, Bytes: n}
	return p, nil
}

// Steps returns the step results of a patch's current attempt.
func (s *Service) Steps(ctx context.Context, id string) ([]patchmsg.StepResult, error) {
	p, err := s.cfg.Store.GetPatch(ctx, id)
	if err != nil {
		return nil, err
	}
	if p.Steps == nil {
		return []patchmsg.StepResult{}, nil
	}
	return p.Steps, nil
}

// Logs returns the stored output of a patch attempt (0: the current one),
// optionally of one step and stream.
func (s *Service) Logs(ctx context.Context, id string, attempt int, step, stream string) ([]byte, error) {
	switch stream {
	case "", patchmsg.StreamStdout, patchmsg.StreamStderr, patchmsg.StreamConsole:
	default:
		return nil, invalid("stream must be stdout, stderr or console, got %q", stream)
	}
	p, err := s.cfg.Store.GetPatch(ctx, id)
	if err != nil {
		return nil, err
	}
	if attempt == 0 {
		attempt = p.Attempt
	}
	if attempt < 1 || attempt > p.Attempt {
		return nil, invalid("attempt must be from 1 to %d", p.Attempt)
	}
	return s.cfg.Store.PatchLogs(ctx, id, attempt, step, stream)
}

// update applies fn to the stored patch and saves it, retrying when
// another writer changed it meanwhile. fn returns false to leave the
// patch as it is.
func (s *Service) update(ctx context.Context, id string, fn func(p *Patch) (bool, error)) (Patch, bool, error) {
	for range 20 {
		p, err := s.cfg.Store.GetPatch(ctx, id)
		if err != nil {
			return Patch{}, false, err
		}
		changed, err := fn(&p)
		if err != nil || !changed {
			return p, false, err
		}
		p.UpdatedAt = cdf.At(s.now())
		saved, err := s.cfg.Store.UpdatePatch(ctx, p)
		if errkind.Is(err, errkind.Conflict) {
			continue
		}
		if err != nil {
			return Patch{}, false, fmt.Errorf("update patch %s: %w", id, err)
		}
		return saved, true, nil
	}
	return Patch{}, false, errkind.New(errkind.Conflict, "patch %s keeps changing: retry", id)
}

// Retry starts a new attempt of a patch (any state): attempt+1, status
// retry, step results cleared; the dispatcher sends it again. A running
// attempt is cancelled on its core first.
func (s *Service) Retry(ctx context.Context, id string) (Patch, error) {
	var old Patch
	p, _, err := s.update(ctx, id, func(p *Patch) (bool, error) {
		old = *p
		p.Attempt++
		p.PatchStatus, p.StatusMessage = patchmsg.PatchRetry, ""
		p.Steps, p.Seq = nil, 0
		p.DispatchedAt, p.NotBefore, p.LastEventAt, p.Deadline = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		return true, nil
	})
	if err != nil {
		return Patch{}, err
	}
	if old.active() {
		s.sendCancel(ctx, old, "retried")
	}
	s.log.Info("patch retried", "patchId", id, "attempt", p.Attempt)
	s.wake()
	return p, nil
}

// Cancel fails a queued or running patch with AGENT:Cancelled and tells
// its core to stop; errkind.Conflict if it already finished.
func (s *Service) Cancel(ctx context.Context, id string) (Patch, error) {
	var old Patch
	p, _, err := s.update(ctx, id, func(p *Patch) (bool, error) {
		if p.Final() {
			return false, errkind.New(errkind.Conflict, "patch %s already ended %s (%s): only a created, pending or retry patch can be cancelled", id, p.PatchStatus, p.StatusMessage)
		}
		old = *p
		p.PatchStatus, p.StatusMessage = patchmsg.PatchFailed, MsgCancelled
		return true, nil
	})
	if err != nil {
		return Patch{}, err
	}
	if old.active() {
		s.sendCancel(ctx, old, "cancelled by the operator")
	}
	s.log.Info("patch cancelled", "patchId", id)
	s.wake()
	return p, nil
}

// DeletePatch deletes a patch, its logs and its link to the task; a
// running attempt is cancelled on its core.
func (s *Service) DeletePatch(ctx context.Context, id string) error {
	p, err := s.cfg.Store.GetPatch(ctx, id)
	if err != nil {
		return err
	}
	if err := s.cfg.Store.DeletePatch(ctx, id); err != nil {
		return err
	}
	if p.active() {
		s.sendCancel(ctx, p, "deleted")
	}
	return nil
}

// sendCancel tells p's core to stop p's current attempt; a failure is
// logged (the agent's events for a final patch are ignored anyway).
func (s *Service) sendCancel(ctx context.Context, p Patch, reason string) {
	if s.cfg.Publisher == nil || p.CoreName == "" {
		return
	}
	payload, _ := json.Marshal(patchmsg.Cancel{Version: patchmsg.Version, PatchID: p.PatchID, Attempt: p.Attempt, Reason: reason})
	if err := s.cfg.Publisher.Publish(ctx, p.CoreName, patchmsg.CancelTopic(p.PatchID), payload, false); err != nil {
		s.log.Warn("could not send a patch cancel", "patchId", p.PatchID, "core", p.CoreName, "err", err)
	}
}
