package patches

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// DefaultWorkdir is where CDF-mode playbooks are placed when the template
// names no defaults.workdir.
const DefaultWorkdir = "/var/lib/ggpatch"

// Run dispatches and sweeps every TickInterval (and soon after a submit,
// retry or finished patch) until ctx ends. It keeps no state of its own:
// after a restart it continues from the database.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("patch dispatch failed; trying again", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.kick:
		}
	}
}

// Tick does one round of dispatch and sweeping: fails the patches of tasks
// past their deadline, stops tasks that reached maxFailures, starts waiting
// patches up to each task's maxConcurrency, and fails dispatched patches no
// agent accepted within the dispatch timeout (AGENT:NoAck) or whose agent
// went silent past their deadline (AGENT:Lost).
func (s *Service) Tick(ctx context.Context) error {
	open, err := s.cfg.Store.OpenPatches(ctx)
	if err != nil {
		return fmt.Errorf("list open patches: %w", err)
	}
	var order []string
	byTask := map[string][]Patch{}
	for _, p := range open {
		if _, ok := byTask[p.TaskID]; !ok {
			order = append(order, p.TaskID)
		}
		byTask[p.TaskID] = append(byTask[p.TaskID], p)
	}
	var errs []error
	for _, id := range order {
		if err := s.tickTask(ctx, id, byTask[id]); err != nil {
			errs = append(errs, err)
		}
	}
	now := s.now()
	for _, p := range open {
		if !p.active() {
			continue
		}
		switch {
		case p.PatchStatus != patchmsg.PatchPending && now.Sub(p.DispatchedAt) >= s.cfg.DispatchTimeout:
			errs = append(errs, s.failIf(ctx, p, MsgNoAck, func(c Patch) bool {
				return c.active() && c.Attempt == p.Attempt && c.PatchStatus != patchmsg.PatchPending && now.Sub(c.DispatchedAt) >= s.cfg.DispatchTimeout
			}))
		case p.PatchStatus == patchmsg.PatchPending && s.lost(p, now):
			errs = append(errs, s.failIf(ctx, p, MsgLost, func(c Patch) bool {
				return c.active() && c.Attempt == p.Attempt && c.PatchStatus == patchmsg.PatchPending && s.lost(c, now)
			}))
		case p.PatchStatus == patchmsg.PatchPending && s.quiet(p, now):
			errs = append(errs, s.resend(ctx, p))
		}
	}
	s.forgetResent(open)
	return errors.Join(errs...)
}

// quiet reports whether a running patch has sent nothing for two
// heartbeats and was not re-sent within the last heartbeat interval; it
// records the re-send it allows. A running agent answers a re-sent job with
// its state (a heartbeat, or the completion again), so a report lost on its
// way — with a replica that died holding it, say — is recovered instead of
// the patch ending AGENT:Lost at its deadline.
func (s *Service) quiet(p Patch, now time.Time) bool {
	if now.Sub(p.LastEventAt) < 2*HeartbeatInterval {
		return false
	}
	s.resentMu.Lock()
	defer s.resentMu.Unlock()
	if last, ok := s.resentAt[p.PatchID]; ok && now.Sub(last) < HeartbeatInterval {
		return false
	}
	s.resentAt[p.PatchID] = now
	s.log.Info("running patch quiet for two heartbeats: asking its agent for its state", "patchId", p.PatchID, "core", p.CoreName, "lastEventAt", p.LastEventAt)
	return true
}

// forgetResent drops the re-send times of patches no longer open.
func (s *Service) forgetResent(open []Patch) {
	s.resentMu.Lock()
	defer s.resentMu.Unlock()
	if len(s.resentAt) == 0 {
		return
	}
	keep := make(map[string]bool, len(open))
	for _, p := range open {
		keep[p.PatchID] = true
	}
	for id := range s.resentAt {
		if !keep[id] {
			delete(s.resentAt, id)
		}
	}
}

// lost reports whether a running patch's agent has been silent for three
// heartbeats and its deadline passed.
func (s *Service) lost(p Patch, now time.Time) bool {
	return now.Sub(p.LastEventAt) >= 3*HeartbeatInterval && !p.Deadline.IsZero() && now.After(p.Deadline)
}

