package thingflow

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Create tasks, whole batch at a time.
//
// Worked one by one, each thing of a Create task costs a dozen commits: its
// certs.zip, the thing, its certificate, principal and policy, the
// records of the task's kind, the item. When the stores can run them in
// one transaction (local mode), a batch is worked in two steps instead:
//
//  1. what each item that starts now needs and can be made without side
//     effects (its key and certificate; a core's installer config) is
//     made in parallel, outside any transaction;
//  2. one transaction works every item, and the items' progress (still
//     InProgress) is saved in the same transaction. An item that fails
//     must leave nothing behind, which takes a savepoint per item; but a
//     savepoint costs two more statements an item (SAVEPOINT, RELEASE:
//     round trips on PostgreSQL) and SQLite a statement journal, and
//     items seldom fail. So the transaction first works the items without
//     savepoints; the first item that fails ends it (rolled back, nothing
//     written), and the batch is worked again in a new transaction with
//     each item under a savepoint, where a failed item's writes are
//     undone and the others are committed.
//
// Then the items' events are published and the runner saves them final. A
// crash before the commit leaves nothing: the batch runs again. A crash
// after it re-runs items whose saved progress says they are provisioned:
// they resume (records written again, the event published once, events
// being keyed by item). When the transaction fails (a transient error of
// one item rolls back all of them), the runner works the batch's items one
// by one instead (tasks.ErrItemByItem), so one item's trouble does not hold
// up the others.

// Batch works the open items of a Create batch in one transaction, for the
// processors of core and client-device tasks (tasks.BatchProcessor). P is
// what Prepare makes for an item ahead of the transaction.
type Batch[P any] struct {
	// Atomic runs fn in one transaction; called within one, it runs fn
	// under a savepoint.
	Atomic func(ctx context.Context, fn func(ctx context.Context) error) error
	// BatchContext, when set, returns the context one batch is worked in,
	// its Prepare calls and its transaction, given the names of its items
	// (lookups remembered for the batch, or made for all its items at once).
	BatchContext func(ctx context.Context, names []string) context.Context
	// Prepare makes what an item that has not started needs, with no side
	// effects; calls run in parallel. ok false: nothing was made (Work
	// makes it, or reports why it cannot).
	Prepare func(ctx context.Context, it *tasks.Item) (p P, ok bool)
	// Work works one item inside the transaction with what Prepare made
	// (the zero P when nothing was), setting its Status as ProcessItem
	// would. Its events go to emit, which holds them until the commit. A
	// returned error is transient: nothing of the batch commits.
	Work func(ctx context.Context, it *tasks.Item, p P, emit Emit) error
	// Publish publishes the events of the committed items, in order.
	Publish func(ctx context.Context, events []Event)
}

// Emit is where an item worked in a batch sends an event.
type Emit func(ctx context.Context, detailType string, detail any)

// Event is an event held until its batch's transaction commits.
type Event struct {
	DetailType string
	Detail     any
}

// errItemFailed rolls an item's savepoint back when the item failed.
var errItemFailed = errors.New("item failed")

// errNeedsSavepoints ends a batch's first transaction, worked without
// savepoints, when an item failed: its writes cannot be undone on their
// own, so the whole transaction is rolled back and worked again with a
// savepoint per item.
var errNeedsSavepoints = errors.New("an item failed: the batch is worked again with a savepoint per item")

// Run works items (tasks.BatchProcessor.ProcessBatch).
func (b Batch[P]) Run(ctx context.Context, items []*tasks.Item, save func(context.Context, []*tasks.Item) error) error {
	if b.BatchContext != nil {
		names := make([]string, len(items))
		for i, it := range items {
			names[i] = it.Name
		}
		ctx = b.BatchContext(ctx, names)
	}
	ready := b.prepareAll(ctx, items)
	start := make([]tasks.Item, len(items))
	for i, it := range items {
		start[i] = *it
	}
	events, err := b.transaction(ctx, items, ready, save, false)
	if errors.Is(err, errNeedsSavepoints) {
		// Nothing was written: work every item again from where it started.
		for i, it := range items {
			*it = start[i]
		}
		events, err = b.transaction(ctx, items, ready, save, true)
	}
	if err != nil {
		// Nothing committed, or a commit whose answer was lost: the
		// runner works the items one by one from what is stored, so one
		// item's trouble does not fail the whole batch again.
		return fmt.Errorf("%w: %w", tasks.ErrItemByItem, err)
	}
	b.Publish(ctx, events)
	return nil
}

