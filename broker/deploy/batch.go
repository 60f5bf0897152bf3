package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Whole batches (tasks.BatchProcessor). ProcessItem's steps cost a dozen
// database round trips per core and a core's document went out only at the
// end of its own item, so a deployment to 1,000 cores reached its last core
// seconds later. ProcessBatch does the same steps for every core of a batch
// together: the per-task steps once (template version, the version's thing
// group, the document), the per-core rows in a few set-based statements,
// then every document of the batch is published, then the events. The
// outcome of each core, and its failure message, are ProcessItem's.

var _ tasks.BatchProcessor = (*Service)(nil)

// BatchRegistry is implemented by providers that answer the registry steps
// of a whole batch in a few queries (the local provider). Other providers
// (AWS, rate-limited per call anyway) are asked per core, a few cores at a
// time.
type BatchRegistry interface {
	// CoreRegistrations returns, for each of names that is not a
	// registered Greengrass core, why: errkind.NotFound when it is not
	// registered, else the error that kept it from being checked.
	CoreRegistrations(ctx context.Context, names []string) (map[string]error, error)
	// MoveToGroup makes each thing a member of group and of no other group
	// whose name starts with prefix (group must exist). It returns the
	// error of each thing that could not be added (errkind.NotFound when
	// the thing does not exist); the error is for the whole call.
	MoveToGroup(ctx context.Context, things []string, group, prefix string) (map[string]error, error)
}

// batchConcurrency bounds the per-core provider calls of a batch (when the
// provider has no BatchRegistry) and the publishes of its documents.
const batchConcurrency = 16