// tickTask handles one task's open patches (in submission order).
func (s *Service) tickTask(ctx context.Context, taskID string, open []Patch) error {
	task, err := s.cfg.Store.GetPatchTask(ctx, taskID)
	if err != nil {
		return fmt.Errorf("patch task %s: %w", taskID, err)
	}
	now := s.now()
	var errs []error
	if !task.Deadline.IsZero() && !now.Before(task.Deadline) {
		for _, p := range open {
			errs = append(errs, s.failIf(ctx, p, MsgDeadline, func(c Patch) bool { return !c.Final() }))
		}
		return errors.Join(errs...)
	}
	failed := 0
	if task.Options.MaxFailures > 0 {
		counts, err := s.cfg.Store.CountTaskPatches(ctx, taskID)
		if err != nil {
			return err
		}
		failed = counts[patchmsg.PatchFailed]
	}
	stopped := func() bool { return task.Options.MaxFailures > 0 && failed >= task.Options.MaxFailures }
	slots := task.Options.MaxConcurrency
	if slots <= 0 {
		slots = DefaultMaxConcurrency
	}
	for _, p := range open {
		if p.active() {
			slots--
		}
	}
	for _, p := range open {
		if !p.waiting() {
			continue
		}
		// A stopped task starts no new patch; an operator's retry still runs.
		if stopped() && p.PatchStatus == patchmsg.PatchCreated {
			errs = append(errs, s.failIf(ctx, p, MsgNotStarted, func(c Patch) bool { return c.waiting() && c.PatchStatus == patchmsg.PatchCreated }))
			continue
		}
		if slots <= 0 || now.Before(p.NotBefore) {
			continue
		}
		started, err := s.dispatch(ctx, task, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if started {
			slots--
		} else {
			failed++
		}
	}
	return errors.Join(errs...)
}

// failIf ends p as failed with msg if cond still holds for the stored
// patch, and tells its core to stop when it was running.
func (s *Service) failIf(ctx context.Context, p Patch, msg string, cond func(Patch) bool) error {
	var old Patch
	_, changed, err := s.update(ctx, p.PatchID, func(c *Patch) (bool, error) {
		if !cond(*c) {
			return false, nil
		}
		old = *c
		c.PatchStatus, c.StatusMessage = patchmsg.PatchFailed, msg
		return true, nil
	})
	if errkind.Is(err, errkind.NotFound) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err
	}
	if changed {
		s.log.Info("patch failed", "patchId", p.PatchID, "taskId", p.TaskID, "device", p.DeviceID, "statusMessage", msg)
		if old.active() && msg != MsgNoAck {
			s.sendCancel(ctx, old, msg)
		}
	}
	return nil
}

// jobError is a reason a job cannot be built; the patch fails with it.
type jobError struct{ msg string }

func (e *jobError) Error() string { return e.msg }

// dispatch starts one waiting patch: it resolves the template's latest
// version and the target, marks the patch dispatched, then publishes the
// job. started is false when the patch failed instead.
func (s *Service) dispatch(ctx context.Context, task Task, p Patch) (started bool, err error) {
	now := s.now()
	fail := func(msg string) (bool, error) {
		return false, s.failIf(ctx, p, msg, func(c Patch) bool { return c.waiting() && c.Attempt == p.Attempt })
	}
	tpl, err := s.cfg.Store.GetPatchTemplate(ctx, p.PatchTemplateName, 0)
	if errkind.Is(err, errkind.NotFound) {
		return fail(MsgTemplateNotFound)
	}
	if err != nil {
		return false, err
	}
	if !tpl.Enabled {
		return fail(MsgTemplateDisabled)
	}
	target, err := s.cfg.Store.GetPatchTarget(ctx, p.DeviceID)
	if errkind.Is(err, errkind.NotFound) {
		return fail(MsgActivationNotFound)
	}
	if err != nil {
		return false, err
	}
	deadline := now.Add(s.cfg.DispatchTimeout)
	if !task.Deadline.IsZero() {
		deadline = task.Deadline
	}
	next := p
	next.CoreName, next.PatchTemplateVersion, next.Deadline = target.CoreName, tpl.VersionNo, deadline
	job, err := s.buildJob(ctx, next, tpl, target)
	var je *jobError
	if errors.As(err, &je) {
		return fail(je.msg)
	}
	if err != nil {
		return false, err
	}
	saved, changed, err := s.update(ctx, p.PatchID, func(c *Patch) (bool, error) {
		if !c.waiting() || c.Attempt != p.Attempt {
			return false, nil
		}
		c.CoreName, c.PatchTemplateVersion, c.Deadline = next.CoreName, next.PatchTemplateVersion, next.Deadline
		c.DispatchedAt, c.LastEventAt, c.NotBefore = now, now, time.Time{}
		c.StatusMessage = MsgQueued
		c.Steps = make([]patchmsg.StepResult, len(job.Template.Steps))
		for i, st := range job.Template.Steps {
			c.Steps[i] = patchmsg.StepResult{Index: i, Name: st.Name, Status: patchmsg.StepPending}
		}
		return true, nil
	})
	if errkind.Is(err, errkind.NotFound) {
		return false, nil
	}
	if err != nil || !changed {
		return changed, err
	}
	s.publishJob(ctx, saved, job)
	return true, nil
}

