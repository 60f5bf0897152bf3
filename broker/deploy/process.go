package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// Expand is the first stage (spec §4.4, §5.2): the targets become one
// Waiting item per core, thingNames first, de-duplicated in order. Targets
// that resolve to nothing fail the task with a message.
func (s *Service) Expand(ctx context.Context, t tasks.Task) ([]tasks.Item, int, error) {
	req, err := decodeRequest(t)
	if err != nil {
		return nil, 0, tasks.Fail("the stored task cannot be read: %v", err)
	}
	if usesAssetLibrary(req.Targets) && s.cfg.AssetLibrary == nil {
		return nil, 0, tasks.Fail("%s", MsgNoAssetLibrary)
	}
	names, notes, err := s.resolveTargets(ctx, req.Targets)
	if err != nil {
		return nil, 0, err
	}
	if len(names) == 0 {
		msg := "The deployment targets resolved to no core devices"
		if len(notes) > 0 {
			msg += " (" + strings.Join(notes, "; ") + ")"
		}
		return nil, 0, tasks.Fail("%s", msg)
	}
	items := make([]tasks.Item, len(names))
	for i, n := range names {
		items[i] = tasks.Item{Name: n, Status: cdf.StatusWaiting, Input: json.RawMessage(`{}`)}
	}
	return items, BatchSize, nil
}