// ProcessBatch starts the deployment of every core of a batch (see
// ProcessItem for the steps and their failure messages): the items of the
// cores that start are left InProgress, waiting for HandleStatus or their
// deadline; the others end Failure. A wait is stored before its document
// and the document before it is published, so a report always finds its
// wait, and a re-run after a crash repeats nothing harmful.
func (s *Service) ProcessBatch(ctx context.Context, t tasks.Task, items []*tasks.Item, save func(context.Context, []*tasks.Item) error) error {
	req, err := decodeRequest(t)
	if err != nil {
		for _, it := range items {
			if err := s.failStart(ctx, t, it, fmt.Sprintf("the stored task cannot be read: %v", err)); err != nil {
				return err
			}
		}
		return nil
	}
	tpl := req.Template

	// The deadline of every item, saved before any side effect.
	deadlines := make(map[string]time.Time, len(items))
	var fresh []*tasks.Item
	for _, it := range items {
		var pr progress
		if len(it.Progress) > 0 {
			_ = json.Unmarshal(it.Progress, &pr)
		}
		if pr.Deadline.IsZero() {
			pr = progress{DeploymentID: req.DeploymentID, Deadline: s.now().Add(s.cfg.DeploymentTimeout)}
			b, _ := json.Marshal(pr)
			it.Progress = b
			fresh = append(fresh, it)
		}
		deadlines[it.Name] = pr.Deadline
	}
	if err := save(ctx, fresh); err != nil {
		return fmt.Errorf("save progress: %w", err)
	}

	// 1. The desired template, before any check (unregistered cores get it too).
	names := make([]string, len(items))
	for i, it := range items {
		names[i] = it.Name
	}
	now := s.now()
	if err := s.cfg.Cores.EnsureCores(ctx, names, now); err != nil {
		return fmt.Errorf("record %d cores: %w", len(names), err)
	}
	if err := s.cfg.Cores.SetDesiredTemplates(ctx, names, tpl.Name, tpl.Version, cdf.DeploymentStatusInProgress, now); err != nil {
		return fmt.Errorf("set desired template of %d cores: %w", len(names), err)
	}

	// 2. Registered with Greengrass V2? fails holds each failing core's message.
	fails := map[string]string{}
	regs, err := s.registrations(ctx, names)
	if err != nil {
		return err
	}
	for core, rerr := range regs {
		if errkind.Is(rerr, errkind.NotFound) {
			fails[core] = MsgNotRegistered
		} else {
			fails[core] = "Unable to determine if core device is registered with Greengrass V2: " + errText(rerr)
		}
	}
	live := func() []string {
		var out []string
		for _, n := range names {
			if _, failed := fails[n]; !failed {
				out = append(out, n)
			}
		}
		return out
	}
	// failAll fails the cores that have not failed yet (a core keeps the
	// message of the first step it failed, as ProcessItem stops there).
	failAll := func(cores []string, msg string) {
		for _, c := range cores {
			if _, failed := fails[c]; !failed {
				fails[c] = msg
			}
		}
	}

	// 3–5. The template version, its thing group (the cores leave every
	// other one) and the document, for the cores still going.
	var payload []byte
	if going := live(); len(going) > 0 {
		payload, err = s.prepare(ctx, t, req, going, fails, failAll)
		if err != nil {
			return err
		}
	}

	// The cores that cannot start end now.
	for _, it := range items {
		if msg, failed := fails[it.Name]; failed {
			if err := s.failStart(ctx, t, it, msg); err != nil {
				return err
			}
		}
	}
	going := live()
	if len(going) == 0 {
		return nil
	}

	// 6. Waits, then documents, in one transaction.
	batchOf := make(map[string]int, len(items))
	for _, it := range items {
		batchOf[it.Name] = it.Batch
	}
	waits := make([]Wait, len(going))
	docs := make([]Document, len(going))
	stamp := s.now()
	for i, core := range going {
		waits[i] = Wait{TaskID: t.ID, Core: core, Batch: batchOf[core], DeploymentID: req.DeploymentID, Deadline: deadlines[core]}
		docs[i] = Document{Core: core, TaskID: t.ID, DeploymentID: req.DeploymentID,
			TemplateName: tpl.Name, TemplateVersion: tpl.Version, Payload: payload, UpdatedAt: stamp}
	}
	prev, err := s.cfg.Store.PutDeployments(ctx, waits, docs)
	if err != nil {
		return err
	}
	var superseding []string
	for _, core := range going {
		if p, found := prev[core]; found && p.DeploymentID != req.DeploymentID {
			superseding = append(superseding, core)
		}
	}
	if err := s.supersedeMany(ctx, superseding, t.ID); err != nil {
		return err
	}

	// 7. Publish every document of the batch, then the events.
	s.publishAll(ctx, going, payload)
	created := make([]any, len(going))
	for i, core := range going {
		created[i] = DeploymentTaskCreatedEvent{TaskID: t.ID, CoreName: core, Status: "success"}
	}
	s.emitAll(ctx, EventDeploymentTaskCreated, created)
	for _, core := range going {
		s.log.Info("deployment started", "task", t.ID, "core", core, "template", tpl.Name, "version", tpl.Version, "deploymentId", req.DeploymentID)
	}
	return nil // the items of going stay InProgress, saved with their progress
}

// prepare runs the per-task steps for the cores in going and moves them
// into the template version's thing group; cores that cannot go on get
// their failure message in fails. It returns the document.
func (s *Service) prepare(ctx context.Context, t tasks.Task, req request, going []string, fails map[string]string,
	failAll func([]string, string)) ([]byte, error) {
	tpl := req.Template
	template, err := s.cfg.Templates.Version(ctx, tpl.Name, tpl.Version)
	if errkind.Is(err, errkind.NotFound) {
		failAll(going, MsgTemplateNotFound)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load template %s version %d: %w", tpl.Name, tpl.Version, err)
	}
	group := GroupName(tpl.Name, tpl.Version)
	desc := fmt.Sprintf("Greengrass V2 deployment of template %s version %d", tpl.Name, tpl.Version)
	if err := s.cfg.Provider.CreateThingGroup(ctx, group, desc); err != nil {
		if errkind.Is(err, errkind.Unavailable) {
			return nil, err
		}
		failAll(going, "Unable to create thing group: "+errText(err))
		return nil, nil
	}
	moved, err := s.moveToGroup(ctx, going, group)
	if err != nil {
		return nil, err
	}
	for core, msg := range moved {
		fails[core] = msg
	}
	payload, err := document(t, req, template)
	if err != nil {
		failAll(going, "Failed to create deployment: "+err.Error())
		return nil, nil
	}
	return payload, nil
}