// publishJob sends a job; a failure is logged: the job is sent again when
// the core's agent says hello without it, and fails after the dispatch
// timeout if it never arrives.
func (s *Service) publishJob(ctx context.Context, p Patch, job patchmsg.Job) {
	if s.cfg.Publisher == nil {
		return
	}
	payload, err := json.Marshal(job)
	if err == nil && len(payload) > patchmsg.MaxPayload {
		err = fmt.Errorf("the job is %d bytes, over the %d-byte message limit", len(payload), patchmsg.MaxPayload)
	}
	if err == nil {
		err = s.cfg.Publisher.Publish(ctx, p.CoreName, patchmsg.StartTopic(p.PatchID), payload, false)
	}
	if err != nil {
		s.log.Warn("could not send a patch job; it is re-sent when the core says hello", "patchId", p.PatchID, "core", p.CoreName, "err", err)
		return
	}
	s.log.Info("patch job sent", "patchId", p.PatchID, "attempt", p.Attempt, "core", p.CoreName, "device", p.DeviceID,
		"template", p.PatchTemplateName, "versionNo", p.PatchTemplateVersion)
}

// buildJob turns a template version, a target and a patch into the job
// the agent runs: variables merged (patch wins), a CDF playbook template
// turned into one file and the ansible-playbook step (§6.3), big inline
// files and artifacts turned into signed URLs, presign expressions in
// the variables resolved (presign.go).
func (s *Service) buildJob(ctx context.Context, p Patch, tpl Template, target Target) (patchmsg.Job, error) {
	vars := maps.Clone(tpl.ExtraVars)
	if vars == nil {
		vars = map[string]string{}
	}
	maps.Copy(vars, p.ExtraVars)
	if err := s.resolvePresign(ctx, vars); err != nil {
		return patchmsg.Job{}, err
	}
	jt := patchmsg.JobTemplate{Name: tpl.Name, VersionNo: tpl.VersionNo, VarsEncoding: tpl.VarsEncoding,
		Files: []patchmsg.FileSpec{}, Steps: []patchmsg.StepSpec{}}
	if tpl.Defaults != nil {
		jt.Defaults = *tpl.Defaults
	}
	files, steps := tpl.Files, tpl.Steps
	if len(steps) == 0 && tpl.PlaybookFileContents != "" {
		files, steps = playbookJob(tpl, jt.Defaults, vars)
		jt.VarsEncoding = "base64"
	}
	expires := p.Deadline.Add(urlSlack)
	for _, f := range files {
		switch {
		case f.Source.Inline != "":
			data, err := base64.StdEncoding.DecodeString(f.Source.Inline)
			if err != nil {
				return patchmsg.Job{}, &jobError{"BAD_TEMPLATE:" + f.Path}
			}
			sum := sha256.Sum256(data)
			f.SHA256 = hex.EncodeToString(sum[:])
			if len(data) > InlineLimit {
				f.Source = patchmsg.FileSource{URL: s.blobURL(f.SHA256, expires)}
			}
		case f.Source.Artifact != "":
			a, err := s.cfg.Store.GetPatchArtifact(ctx, tpl.Name, f.Source.Artifact)
			if errkind.Is(err, errkind.NotFound) || (err == nil && a.SHA256 != f.SHA256) {
				return patchmsg.Job{}, &jobError{MsgArtifactNotFound + ":" + f.Source.Artifact}
			}
			if err != nil {
				return patchmsg.Job{}, err
			}
			f.Source = patchmsg.FileSource{URL: s.blobURL(f.SHA256, expires)}
		}
		jt.Files = append(jt.Files, f)
	}
	jt.Steps = append(jt.Steps, steps...)
	return patchmsg.Job{Version: patchmsg.Version, Schema: patchmsg.JobSchema, PatchID: p.PatchID, TaskID: p.TaskID,
		Attempt: p.Attempt, DeviceID: p.DeviceID, Deadline: p.Deadline.UTC(), Target: target.Target, Template: jt,
		Vars: vars, Report: patchmsg.Report{Logs: "stream", MaxOutputBytes: 64 << 10}}, nil
}

// playbookJob is CDF compatibility mode: the playbook as one file in the
// work directory and the ansible-playbook command SSM ran, with the
// variables base64-encoded as CDF passed them.
func playbookJob(tpl Template, d patchmsg.Defaults, vars map[string]string) ([]patchmsg.FileSpec, []patchmsg.StepSpec) {
	dir := d.Workdir
	if dir == "" {
		dir = DefaultWorkdir
	}
	path := strings.TrimRight(dir, "/") + "/" + tpl.Name + "___" + tpl.PlaybookName
	var ev []string
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		ev = append(ev, k+"="+base64.StdEncoding.EncodeToString([]byte(vars[k])))
	}
	run := "ansible-playbook -i \"localhost,\" -c local"
	if len(ev) > 0 {
		run += " -e \"" + strings.Join(ev, " ") + "\""
	}
	run += " -v " + shq(path)
	files := []patchmsg.FileSpec{{Path: path, Mode: "0644", Source: patchmsg.FileSource{Inline: tpl.PlaybookFileContents}}}
	steps := []patchmsg.StepSpec{{Name: "ansible-playbook", Run: run, Workdir: dir, TimeoutSeconds: 3600}}
	return files, steps
}

