package cores

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Create tasks, whole batch at a time.
//
// Worked one by one, each core of a Create task costs a dozen commits: the
// thing group, certs.zip, the thing, its certificate, principal and
// policy, the installer config, the core's artifact records, the item.
// When the store can run them in one transaction (Config.Atomic, local
// mode), a batch is worked in two steps instead:
//
//  1. the keys and certificates of the items that start now are made in
//     parallel, outside any transaction (Prepare has no side effects);
//  2. one transaction works every item with create, as ProcessItem would,
//     each under a savepoint: an item that fails leaves nothing behind, an
//     item that succeeds is committed with the others, and the items'
//     progress (still InProgress) is saved in the same transaction.
//
// Then the items' events are published and the runner saves them final. A
// crash before the commit leaves nothing: the batch runs again. A crash
// after it re-runs items whose saved progress says they are provisioned:
// create resumes them (artifacts recorded again, the event published once,
// events being keyed by item). When the transaction fails (a transient
// error of one core rolls back all of them), the runner works the batch's
// cores one by one instead (tasks.ErrItemByItem), so one core's trouble
// does not hold up the others.

// WholeBatch reports whether t is worked whole-batch (tasks.BatchChooser):
// Create tasks, when the store has transactions spanning stores.
func (s *Service) WholeBatch(t tasks.Task) bool {
	return s.cfg.Atomic != nil && t.Type == cdf.TaskCreate
}

// errItemFailed rolls an item's savepoint back when the item failed.
var errItemFailed = errors.New("item failed")

// ProcessBatch works the open items of a Create batch in one transaction
// (tasks.BatchProcessor).
func (s *Service) ProcessBatch(ctx context.Context, t tasks.Task, items []*tasks.Item, save func(context.Context, []*tasks.Item) error) error {
	ready := s.prepareAll(ctx, t, items)
	var events []pendingEvent
	err := s.cfg.Atomic(ctx, func(ctx context.Context) error {
		saved := make([]*tasks.Item, 0, len(items))
		for _, it := range items {
			before := it.Progress
			var evs []pendingEvent
			pi := ready[it.Name]
			run := createRun{
				flow:   &thingflow.Flow{Provider: s.cfg.Provider, Provisioner: prepared{Provisioner: s.cfg.Provisioner, plan: pi.plan}, Now: s.cfg.Now},
				config: pi.config,
				emit: func(_ context.Context, detailType string, detail any) {
					evs = append(evs, pendingEvent{detailType, detail})
				},
			}
			err := s.cfg.Atomic(ctx, func(ctx context.Context) error {
				if err := s.createItem(ctx, run, t, it); err != nil {
					return err
				}
				if it.Status == cdf.StatusFailure {
					return errItemFailed
				}
				return nil
			})
			switch {
			case errors.Is(err, errItemFailed):
				// Its writes are undone: keep the progress it started with.
				it.Progress = before
			case err != nil:
				return err // transient: nothing commits, the batch runs again
			}
			events = append(events, evs...)
			// The transaction runs on this goroutine from the first core
			// to the last without blocking; let a waiting API request
			// have the CPU between cores instead of after the scheduler's
			// 10 ms time slice.
			runtime.Gosched()
			cp := *it
			cp.Status, cp.StatusMessage = cdf.StatusInProgress, ""
			saved = append(saved, &cp)
		}
		return save(ctx, saved)
	})
	if err != nil {
		// Nothing committed, or a commit whose answer was lost: the
		// runner works the cores one by one from what is stored, so one
		// core's trouble does not fail the whole batch again.
		return fmt.Errorf("%w: %w", tasks.ErrItemByItem, err)
	}
	s.publish(ctx, events)
	return nil
}

// publish publishes events in order, each run of one type in one go when
// Config.EventsAll is set.
func (s *Service) publish(ctx context.Context, events []pendingEvent) {
	if s.cfg.EventsAll == nil {
		for _, e := range events {
			s.emit(ctx, e.detailType, e.detail)
		}
		return
	}
	for len(events) > 0 {
		n := 1
		for n < len(events) && events[n].detailType == events[0].detailType {
			n++
		}
		details := make([]any, n)
		for i, e := range events[:n] {
			details[i] = e.detail
		}
		s.cfg.EventsAll(ctx, events[0].detailType, details)
		events = events[n:]
	}
}

// pendingEvent is an event held until the transaction commits.
type pendingEvent struct {
	detailType string
	detail     any
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

// preparedItem is what prepareAll made for an item.
type preparedItem struct {
	plan   *provisioning.Planned
	config *generated
}

// prepareAll makes the keys, certificates and installer configs of the
// items that start now (no progress yet), in parallel, so that the batch's
// transaction (which holds SQLite's one writer) only writes. An item whose
// Prepare fails gets no plan: create calls Prepare again and reports the
// failure.
func (s *Service) prepareAll(ctx context.Context, t tasks.Task, items []*tasks.Item) map[string]preparedItem {
	ready := make(map[string]preparedItem, len(items))
	var req taskRequest
	_ = json.Unmarshal(t.Request, &req) // as DecodeItem reads it; a bad request fails there
	if s.cfg.BatchReads != nil {
		ctx = s.cfg.BatchReads(ctx)
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, runtime.GOMAXPROCS(0))
	)
	for _, it := range items {
		var in cdf.NewCore
		if len(it.Progress) > 0 && string(it.Progress) != "null" || json.Unmarshal(it.Input, &in) != nil {
			continue
		}
		preq := thingflow.ToRequest(in.ProvisioningTemplate, in.ProvisioningParameters, in.CdfProvisioningParameters)
		name := it.Name
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var pi preparedItem
			if p, err := s.cfg.Provisioner.Prepare(ctx, preq); err == nil {
				pi.plan = p
			}
			if in.ConfigFileGenerator != "" && s.cfg.ConfigGen != nil {
				pi.config = s.generate(req, in)
			}
			mu.Lock()
			ready[name] = pi
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ready
}

// prepared is a Provisioner whose Prepare returns the plan made beforehand
// (when there is one).
type prepared struct {
	thingflow.Provisioner
	plan *provisioning.Planned
}

func (p prepared) Prepare(ctx context.Context, req provisioning.Request) (*provisioning.Planned, error) {
	if p.plan != nil {
		return p.plan, nil
	}
	return p.Provisioner.Prepare(ctx, req)
}