// transaction works items in one transaction and saves their progress in
// it, and returns the events to publish once it has committed. Without
// savepoints, the first item that fails ends it with errNeedsSavepoints;
// with them, a failed item's writes are undone and the others go on.
func (b Batch[P]) transaction(ctx context.Context, items []*tasks.Item, ready map[string]P, save func(context.Context, []*tasks.Item) error, savepoints bool) ([]Event, error) {
	var events []Event
	err := b.Atomic(ctx, func(ctx context.Context) error {
		saved := make([]*tasks.Item, 0, len(items))
		for _, it := range items {
			before := it.Progress
			var evs []Event
			emit := func(_ context.Context, detailType string, detail any) {
				evs = append(evs, Event{detailType, detail})
			}
			work := func(ctx context.Context) error {
				if err := b.Work(ctx, it, ready[it.Name], emit); err != nil {
					return err
				}
				if it.Status == cdf.StatusFailure {
					return errItemFailed
				}
				return nil
			}
			var err error
			if savepoints {
				err = b.Atomic(ctx, work)
			} else {
				err = work(ctx)
			}
			switch {
			case errors.Is(err, errItemFailed) && !savepoints:
				return errNeedsSavepoints
			case errors.Is(err, errItemFailed):
				// Its writes are undone: keep the progress it started with.
				it.Progress = before
			case err != nil:
				return err // transient: nothing commits, the batch runs again
			}
			events = append(events, evs...)
			// The transaction runs on this goroutine from the first item
			// to the last without blocking; let a waiting API request
			// have the CPU between items instead of after the scheduler's
			// 10 ms time slice.
			runtime.Gosched()
			cp := *it
			cp.Status, cp.StatusMessage = cdf.StatusInProgress, ""
			saved = append(saved, &cp)
		}
		return save(ctx, saved)
	})
	return events, err
}

// prepareAll runs Prepare for the items that start now (no progress yet),
// in parallel, so that the batch's transaction (which holds SQLite's one
// writer) only writes.
func (b Batch[P]) prepareAll(ctx context.Context, items []*tasks.Item) map[string]P {
	ready := make(map[string]P, len(items))
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, runtime.GOMAXPROCS(0))
	)
	for _, it := range items {
		if len(it.Progress) > 0 && string(it.Progress) != "null" {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p, ok := b.Prepare(ctx, it)
			if !ok {
				return
			}
			mu.Lock()
			ready[it.Name] = p
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ready
}

// PublishEvents publishes events in order: each run of one type in one
// call of all when it is set, else one by one with one.
func PublishEvents(ctx context.Context, events []Event, one Emit, all func(ctx context.Context, detailType string, details []any)) {
	if all == nil {
		if one != nil {
			for _, e := range events {
				one(ctx, e.DetailType, e.Detail)
			}
		}
		return
	}
	for len(events) > 0 {
		n := 1
		for n < len(events) && events[n].DetailType == events[0].DetailType {
			n++
		}
		details := make([]any, n)
		for i, e := range events[:n] {
			details[i] = e.Detail
		}
		all(ctx, events[0].DetailType, details)
		events = events[n:]
	}
}

// Prepared returns a Provisioner whose Prepare returns plan when it is not
// nil (made beforehand, for a batch) and asks p otherwise.
func Prepared(p Provisioner, plan *provisioning.Planned) Provisioner {
	return prepared{Provisioner: p, plan: plan}
}

type prepared struct {
	Provisioner
	plan *provisioning.Planned
}

func (p prepared) Prepare(ctx context.Context, req provisioning.Request) (*provisioning.Planned, error) {
	if p.plan != nil {
		return p.plan, nil
	}
	return p.Provisioner.Prepare(ctx, req)
}