// resolveTargets expands deployment targets into core names, thingNames
// first, de-duplicated in order; notes say which targets resolved to
// nothing. Errors are transient (the caller retries).
func (s *Service) resolveTargets(ctx context.Context, tg cdf.DeploymentTargets) (names, notes []string, err error) {
	seen := map[string]bool{}
	add := func(list []string) {
		for _, n := range list {
			if n != "" && !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	add(tg.ThingNames)
	for _, g := range tg.ThingGroupNames {
		members, err := s.cfg.Provider.ListThingsInGroup(ctx, g)
		switch {
		case errkind.Is(err, errkind.NotFound):
			notes = append(notes, fmt.Sprintf("thing group %s does not exist", g))
		case errkind.Is(err, errkind.Invalid):
			notes = append(notes, fmt.Sprintf("thing group %s: %s", g, errkind.Message(err)))
		case err != nil:
			return nil, nil, fmt.Errorf("list things in group %q: %w", g, err)
		case len(members) == 0:
			notes = append(notes, fmt.Sprintf("thing group %s has no members", g))
		}
		add(members)
	}
	if usesAssetLibrary(tg) {
		al := s.cfg.AssetLibrary
		if al == nil {
			return nil, nil, errkind.New(errkind.Invalid, "%s", MsgNoAssetLibrary)
		}
		steps := []struct {
			what string
			run  func() ([]string, error)
			use  bool
		}{
			{"Asset Library devices", func() ([]string, error) { return al.DeviceThings(ctx, tg.AssetLibraryDeviceIDs) }, len(tg.AssetLibraryDeviceIDs) > 0},
			{"Asset Library group members", func() ([]string, error) { return al.GroupThings(ctx, tg.AssetLibraryGroupPaths) }, len(tg.AssetLibraryGroupPaths) > 0},
			{"Asset Library search", func() ([]string, error) { return al.QueryThings(ctx, tg.AssetLibraryQuery) }, len(tg.AssetLibraryQuery) > 0 && string(tg.AssetLibraryQuery) != "null"},
		}
		for _, st := range steps {
			if !st.use {
				continue
			}
			found, err := st.run()
			if errkind.Is(err, errkind.Invalid) || errkind.Is(err, errkind.NotFound) {
				notes = append(notes, fmt.Sprintf("%s: %s", st.what, errkind.Message(err)))
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", st.what, err)
			}
			add(found)
		}
	}
	return names, notes, nil
}

// progress is a deployment item's saved state.
type progress struct {
	DeploymentID string    `json:"deploymentId"`
	Deadline     time.Time `json:"deadline"`
}

// ProcessItem starts the deployment of one core (spec §5.3 with the
// corrections) and returns tasks.ErrAwait once the desired document is
// stored and published: the item then waits for HandleStatus or its
// deadline. Cores that cannot start end Failure at once. Every step is
// idempotent, so a re-run after a crash repeats nothing harmful.
func (s *Service) ProcessItem(ctx context.Context, t tasks.Task, it *tasks.Item, save func(context.Context) error) error {
	req, err := decodeRequest(t)
	if err != nil {
		return s.failStart(ctx, t, it, fmt.Sprintf("the stored task cannot be read: %v", err))
	}
	core, tpl := it.Name, req.Template
	var pr progress
	if len(it.Progress) > 0 {
		_ = json.Unmarshal(it.Progress, &pr)
	}
	if pr.Deadline.IsZero() {
		pr = progress{DeploymentID: req.DeploymentID, Deadline: s.now().Add(s.cfg.DeploymentTimeout)}
		b, _ := json.Marshal(pr)
		it.Progress = b
		if err := save(ctx); err != nil {
			return fmt.Errorf("save progress: %w", err)
		}
	}

	// 1. The desired template, before any check (unregistered cores get it too).
	now := s.now()
	if err := s.cfg.Cores.EnsureCores(ctx, []string{core}, now); err != nil {
		return fmt.Errorf("record core %s: %w", core, err)
	}
	if err := s.cfg.Cores.SetDesiredTemplate(ctx, core, tpl.Name, tpl.Version, cdf.DeploymentStatusInProgress, now); err != nil {
		return fmt.Errorf("set desired template of core %s: %w", core, err)
	}

	// 2. Registered with Greengrass V2?
	if _, err := s.cfg.Provider.GetCoreDevice(ctx, core); err != nil {
		switch {
		case errkind.Is(err, errkind.NotFound):
			return s.failStart(ctx, t, it, MsgNotRegistered)
		case errkind.Is(err, errkind.Unavailable):
			return fmt.Errorf("core device %s: %w", core, err)
		}
		return s.failStart(ctx, t, it, "Unable to determine if core device is registered with Greengrass V2: "+errText(err))
	}

	// 3. The template version.
	template, err := s.cfg.Templates.Version(ctx, tpl.Name, tpl.Version)
	if errkind.Is(err, errkind.NotFound) {
		return s.failStart(ctx, t, it, MsgTemplateNotFound)
	}
	if err != nil {
		return fmt.Errorf("load template %s version %d: %w", tpl.Name, tpl.Version, err)
	}

	// 4. The thing group of the version; the core leaves every other one.
	group := GroupName(tpl.Name, tpl.Version)
	desc := fmt.Sprintf("Greengrass V2 deployment of template %s version %d", tpl.Name, tpl.Version)
	if err := s.cfg.Provider.CreateThingGroup(ctx, group, desc); err != nil {
		if errkind.Is(err, errkind.Unavailable) {
			return err
		}
		return s.failStart(ctx, t, it, "Unable to create thing group: "+errText(err))
	}
	if err := s.leaveOtherGroups(ctx, core, group); err != nil {
		if errkind.Is(err, errkind.Unavailable) {
			return err
		}
		return s.failStart(ctx, t, it, "Failed removing from existing deployment thing groups: "+errText(err))
	}
	if err := s.cfg.Provider.AddThingToGroup(ctx, core, group); err != nil {
		if errkind.Is(err, errkind.Unavailable) {
			return err
		}
		return s.failStart(ctx, t, it, "Failed to add core device to deployment thing group target: "+errText(err))
	}

	// 5. The desired document: wait first, then the document, then publish,
	// so a report (even one caused by a re-publish on connect) always finds
	// its wait.
	payload, err := document(t, req, template)
	if err != nil {
		return s.failStart(ctx, t, it, "Failed to create deployment: "+err.Error())
	}
	if err := s.cfg.Store.PutWait(ctx, Wait{TaskID: t.ID, Core: core, Batch: it.Batch, DeploymentID: req.DeploymentID, Deadline: pr.Deadline}); err != nil {
		return err
	}
	prev, found, err := s.cfg.Store.PutDocument(ctx, Document{
		Core: core, TaskID: t.ID, DeploymentID: req.DeploymentID,
		TemplateName: tpl.Name, TemplateVersion: tpl.Version, Payload: payload, UpdatedAt: s.now(),
	})
	if err != nil {
		return err
	}
	if found && prev.DeploymentID != req.DeploymentID {
		if err := s.supersede(ctx, core, t.ID); err != nil {
			return err
		}
	}
	s.publish(ctx, core, payload)
	s.emit(ctx, EventDeploymentTaskCreated, DeploymentTaskCreatedEvent{TaskID: t.ID, CoreName: core, Status: "success"})
	s.log.Info("deployment started", "task", t.ID, "core", core, "template", tpl.Name, "version", tpl.Version, "deploymentId", req.DeploymentID)
	return tasks.ErrAwait
}

// AfterBatch has nothing to do for deployments.
func (s *Service) AfterBatch(ctx context.Context, t tasks.Task, items []*tasks.Item) error {
	return nil
}

// errText is an error's user-facing message, or its text.
func errText(err error) string {
	if m := errkind.Message(err); m != "" {
		return m
	}
	return err.Error()
}

// failStart ends an item that could not start: Failure, the core's
// deploymentStatus Failure with the message, and the event.
func (s *Service) failStart(ctx context.Context, t tasks.Task, it *tasks.Item, msg string) error {
	it.Status, it.StatusMessage = cdf.StatusFailure, msg
	if err := s.cfg.Cores.SetDeploymentStatus(ctx, it.Name, cdf.DeploymentStatusFailure, msg, s.now()); err != nil && !errkind.Is(err, errkind.NotFound) {
		return fmt.Errorf("set deployment status of core %s: %w", it.Name, err)
	}
	s.emit(ctx, EventDeploymentTaskCreated, DeploymentTaskCreatedEvent{TaskID: t.ID, CoreName: it.Name, Status: "failed", Message: msg})
	s.log.Info("deployment could not start", "task", t.ID, "core", it.Name, "reason", msg)
	return nil
}

// leaveOtherGroups removes the core from every deployment group but keep.
func (s *Service) leaveOtherGroups(ctx context.Context, core, keep string) error {
	var groups []string
	if gl, ok := s.cfg.Provider.(GroupLister); ok {
		list, err := gl.ListThingGroupsForThing(ctx, core)
		if err != nil && !errkind.Is(err, errkind.NotFound) {
			return err
		}
		groups = list
	} else {
		doc, err := s.cfg.Store.GetDocument(ctx, core)
		if err != nil && !errkind.Is(err, errkind.NotFound) {
			return err
		}
		if err == nil {
			groups = []string{GroupName(doc.TemplateName, doc.TemplateVersion)}
		}
	}
	for _, g := range groups {
		if g == keep || !strings.HasPrefix(g, GroupPrefix) {
			continue
		}
		if err := s.cfg.Provider.RemoveThingFromGroup(ctx, core, g); err != nil {
			return err
		}
	}
	return nil
}

// document builds the desired deployment document of a task's template.
func document(t tasks.Task, req request, tpl cdf.Template) ([]byte, error) {
	msg := mqttmsg.DeploymentMsg{
		Version:            mqttmsg.Version,
		DeploymentID:       req.DeploymentID,
		TaskID:             t.ID,
		TemplateName:       req.Template.Name,
		TemplateVersion:    req.Template.Version,
		Components:         map[string]mqttmsg.ComponentSpec{},
		DeploymentPolicies: tpl.DeploymentPolicies,
		CreatedAt:          t.CreatedAt.UTC(),
	}
	for _, c := range tpl.Components {
		spec := mqttmsg.ComponentSpec{ComponentVersion: c.Version}
		if c.ConfigurationUpdate != nil {
			spec.ConfigurationUpdate = &mqttmsg.ConfigurationUpdate{Merge: c.ConfigurationUpdate.Merge, Reset: c.ConfigurationUpdate.Reset}
		}
		if c.RunWith != nil {
			spec.RunWith = &mqttmsg.RunWith{PosixUser: c.RunWith.PosixUser}
		}
		msg.Components[c.Key] = spec
	}
	return json.Marshal(msg)
}

// supersede ends the items of other tasks that still wait on this core: its
// document now belongs to task current, so their reports can never come.
func (s *Service) supersede(ctx context.Context, core, current string) error {
	return s.supersedeMany(ctx, []string{core}, current)
}

// finish emits the outcome's event, applies the outcome and completes the
// item's batch when every item is final.
//
// The event comes first so that an item never ends without it: a replica
// that dies between the two leaves the item waiting, and the report sent
// again (Resender) finishes it. An item already final gets no event; when
// two replicas handle one report at once both publish it, and the event
// store keeps one (the event is keyed, events.Keyed).
func (s *Service) finish(ctx context.Context, o Outcome, event *CoreTemplateUpdatedEvent) error {
	if event != nil {
		it, err := s.cfg.Store.GetTaskItem(ctx, o.TaskID, o.Core)
		switch {
		case errkind.Is(err, errkind.NotFound):
			s.log.Warn("deployment item no longer exists", "task", o.TaskID, "core", o.Core)
			return nil
		case err != nil:
			return fmt.Errorf("deployment item of core %s in task %s: %w", o.Core, o.TaskID, err)
		case it.Status == cdf.StatusSuccess || it.Status == cdf.StatusFailure:
			return nil // a repeated report changes nothing
		}
		s.emit(ctx, EventCoreTemplateUpdated, *event)
	}
	fin, err := s.storeFinish(ctx, o)
	if errkind.Is(err, errkind.NotFound) {
		s.log.Warn("deployment item no longer exists", "task", o.TaskID, "core", o.Core)
		return nil
	}
	if err != nil {
		return fmt.Errorf("finish deployment of core %s in task %s: %w", o.Core, o.TaskID, err)
	}
	if !fin.Changed {
		return nil
	}
	s.log.Info("deployment finished", "task", o.TaskID, "core", o.Core, "status", o.Status, "message", o.Message)
	if !fin.BatchDone {
		return nil // a later outcome of the batch completes it
	}
	if _, err := s.runner.CompleteIfDone(ctx, tasks.BatchRef{TaskID: o.TaskID, Batch: fin.Batch}); err != nil {
		return fmt.Errorf("complete batch %d of task %s: %w", fin.Batch, o.TaskID, err)
	}
	return nil
}

// storeFinish applies o with the store, grouped with the outcomes being
// applied at the same time when the store can (BatchFinisher).
func (s *Service) storeFinish(ctx context.Context, o Outcome) (Finished, error) {
	if s.finishes != nil {
		return s.finishes.Put(ctx, o)
	}
	return s.cfg.Store.Finish(ctx, o)
}

// HandleStatus applies an agent's deployment report (topic
// deployments/status of thing). Reports of a deployment that is no longer
// the core's desired one are ignored, duplicates change nothing, and
// IN_PROGRESS keeps the item waiting. An error means the report could not
// be recorded (the database); the agent re-sends unacknowledged reports.
func (s *Service) HandleStatus(ctx context.Context, thing string, m mqttmsg.DeploymentStatusMsg) error {
	doc, err := s.cfg.Store.GetDocument(ctx, thing)
	if errkind.Is(err, errkind.NotFound) {
		s.log.Debug("deployment report for a core without a deployment; ignored", "core", thing, "deploymentId", m.DeploymentID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("deployment report of core %s: %w", thing, err)
	}
	if m.DeploymentID != doc.DeploymentID || (m.TaskID != "" && m.TaskID != doc.TaskID) {
		s.log.Debug("report of a superseded deployment; ignored", "core", thing, "deploymentId", m.DeploymentID, "current", doc.DeploymentID)
		return nil
	}
	o := Outcome{TaskID: doc.TaskID, Core: thing, DeploymentID: doc.DeploymentID, Now: s.now()}
	ev := CoreTemplateUpdatedEvent{
		CoreName: thing, DeploymentTaskID: doc.TaskID, DeploymentID: doc.DeploymentID, JobID: doc.DeploymentID,
		TemplateName: doc.TemplateName, TemplateVersion: doc.TemplateVersion,
	}
	switch m.Status {
	case mqttmsg.StatusSucceeded:
		o.Status, o.CoreStatus = cdf.StatusSuccess, cdf.DeploymentStatusSuccessful
		o.Reported = &cdf.TemplateRef{Name: doc.TemplateName, Version: doc.TemplateVersion}
		ev.Status = "success"
	case mqttmsg.StatusFailed:
		o.Status, o.CoreStatus = cdf.StatusFailure, m.DetailedStatus
		if o.CoreStatus == "" || !cdf.DeploymentFailed(o.CoreStatus) {
			o.CoreStatus = cdf.DeploymentStatusFailure
		}
		o.Message = failureMessage(m)
		o.CoreMessage = o.Message
		ev.Status = "failed"
	default: // IN_PROGRESS: keep waiting
		return nil
	}
	return s.finish(ctx, o, &ev)
}

// failureMessage is the item message of a FAILED report.
func failureMessage(m mqttmsg.DeploymentStatusMsg) string {
	switch {
	case m.DetailedStatus != "" && m.Reason != "":
		return m.DetailedStatus + ": " + m.Reason
	case m.Reason != "":
		return m.Reason
	case m.DetailedStatus != "":
		return m.DetailedStatus
	}
	return "The core reported that the deployment failed"
}

// Sweep fails the items whose core did not report before the deadline and
// completes batches a crash left uncompleted. Safe on every replica: each
// item is finished by one conditional update.
func (s *Service) Sweep(ctx context.Context) error {
	for {
		waits, err := s.cfg.Store.OverdueWaits(ctx, s.now(), 100)
		if err != nil {
			return fmt.Errorf("overdue deployments: %w", err)
		}
		for _, w := range waits {
			msg := fmt.Sprintf("Core device did not report the outcome of the deployment within %s", s.cfg.DeploymentTimeout)
			ev := &CoreTemplateUpdatedEvent{CoreName: w.Core, DeploymentTaskID: w.TaskID, DeploymentID: w.DeploymentID, JobID: w.DeploymentID, Status: "failed"}
			if doc, err := s.cfg.Store.GetDocument(ctx, w.Core); err == nil && doc.DeploymentID == w.DeploymentID {
				ev.TemplateName, ev.TemplateVersion = doc.TemplateName, doc.TemplateVersion
			}
			if err := s.finish(ctx, Outcome{TaskID: w.TaskID, Core: w.Core, DeploymentID: w.DeploymentID,
				Status: cdf.StatusFailure, Message: msg, CoreStatus: cdf.DeploymentStatusFailure, CoreMessage: msg, Now: s.now()}, ev); err != nil {
				return err
			}
		}
		if len(waits) < 100 {
			break
		}
	}
	refs, err := s.cfg.Store.PendingBatches(ctx)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		if _, err := s.runner.CompleteIfDone(ctx, ref); err != nil {
			return fmt.Errorf("complete batch %d of task %s: %w", ref.Batch, ref.TaskID, err)
		}
	}
	return nil
}

// Run sweeps every SweepInterval until ctx ends; it returns nil then. Each
// sweep also sends the documents of items waiting long again (Resender).
// Run it on one replica at a time (the server runs it as leader work).
func (s *Service) Run(ctx context.Context) error {
	tick := time.NewTicker(s.cfg.SweepInterval)
	defer tick.Stop()
	resend := s.NewResender()
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("deployment sweep failed; trying again", "err", err)
		}
		if _, err := resend.Resend(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sending deployment documents again failed; trying again", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// publish sends a desired document, retained. A failure is logged only: the
// document is re-published when the core connects.
func (s *Service) publish(ctx context.Context, core string, payload []byte) {
	if s.cfg.Publisher == nil {
		return
	}
	if err := s.cfg.Publisher.Publish(ctx, core, mqttmsg.Deployments, payload, true); err != nil {
		s.log.Warn("publish deployment document failed; it is re-sent when the core connects", "core", core, "err", err)
	}
}

// OnConnect re-publishes a core's desired document (retained); call it
// whenever a core connects.
func (s *Service) OnConnect(ctx context.Context, thing string) error {
	doc, err := s.cfg.Store.GetDocument(ctx, thing)
	if errkind.Is(err, errkind.NotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deployment document of core %s: %w", thing, err)
	}
	s.publish(ctx, thing, doc.Payload)
	return nil
}

// RepublishAll re-publishes every stored document; call it on broker start
// (retained MQTT state is not trusted across restarts).
func (s *Service) RepublishAll(ctx context.Context) error {
	after, n := "", 0
	for {
		docs, err := s.cfg.Store.ListDocuments(ctx, after, 500)
		if err != nil {
			return fmt.Errorf("re-publish deployment documents: %w", err)
		}
		for _, d := range docs {
			s.publish(ctx, d.Core, d.Payload)
			after = d.Core
			n++
		}
		if len(docs) < 500 {
			break
		}
	}
	s.log.Info("deployment documents re-published", "count", n)
	return nil
}