// registrations returns why each core of names is not a registered
// Greengrass core (absent: registered). An error is transient (the batch
// is retried).
func (s *Service) registrations(ctx context.Context, names []string) (map[string]error, error) {
	if br, ok := s.cfg.Provider.(BatchRegistry); ok {
		regs, err := br.CoreRegistrations(ctx, names)
		if err != nil {
			return nil, fmt.Errorf("core device registrations: %w", err)
		}
		return regs, nil
	}
	out := map[string]error{}
	var mu sync.Mutex
	err := eachCore(ctx, names, func(core string) error {
		_, err := s.cfg.Provider.GetCoreDevice(ctx, core)
		switch {
		case err == nil:
			return nil
		case errkind.Is(err, errkind.Unavailable):
			return fmt.Errorf("core device %s: %w", core, err)
		}
		mu.Lock()
		out[core] = err
		mu.Unlock()
		return nil
	})
	return out, err
}

// moveToGroup moves the cores into group, out of every other deployment
// group, and returns the failure message of each core that could not be
// moved. An error is transient (the batch is retried).
func (s *Service) moveToGroup(ctx context.Context, cores []string, group string) (map[string]string, error) {
	out := map[string]string{}
	if br, ok := s.cfg.Provider.(BatchRegistry); ok {
		errs, err := br.MoveToGroup(ctx, cores, group, GroupPrefix)
		if err != nil {
			return nil, fmt.Errorf("move %d cores to thing group %s: %w", len(cores), group, err)
		}
		for core, err := range errs {
			out[core] = "Failed to add core device to deployment thing group target: " + errText(err)
		}
		return out, nil
	}
	var mu sync.Mutex
	fail := func(core, msg string) {
		mu.Lock()
		out[core] = msg
		mu.Unlock()
	}
	err := eachCore(ctx, cores, func(core string) error {
		if err := s.leaveOtherGroups(ctx, core, group); err != nil {
			if errkind.Is(err, errkind.Unavailable) {
				return err
			}
			fail(core, "Failed removing from existing deployment thing groups: "+errText(err))
			return nil
		}
		if err := s.cfg.Provider.AddThingToGroup(ctx, core, group); err != nil {
			if errkind.Is(err, errkind.Unavailable) {
				return err
			}
			fail(core, "Failed to add core device to deployment thing group target: "+errText(err))
		}
		return nil
	})
	return out, err
}

// supersedeMany ends the items of other tasks that still wait on these
// cores (see supersede), with one query for their waits.
func (s *Service) supersedeMany(ctx context.Context, cores []string, current string) error {
	if len(cores) == 0 {
		return nil
	}
	waits, err := s.cfg.Store.WaitsForCores(ctx, cores)
	if err != nil {
		return err
	}
	for _, w := range waits {
		if w.TaskID == current {
			continue
		}
		msg := fmt.Sprintf("Superseded by deployment task %s before the core reported the outcome", current)
		if err := s.finish(ctx, Outcome{TaskID: w.TaskID, Core: w.Core, DeploymentID: w.DeploymentID,
			Status: cdf.StatusFailure, Message: msg, Now: s.now()}, nil); err != nil {
			return err
		}
	}
	return nil
}

// publishAll publishes one document to many cores, a few at a time.
func (s *Service) publishAll(ctx context.Context, cores []string, payload []byte) {
	_ = eachCore(ctx, cores, func(core string) error {
		s.publish(ctx, core, payload)
		return nil
	})
}

// eachCore runs fn for every core, batchConcurrency at a time, and returns
// the first error (the other calls still run to their end).
func eachCore(ctx context.Context, cores []string, fn func(core string) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, batchConcurrency)
	for _, core := range cores {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(core); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}