// shq quotes s for a POSIX shell.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// blobURL is the signed URL of a blob, valid until expires.
func (s *Service) blobURL(sum string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return strings.TrimRight(s.cfg.BaseURL, "/") + "/patchBlobs/" + sum + "?expires=" + exp + "&signature=" + s.sign(sum, exp)
}

func (s *Service) sign(sum, exp string) string {
	mac := hmac.New(sha256.New, s.cfg.URLKey)
	mac.Write([]byte("ggfleet patch blob\x00" + sum + "\x00" + exp))
	return hex.EncodeToString(mac.Sum(nil))
}

// Blob returns the bytes of a blob named by a signed URL; errkind.Forbidden
// when the signature is wrong or expired.
func (s *Service) Blob(ctx context.Context, sum, expires, signature string) ([]byte, error) {
	if len(s.cfg.URLKey) == 0 || s.cfg.Blobs == nil {
		return nil, errkind.New(errkind.Unavailable, "this broker serves no patch blobs")
	}
	if !sha256RE.MatchString(sum) {
		return nil, errkind.New(errkind.NotFound, "no such blob: the name is a SHA-256 in hex")
	}
	exp, err := strconv.ParseInt(expires, 10, 64)
	if err != nil {
		return nil, invalid("expires must be a unix time in seconds: use the URL of the job as sent")
	}
	if !hmac.Equal([]byte(s.sign(sum, expires)), []byte(signature)) {
		return nil, errkind.New(errkind.Forbidden, "the URL's signature does not match: use the URL of the job as sent")
	}
	if s.now().Unix() > exp {
		return nil, errkind.New(errkind.Forbidden, "the URL expired at %s: the broker sends a fresh one when the job is re-sent", time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	data, _, err := s.cfg.Blobs.GetArtifact(ctx, BlobKey(sum))
	if err != nil {
		return nil, err
	}
	return data, nil
}

// HandleHello re-sends the jobs of core's dispatched patches that no agent
// accepted yet and that the agent's hello does not list (§6.5).
func (s *Service) HandleHello(ctx context.Context, core string, known []mqttmsg.PatchState) error {
	open, err := s.cfg.Store.OpenCorePatches(ctx, core)
	if err != nil {
		return fmt.Errorf("open patches of core %s: %w", core, err)
	}
	has := map[string]int{}
	for _, k := range known {
		has[k.PatchID] = k.Attempt
	}
	var errs []error
	for _, p := range open {
		if !p.active() || p.PatchStatus == patchmsg.PatchPending || has[p.PatchID] == p.Attempt {
			continue
		}
		errs = append(errs, s.resend(ctx, p))
	}
	return errors.Join(errs...)
}

// resend rebuilds and publishes a dispatched patch's job from the stored
// template version and the current target.
func (s *Service) resend(ctx context.Context, p Patch) error {
	fail := func(msg string) error {
		return s.failIf(ctx, p, msg, func(c Patch) bool { return c.active() && c.Attempt == p.Attempt })
	}
	tpl, err := s.cfg.Store.GetPatchTemplate(ctx, p.PatchTemplateName, p.PatchTemplateVersion)
	if errkind.Is(err, errkind.NotFound) {
		return fail(MsgTemplateNotFound)
	}
	if err != nil {
		return err
	}
	target, err := s.cfg.Store.GetPatchTarget(ctx, p.DeviceID)
	if errkind.Is(err, errkind.NotFound) {
		return fail(MsgActivationNotFound)
	}
	if err != nil {
		return err
	}
	job, err := s.buildJob(ctx, p, tpl, target)
	var je *jobError
	if errors.As(err, &je) {
		return fail(je.msg)
	}
	if err != nil {
		return err
	}
	if target.CoreName != p.CoreName {
		// The device moved to another core: the job goes where it now is.
		saved, changed, err := s.update(ctx, p.PatchID, func(c *Patch) (bool, error) {
			if !c.active() || c.Attempt != p.Attempt {
				return false, nil
			}
			c.CoreName = target.CoreName
			return true, nil
		})
		if err != nil || !changed {
			return err
		}
		p = saved
	}
	s.publishJob(ctx, p, job)
	return nil
}
