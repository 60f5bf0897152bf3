package cores

import (
	"context"
	"encoding/json"

	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Create tasks are worked whole batch at a time (thingflow.Batch) when the
// store can run a batch in one transaction (Config.Atomic, local mode): a
// core's key, certificate and installer config are made beforehand, in
// parallel, and its thing group, thing, certificate, policy, artifacts and
// records are written with the other cores of its batch in one commit.

// WholeBatch reports whether t is worked whole-batch (tasks.BatchChooser):
// Create tasks, when the store has transactions spanning stores.
func (s *Service) WholeBatch(t tasks.Task) bool {
	return s.cfg.Atomic != nil && t.Type == cdf.TaskCreate
}

// ProcessBatch works the open items of a Create batch in one transaction
// (tasks.BatchProcessor).
func (s *Service) ProcessBatch(ctx context.Context, t tasks.Task, items []*tasks.Item, save func(context.Context, []*tasks.Item) error) error {
	var req taskRequest
	_ = json.Unmarshal(t.Request, &req) // as DecodeItem reads it; a bad request fails there
	b := thingflow.Batch[preparedItem]{
		Atomic:       s.cfg.Atomic,
		BatchContext: s.cfg.BatchReads,
		Prepare: func(ctx context.Context, it *tasks.Item) (preparedItem, bool) {
			var in cdf.NewCore
			if json.Unmarshal(it.Input, &in) != nil {
				return preparedItem{}, false
			}
			var pi preparedItem
			preq := thingflow.ToRequest(in.ProvisioningTemplate, in.ProvisioningParameters, in.CdfProvisioningParameters)
			if p, err := s.cfg.Provisioner.Prepare(ctx, preq); err == nil {
				pi.plan = p // a failure is reported when create calls Prepare again
			}
			if in.ConfigFileGenerator != "" && s.cfg.ConfigGen != nil {
				pi.config = s.generate(req, in)
			}
			return pi, true
		},
		Work: func(ctx context.Context, it *tasks.Item, pi preparedItem, emit thingflow.Emit) error {
			run := createRun{
				flow:   &thingflow.Flow{Provider: s.cfg.Provider, Provisioner: thingflow.Prepared(s.cfg.Provisioner, pi.plan), Now: s.cfg.Now},
				config: pi.config,
				emit:   emit,
			}
			return s.createItem(ctx, run, t, it)
		},
		Publish: func(ctx context.Context, events []thingflow.Event) {
			thingflow.PublishEvents(ctx, events, s.emit, s.cfg.EventsAll)
		},
	}
	return b.Run(ctx, items, save)
}

// createItem is ProcessItem for a Create item inside the batch's
// transaction: its progress needs no saves of its own (the transaction
// saves it with everything else).
func (s *Service) createItem(ctx context.Context, run createRun, t tasks.Task, it *tasks.Item) error {
	var in cdf.NewCore
	var req taskRequest
	if !thingflow.DecodeItem(t, it, "core", &in, &req) {
		return nil
	}
	prog, saver, err := thingflow.ItemProgress(it, func(context.Context) error { return nil })
	if err != nil {
		return err
	}
	return s.create(ctx, run, t, req, in, it, &prog, saver)
}

// preparedItem is what a batch makes for a core beforehand.
type preparedItem struct {
	plan   *provisioning.Planned
	config *generated
}
