package devices

import (
	"context"
	"encoding/json"

	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Create tasks are worked whole batch at a time (thingflow.Batch) when the
// stores can run a batch in one transaction (Config.Atomic, local mode): a
// device's key and certificate are made beforehand, in parallel, and its
// thing, certificate, policy, certs.zip and record are written with the
// other devices of its batch in one commit. AfterBatch then associates the
// batch's devices with the core, as it does for items worked one by one.

// WholeBatch reports whether t is worked whole-batch (tasks.BatchChooser):
// Create tasks, when the stores have transactions spanning them.
func (s *Service) WholeBatch(t tasks.Task) bool {
	return s.cfg.Atomic != nil && t.Type == cdf.TaskCreate
}

// ProcessBatch works the open items of a Create batch in one transaction
// (tasks.BatchProcessor).
func (s *Service) ProcessBatch(ctx context.Context, t tasks.Task, items []*tasks.Item, save func(context.Context, []*tasks.Item) error) error {
	b := thingflow.Batch[*provisioning.Planned]{
		Atomic:       s.cfg.Atomic,
		BatchContext: s.cfg.BatchReads,
		Prepare: func(ctx context.Context, it *tasks.Item) (*provisioning.Planned, bool) {
			var in cdf.NewDevice
			if json.Unmarshal(it.Input, &in) != nil {
				return nil, false
			}
			p, err := s.cfg.Provisioner.Prepare(ctx, thingflow.ToRequest(in.ProvisioningTemplate, in.ProvisioningParameters, in.CdfProvisioningParameters))
			// A failure is reported when the flow calls Prepare again.
			return p, err == nil && p != nil
		},
		Work: func(ctx context.Context, it *tasks.Item, plan *provisioning.Planned, emit thingflow.Emit) error {
			var in cdf.NewDevice
			var req taskRequest
			if !thingflow.DecodeItem(t, it, "device", &in, &req) {
				return nil
			}
			// Progress needs no saves of its own: the transaction saves
			// it with everything else.
			prog, saver, err := thingflow.ItemProgress(it, func(context.Context) error { return nil })
			if err != nil {
				return err
			}
			flow := &thingflow.Flow{Provider: s.cfg.Provider, Provisioner: thingflow.Prepared(s.cfg.Provisioner, plan), Now: s.cfg.Now}
			return s.create(ctx, flow, emit, t, in, it, &prog, saver)
		},
		Publish: func(ctx context.Context, events []thingflow.Event) {
			thingflow.PublishEvents(ctx, events, s.emit, s.cfg.EventsAll)
		},
	}
	return b.Run(ctx, items, save)
}
